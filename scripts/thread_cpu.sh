#!/bin/sh
# thread_cpu.sh: CPU use of each thread of a process over an interval, to
# see which thread limits a run (Linux /proc). Prints one line per thread:
# tid, name, % of one core.
#
#   scripts/thread_cpu.sh PID [SECONDS]
set -eu
pid=$1
secs=${2:-2}
hz=$(getconf CLK_TCK)
snap() {
	for t in /proc/"$pid"/task/*; do
		# utime and stime are fields 14 and 15, after the ")" of comm.
		printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm")" \
		    "$(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')"
	done
}
echo "-- pid $pid ($(cat /proc/"$pid"/comm 2>/dev/null))"
a=$(snap)
sleep "$secs"
b=$(snap)
echo "$a" > /tmp/thread_cpu.$$.a
echo "$b" | while read -r tid name ticks; do
	old=$(awk -v t="$tid" '$1 == t { print $NF }' /tmp/thread_cpu.$$.a)
	[ -n "$old" ] || old=$ticks
	awk -v tid="$tid" -v n="$name" -v d=$((ticks - old)) -v hz="$hz" \
	    -v s="$secs" 'BEGIN { printf "%8s %-16s %5.1f%%\n", tid, n,
	    100 * d / hz / s }'
done
rm -f /tmp/thread_cpu.$$.a
