#!/bin/sh
# vessel bench workload: runs each workload named in the arguments ("NAME
# ARG", or "smp NAME ARG NAME ARG" for two at once), timing each with the
# clock of the machine it runs on. Prints, per workload:
#   VESSEL-WL-BEGIN NAME        (just before the timed part)
#   VESSEL-WL-END NAME          (just after it)
#   VESSEL-WL NAME STATUS START END DIGEST
# START and END are the machine's /proc/uptime (read by the shell itself,
# so no process start is timed; 10 ms resolution); DIGEST is the first 16
# hex digits of the SHA-256 of the program's output (machines must agree),
# or - when the output is not deterministic (iperf3).
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
D=/bench/data
HOST=${VESSEL_WL_HOST:-10.77.0.1}

# now VAR: VAR = seconds since boot.
now() { read -r "$1" _ < /proc/uptime; }

# input MIB: $T/in holds MIB MiB of the corpus, repeated as needed.
input() {
    c=$(( ($1 + 31) / 32 ))
    for i in $(seq "$c"); do cat "$D/corpus"; done | head -c "$(( $1 * 1048576 ))" > "$T/in"
}

# prepare NAME ARG: the untimed set-up; sets CMD, the timed command.
prepare() {
    case "$1" in
        py-int) CMD="python3 /bench/py_int.py $2" ;;
        py-float) CMD="python3 /bench/py_float.py $2" ;;
        py-str) CMD="python3 /bench/py_str.py $2" ;;
        py-call) CMD="python3 /bench/py_call.py $2" ;;
        gzip) input "$2"; CMD="gzip -9 -n -c $T/in" ;;
        xz) input "$2"; CMD="xz -6 -T1 -c $T/in" ;;
        sha256) input "$2"; CMD="sha256sum $T/in" ;;
        sort) head -n "$2" "$D/lines" > "$T/in"; CMD="sort --parallel=1 $T/in" ;;
        sqlite) sed "s/@ROWS@/$2/g; s/@QUERIES@/$(( $2 / 4 ))/g" /bench/sqlite.sql > "$T/q.sql"
                CMD=sqlite_run ;;
        tcc) CMD="tcc_many $2" ;;
        iperf-g2h) CMD="iperf3 -c $HOST -n $2M" ;;
        iperf-h2g) CMD="iperf3 -R -c $HOST -n $2M" ;;
        *) echo "unknown workload $1" >&2; return 1 ;;
    esac
}

# tcc_many N: compiles and links prog.c N times, then runs the program.
tcc_many() {
    i=0
    while [ "$i" -lt "$1" ]; do
        tcc -O2 -o "$T/prog" "$D/prog.c" || return 1
        i=$((i + 1))
    done
    "$T/prog"
}

# sqlite_run: the statements of q.sql on a new database file.
sqlite_run() { sqlite3 "$T/db" ".read $T/q.sql"; }

digest() {
    case "$1" in
        iperf-*) echo - ;;
        *) sha256sum "$T/out" | cut -c1-16 ;;
    esac
}

# one NAME ARG TAG: prepares in its own directory, runs the timed command.
one() {
    T=/tmp/wl-$3
    rm -rf "$T"; mkdir -p "$T"
    if ! prepare "$1" "$2"; then
        echo "VESSEL-WL $1 126 0 0 -"
        return
    fi
    echo "VESSEL-WL-BEGIN $1"
    now t0
    $CMD > "$T/out" 2> "$T/err"
    s=$?
    now t1
    echo "VESSEL-WL-END $1"
    echo "VESSEL-WL $1 $s $t0 $t1 $(digest "$1")"
    [ "$s" = 0 ] || tail -n 3 "$T/err"
    rm -rf "$T"
}

for w in "$@"; do
    set -- $w
    if [ "$1" = smp ]; then
        # Two at once: the pair's time is from both starts to both ends.
        echo "VESSEL-WL-BEGIN smp"
        now t0
        one "$2" "$3" a > /tmp/wl-smp-a.log &
        one "$4" "$5" b > /tmp/wl-smp-b.log &
        wait
        now t1
        echo "VESSEL-WL-END smp"
        st=0
        for l in a b; do
            sed 's/^VESSEL-WL /VESSEL-WL-PART /; s/^VESSEL-WL-BEGIN /VESSEL-WL-PART-BEGIN /; s/^VESSEL-WL-END /VESSEL-WL-PART-END /' /tmp/wl-smp-$l.log
            grep -q "^VESSEL-WL [^ ]* 0 " /tmp/wl-smp-$l.log || st=1
        done
        echo "VESSEL-WL smp $st $t0 $t1 -"
    else
        one "$1" "$2" x
    fi
done
echo "VESSEL-WL-DONE"
