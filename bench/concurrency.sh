#!/usr/bin/env bash
# CPU per request of meshwire at --concurrency 1 and 2: does the supervisor and N workers cost
# more CPU per request than one process? One table per run.
#
# Usage: bash bench/concurrency.sh [seconds-per-test] [repeats]   (default 10 s, 3 repeats)
# Rows, interleaved in each repeat: N=1 pinned to CPU 1 (as bench/run.sh measures it), N=1 and
# N=2 unpinned (workers, the backend and the generators share both cores). Each row measures
# three times, HTTP/1.1 keep-alive, meshwire to one nginx worker (keep-alive): wrk -t1 -c16
# (closed loop: the most it serves, spread over the workers), hey at a fixed 500 req/s (the same
# load whatever N), and wrk -t1 -c1 (one connection: one busy worker, the others idle, so any
# cost of being a worker shows apart from that of several busy processes sharing the cores).
# CPU = user+sys of every process in meshwire's session (the supervisor and its workers) from
# /proc, divided by the requests completed. The ports are not bench/run.sh's, so both can run.
set -uo pipefail

D=${1:-10}
REPEATS=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BACKEND=18188
LISTEN=19188
ADMIN=19189
BODY="hello from backend"
W=$(mktemp -d -t meshwire-concurrency.XXXXXX)
PIDS=()
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[concurrency] %s\n' "$*" >&2; }

stop() {
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
cleanup() { local pid; for pid in "${PIDS[@]}"; do stop "$pid"; done; rm -rf "$W"; }
trap cleanup EXIT

admin_ready() {   # admin_ready PID: until the admin port says every worker serves (/ready 200)
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        kill -0 "$1" 2>/dev/null || return 1
        [[ $(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/ready") == 200 ]] && return 0
        sleep 0.2
    done
    return 1
}

ready() {   # ready PID PORT: until it answers 200 with the backend's body (60 s at most)
    local deadline=$((SECONDS + 60)) out
    while ((SECONDS < deadline)); do
        kill -0 "$1" 2>/dev/null || return 1
        out=$(curl -s -m 1 -w ' %{http_code}' "http://127.0.0.1:$2/" 2>/dev/null)
        [[ $out == "$BODY"*" 200" ]] && return 0
        sleep 0.2
    done
    return 1
}

ticks() {   # ticks SID: utime+stime of every process in session SID
    local total=0 f line f_
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        read -ra f_ <<<"${line##*) }"
        [[ ${f_[3]} == "$1" ]] && total=$((total + f_[11] + f_[12]))
    done
    echo "$total"
}

own() {   # own PID: utime+stime of that process alone (the supervisor, at N > 1)
    local line f_
    read -r line <"/proc/$1/stat"
    read -ra f_ <<<"${line##*) }"
    echo $((f_[11] + f_[12]))
}

cat >"$W/backend.conf" <<CONF
worker_processes 1; daemon off; pid $W/backend.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "$BODY\n"; } } }
CONF
setsid nginx -e "$W/backend.err" -p "$W" -c "$W/backend.conf" >"$W/backend.log" 2>&1 </dev/null &
PIDS+=($!)
ready "${PIDS[0]}" "$BACKEND" || { echo "backend did not start" >&2; exit 1; }

per_request() {   # per_request TICKS REQUESTS -> CPU microseconds per request
    awk -v t="$1" -v hz="$CLK_TCK" -v n="${2:-0}" \
        'BEGIN {if (n > 0) printf "%.0f", t / hz / n * 1e6; else print "-"}'
}

echo "load    : $(cat /proc/loadavg)  (the box is shared: compare rows of one run)"
printf '%-12s %6s %9s %10s %13s %7s %10s %10s  %s\n' row repeat "wrk req/s" "CPU us/req" \
    "supervisor ms" "@500/s" "CPU us/req" "1 conn" "requests per worker"
for ((r = 1; r <= REPEATS; r++)); do
    for row in "N=1 pinned|taskset -c 1|1" "N=1|env|1" "N=2|env|2"; do
        IFS='|' read -r name pin workers <<<"$row"
        setsid $pin "$ROOT/.venv/bin/meshwire" run --listen "127.0.0.1:$LISTEN" \
            --upstream "http://127.0.0.1:$BACKEND" --admin "127.0.0.1:$ADMIN" \
            --concurrency "$workers" --log-level warning >"$W/mw.log" 2>&1 </dev/null &
        pid=$!
        PIDS+=("$pid")
        if ! admin_ready "$pid" || ! ready "$pid" "$LISTEN"; then
            echo "$name: meshwire did not start:" >&2
            tail -5 "$W/mw.log" >&2
            exit 1
        fi
        t0=$(ticks "$pid") s0=$(own "$pid")
        wrk -t1 -c16 -d"${D}s" "http://127.0.0.1:$LISTEN/" >"$W/wrk.txt" 2>&1
        t1=$(ticks "$pid") s1=$(own "$pid")
        closed=$((t1 - t0))
        rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$W/wrk.txt")
        reqs=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
        spread=""
        if ((workers > 1)); then
            for ((i = 0; i < workers; i++)); do
                spread+=$(curl -s "http://127.0.0.1:$ADMIN/stats?filter=ingress.downstream_rq_total&worker=$i" | awk '{print $2}')"/"
            done
        fi  # after the closed loop: how the kernel spread its 16 connections
        t1=$(ticks "$pid")  # (the scrapes above are nobody's requests)
        hey -z "${D}s" -c 10 -q 50 "http://127.0.0.1:$LISTEN/" >"$W/hey.txt" 2>&1
        t2=$(ticks "$pid")
        wrk -t1 -c1 -d"${D}s" "http://127.0.0.1:$LISTEN/" >"$W/wrk1.txt" 2>&1
        t3=$(ticks "$pid")
        single=$(awk '/requests in/ {print $1}' "$W/wrk1.txt")
        fixed=$(awk '/^Status code distribution:/ {s = 1; next} /^[^ ]/ {s = 0} s && /responses/ {n += $2} END {print n + 0}' "$W/hey.txt")
        rate=$(awk '$1 == "Requests/sec:" {printf "%.0f", $2}' "$W/hey.txt")
        sup="-"
        ((workers > 1)) && sup=$(((s1 - s0) * 1000 / CLK_TCK))
        printf '%-12s %6s %9s %10s %13s %7s %10s %10s  %s\n' "$name" "$r" "${rps:--}" \
            "$(per_request "$closed" "$reqs")" "$sup" "${rate:--}" \
            "$(per_request $((t2 - t1)) "$fixed")" "$(per_request $((t3 - t2)) "$single")" "$spread"
        stop "$pid"
    done
done
