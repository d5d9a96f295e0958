#!/bin/sh
# mps.sh: starts or stops an NVIDIA MPS control daemon for the GPU
# comparison (issue 4). Its pipe and log directories live under
# $AGXQ_MPS_DIR (default /tmp/agxq-mps); clients must see the same
# CUDA_MPS_PIPE_DIRECTORY, so `start` prints the line to export.
#
#   scripts/mps.sh start    # then: export CUDA_MPS_PIPE_DIRECTORY=...
#   scripts/mps.sh stop
#   scripts/mps.sh status
set -eu

dir=${AGXQ_MPS_DIR:-/tmp/agxq-mps}
CUDA_MPS_PIPE_DIRECTORY=$dir/pipe
CUDA_MPS_LOG_DIRECTORY=$dir/log
export CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY

if ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
	echo "mps.sh: nvidia-cuda-mps-control not found" >&2
	exit 1
fi

case ${1:-} in
start)
	mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
	nvidia-cuda-mps-control -d
	# The control daemon starts the server on the first client; wait
	# until its pipe exists.
	i=0
	while [ ! -p "$CUDA_MPS_PIPE_DIRECTORY/control" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	echo "export CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY"
	echo "export CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY"
	;;
stop)
	echo quit | nvidia-cuda-mps-control
	i=0
	while pgrep -x nvidia-cuda-mps-control >/dev/null 2>&1 && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	echo "mps.sh: stopped"
	;;
status)
	echo get_server_list | nvidia-cuda-mps-control
	;;
*)
	echo "usage: mps.sh start|stop|status" >&2
	exit 2
	;;
esac
