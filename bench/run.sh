#!/usr/bin/env bash
# meshwire benchmark harness: one run, one table.
#
# Rows: direct (the nginx backend alone = the ceiling), nginx and haproxy as reverse proxies
# (the references), meshwire (tracing at 1 %, metrics on), the naive trio proxies (the yardsticks),
# plus optional extra rows. Columns: closed-loop HTTP/1.1 req/s (wrk), closed-loop h2c req/s
# (h2load, prior knowledge), p50/p99 at 500 req/s in bursts (hey) and evenly spaced (wrk +
# bench/paced.lua), throughput ratios to nginx, and idle/peak RSS. The last lines are the issue's
# targets for the Envoy mode: `TARGET name: value vs goal PASS|FAIL` (bench/summary.py collects).
# Method: /work/shared/reference/envoy.md §5 — on a 2-core box the proxy under test is pinned to
# CPU 1 and backend + load generators to CPU 0, so every proxy gets exactly one core.
#
# Usage: bash bench/run.sh [seconds-per-test]        (default 5; `make bench` runs this)
# Env:
#   MESHWIRE_CMD    command that starts meshwire (run via `bash -c "exec $MESHWIRE_CMD"`);
#                   it must listen on 127.0.0.1:19010 for HTTP/1.1 and prior-knowledge h2c and
#                   proxy to http://127.0.0.1:18080 (both + BENCH_PORT_OFFSET). Default:
#                   `meshwire run -c meshwire.yaml`: quick mode's listener and cluster, plus the
#                   tracing filter at 1 % exporting to a Zipkin sink on :18082 (the backend nginx
#                   answering 202) and the admin listener (metrics) on :19901.
#   MESHWIRE_EXTRA  extra rows, "name|cmd|port", several separated by newlines or ";;",
#                   e.g. MESHWIRE_EXTRA="mw-quick|.venv/bin/meshwire run --listen 127.0.0.1:19030 --upstream http://127.0.0.1:18080 --admin 127.0.0.1:19902|19030"
#                   (h1 and h2c measured on that port; RSS reported like meshwire).
#   READY_TIMEOUT   seconds to wait for a server to answer (default 20).
#   BENCH_PORT_OFFSET  added to every port below (default 0), to run beside another engineer's
#                   bench on a shared machine (every bench/ script honours it).
#   KEEP_WORKDIR=1  keep the work dir (configs, server logs, raw tool output) for inspection.
set -uo pipefail

D=${1:-5}
if ! [[ $D =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [seconds-per-test]   (positive integer, got '$D')" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MESHWIRE_EXTRA=${MESHWIRE_EXTRA:-}
READY_TIMEOUT=${READY_TIMEOUT:-20}

OFF=${BENCH_PORT_OFFSET:-0}
if ! [[ $OFF =~ ^[0-9]+$ ]] || ((OFF > 40000)); then
    echo "BENCH_PORT_OFFSET must be an integer from 0 to 40000, got '$OFF'" >&2
    exit 2
fi
BACKEND_H1=$((18080 + OFF))    # backend h1, the upstream of every proxy
BACKEND_H2=$((18081 + OFF))    # backend h2c, used only by the `direct` row's h2c column
ZIPKIN_SINK=$((18082 + OFF))   # the backend nginx answering 202: where meshwire's 1 % of spans go
NGINX_H1=$((19001 + OFF)) NGINX_H2=$((19002 + OFF)) HAPROXY_H1=$((19003 + OFF)) HAPROXY_H2=$((19013 + OFF))
MESHWIRE=$((19010 + OFF)) MESHWIRE_ADMIN=$((19901 + OFF)) NAIVE_H11=$((19020 + OFF)) NAIVE_HTTPTOOLS=$((19021 + OFF))
BODY="hello from backend"
HEY_C=10 HEY_Q=50   # hey's -q is per worker: 10 x 50 = 500 req/s in total, in bursts of 10
RATE=$((HEY_C * HEY_Q))
PACED_C=4           # connections sharing paced.lua's one schedule of $RATE req/s
# The issue's targets for meshwire (Envoy mode), judged on this run's figures.
GOAL_VS_NAIVE=0.5 GOAL_H1_VS_NGINX=0.15 GOAL_H2_VS_NGINX=0.10 GOAL_P50_OVER_NGINX_MS=1.0

W=$(mktemp -d -t meshwire-bench.XXXXXX)
MESHWIRE_CMD=${MESHWIRE_CMD:-"$ROOT/.venv/bin/meshwire run -c $W/meshwire.yaml"}
SERVER_PIDS=()      # session leaders of every server we started (each runs under its own setsid)

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Process management. Every server runs in its own session (setsid) so that stopping it kills
# its whole tree (nginx workers, a wrapper's children) and Ctrl-C on the terminal reaches only
# the script and the load generators; the EXIT trap then stops the servers.
# ---------------------------------------------------------------------------------------------
stop_server() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do           # up to 5 s for a graceful exit
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# start_server NAME ROLE CMD... ; ROLE is "proxy" (CPU 1) or "load" (CPU 0). Sets STARTED_PID.
# taskset, setsid and `bash -c exec` all exec in place, so $! is the server's own pid.
start_server() {
    local name=$1 role=$2
    shift 2
    local pin=("${PIN_LOAD[@]}")
    [[ $role == proxy ]] && pin=("${PIN_PROXY[@]}")
    "${pin[@]}" setsid "$@" >"$W/$name.log" 2>&1 </dev/null &
    STARTED_PID=$!
    SERVER_PIDS+=("$STARTED_PID")
}

# port_free PORT: true if nothing accepts connections there (curl exit 7 = connection refused).
# A busy port means someone else's server; measuring it would silently report the wrong thing.
port_free() {
    local rc=0
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$1/" || rc=$?
    ((rc == 7))
}

# wait_ready PID PORT: poll (no blind sleep) until the server answers 200 with the backend's
# body, which also proves a proxy really reaches the backend. Fails early if the process dies.
wait_ready() {
    local pid=$1 port=$2 deadline=$((SECONDS + READY_TIMEOUT)) out
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        out=$(curl -s -m 1 -w ' %{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)
        [[ $out == "$BODY"*" 200" ]] && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Measurements of a session (a server and all its children) via /proc.
# ---------------------------------------------------------------------------------------------
# cpu_ticks SID: utime+stime (clock ticks) summed over all processes of session SID.
cpu_ticks() {
    local sid=$1 total=0 f line f_
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        read -ra f_ <<<"${line##*) }"   # fields after "pid (comm) ": state ppid pgrp session ...
        [[ ${f_[3]} == "$sid" ]] && total=$((total + f_[11] + f_[12]))
    done
    echo "$total"
}

# mem_mb SID FIELD: sum of FIELD (VmRSS / VmHWM, kB) over the session's processes, in MB.
mem_mb() {
    local sid=$1 field=$2 kb=0 found=0 f line f_ v
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        read -ra f_ <<<"${line##*) }"
        [[ ${f_[3]} == "$sid" ]] || continue
        v=$(awk -v k="$field:" '$1 == k {print $2}' "${f%/stat}/status" 2>/dev/null)
        kb=$((kb + ${v:-0})) found=1
    done
    if ((found)); then awk -v kb="$kb" 'BEGIN {printf "%.1f", kb / 1024}'; else echo "-"; fi
}

# core0_busy: "busy total" jiffies of CPU 0 (generators + backend when pinned), from /proc/stat.
core0_busy() { awk '$1 == "cpu0" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
core0_pct() {   # core0_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1" -> % busy of CPU 0 between the snapshots
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0}'
}

cpu_pct() {   # cpu_pct TICKS_BEFORE TICKS_AFTER -> % of one core over D seconds
    awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" -v d="$D" 'BEGIN {printf "%.0f", (b - a) / hz / d * 100}'
}

# ---------------------------------------------------------------------------------------------
# Load generators. Each sets R_<column> globals and appends to the target's footnote.
# All generators run pinned to CPU 0 (with the backend), never concurrently.
# ---------------------------------------------------------------------------------------------
# HTTP/1.1 max throughput, closed loop.
measure_h1() {
    local name=$1 port=$2 sid=$3 out="$W/$name.wrk.txt" t0 t1 c0 c1 rps reqs non2xx sockerr
    log "$name: wrk -t1 -c16 -d${D}s (HTTP/1.1) on :$port"
    t0=$(cpu_ticks "$sid") c0=$(core0_busy)
    "${PIN_LOAD[@]}" wrk -t1 -c16 -d"${D}s" "http://127.0.0.1:$port/" >"$out" 2>&1
    t1=$(cpu_ticks "$sid") c1=$(core0_busy)
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
    R_H1=${rps:-0}
    R_H1_BAD=$((${non2xx:-0} + ${sockerr:-0}))
    [[ -z $rps ]] && R_H1_BAD=1
    NOTE+="wrk ${reqs:-?} req, ${non2xx:-0} non-2xx, ${sockerr:-0} socket errors, cpu $(cpu_pct "$t0" "$t1")%/$(core0_pct "$c0" "$c1")%; "
}

# h2c (prior knowledge: h2load's default for http:// URLs) max throughput, closed loop.
measure_h2() {
    local name=$1 port=$2 sid=$3 out="$W/$name.h2load.txt" t0 t1 c0 c1 rps done_ bad non2xx
    log "$name: h2load -c4 -m16 -D $D (h2c) on :$port"
    t0=$(cpu_ticks "$sid") c0=$(core0_busy)
    "${PIN_LOAD[@]}" h2load -c4 -m16 -D "$D" "http://127.0.0.1:$port/" >"$out" 2>&1
    t1=$(cpu_ticks "$sid") c1=$(core0_busy)
    rps=$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($i ~ /^req\/s/) printf "%.0f", $(i - 1)}' "$out")
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    done_=$(awk '/^requests:/ {print $6}' "$out")
    bad=$(awk '/^requests:/ {print $10 + $12 + $14}' "$out")
    non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$out")
    R_H2=${rps:-0}
    R_H2_BAD=$((${bad:-0} + ${non2xx:-0}))
    [[ -z $rps || ${done_:-0} == 0 ]] && R_H2_BAD=$((R_H2_BAD + 1))
    NOTE+="h2load ${done_:-0} done, ${bad:-?} failed+errored+timeout, ${non2xx:-?} non-2xx, cpu $(cpu_pct "$t0" "$t1")%/$(core0_pct "$c0" "$c1")%; "
}

# Latency at a fixed 500 req/s over HTTP/1.1, far below every target's max, so the queue is
# empty and the figure is the added per-request latency. hey reports 0.1 ms resolution.
measure_lat() {
    local name=$1 port=$2 out="$W/$name.hey.txt" p50 p99 rps total non200 errs
    log "$name: hey -z ${D}s -c $HEY_C -q $HEY_Q (${RATE} req/s, HTTP/1.1) on :$port"
    "${PIN_LOAD[@]}" hey -z "${D}s" -c "$HEY_C" -q "$HEY_Q" "http://127.0.0.1:$port/" >"$out" 2>&1
    p50=$(awk '$1 == "50%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$out")
    p99=$(awk '$1 == "99%" && $2 == "in" {printf "%.2f", $3 * 1000}' "$out")
    rps=$(awk '$1 == "Requests/sec:" {printf "%.1f", $2}' "$out")
    # "Status code distribution:\n  [200] N responses"; "Error distribution:\n  [N] message"
    total=$(awk '/^Status code distribution:/ {s = 1; next} /^[^ ]/ {s = 0} s && /responses/ {n += $2} END {print n + 0}' "$out")
    non200=$(awk '/^Status code distribution:/ {s = 1; next} /^[^ ]/ {s = 0} s && /responses/ && $1 != "[200]" {n += $2} END {print n + 0}' "$out")
    errs=$(awk '/^Error distribution:/ {s = 1; next} /^[^ ]/ {s = 0} s && /^ *\[[0-9]+\]/ {gsub(/[][]/, "", $1); n += $1} END {print n + 0}' "$out")
    R_P50=${p50:--} R_P99=${p99:--}
    R_LAT_BAD=$((non200 + errs))
    # A rate well short of the target means the closed-loop tool throttled itself: flag it.
    if [[ -z $rps ]] || awk -v r="$rps" -v t="$RATE" 'BEGIN {exit !(r < 0.95 * t)}'; then
        R_LAT_BAD=$((R_LAT_BAD + 1))
        NOTE+="hey ${total} req at ${rps:-?} req/s (BELOW target ${RATE}), ${non200} non-200, ${errs} errors"
    else
        NOTE+="hey ${total} req at ${rps} req/s, ${non200} non-200, ${errs} errors"
    fi
}

# paced_field KEY LINE: the value of KEY=value in paced.lua's summary line.
paced_field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${2#paced: }"; }

# Latency at the same 500 req/s with evenly spaced arrivals: wrk + bench/paced.lua, $PACED_C
# connections booking slots of one schedule (2 ms apart, each send within ~1 ms after its slot).
# wrk times each request from its write to the end of its response, in microseconds.
measure_paced() {
    local name=$1 port=$2 out="$W/$name.paced.txt" line p50 p99 rps late non2xx errs reqs
    log "$name: wrk -t1 -c$PACED_C -d${D}s -s paced.lua -- $RATE (evenly spaced, HTTP/1.1) on :$port"
    "${PIN_LOAD[@]}" wrk -t1 -c"$PACED_C" -d"${D}s" -s "$ROOT/bench/paced.lua" "http://127.0.0.1:$port/" -- "$RATE" >"$out" 2>&1
    line=$(grep '^paced: ' "$out")
    # "paced: requests=N sent=N duration_us=N rate=R p50_us=N p90_us=N p99_us=N max_us=N late=N ..."
    reqs=$(paced_field requests "$line") rps=$(paced_field rate "$line")
    late=$(paced_field late "$line") non2xx=$(paced_field non2xx "$line")
    errs=$(paced_field errors "$line")
    p50=$(paced_field p50_us "$line") p99=$(paced_field p99_us "$line")
    R_PP50=- R_PP99=-
    [[ -n $p50 ]] && R_PP50=$(awk -v u="$p50" 'BEGIN {printf "%.2f", u / 1000}')
    [[ -n $p99 ]] && R_PP99=$(awk -v u="$p99" 'BEGIN {printf "%.2f", u / 1000}')
    R_PACED_BAD=$((${non2xx:-0} + ${errs:-0}))
    NOTE+="; paced ${reqs:-?} req at ${rps:-?} req/s, ${non2xx:-?} non-2xx, ${errs:-?} errors, ${late:-?} late, gaps $(paced_field gap_p1_us "$line")-$(paced_field gap_p99_us "$line") us (p1-p99)"
    # Short of the rate, or sends more than 1 ms behind their slot (every connection was busy):
    # then the figure includes queueing.
    if [[ -z $line ]] || awk -v r="${rps:-0}" -v t="$RATE" -v l="${late:-0}" -v n="${reqs:-0}" \
        'BEGIN {exit !(r < 0.95 * t || l > 0.01 * n)}'; then
        R_PACED_BAD=$((R_PACED_BAD + 1))
        NOTE+=" (RATE NOT HELD)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Results: one line per row in $W/rows
# (name|h1|h2|burst p50|burst p99|paced p50|paced p99|idle|peak|bad-flags) and footnotes.
# ---------------------------------------------------------------------------------------------
record_row() { printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$@" >>"$W/rows"; }
record_note() { printf '  [%s] %s\n' "$1" "$2" >>"$W/notes"; }

# alive PID TEST: true if the server still runs; else note (once) during which test it died.
alive() {
    kill -0 "$1" 2>/dev/null && return 0
    [[ $NOTE == *"DIED"* ]] || NOTE+="; SERVER DIED during or before the $2 test (see its log)"
    return 1
}

# bench_target NAME H1PORT H2PORT PID WANT_RSS: measure a running server, record its row.
bench_target() {
    local name=$1 h1port=$2 h2port=$3 pid=$4 want_rss=$5 idle=- peak=- flags=""
    NOTE=""
    [[ $want_rss == yes ]] && idle=$(mem_mb "$pid" VmRSS)
    # After each test: a server that died invalidates that test's figure (and all later ones).
    measure_h1 "$name" "$h1port" "$pid"
    { ((R_H1_BAD > 0)) || ! alive "$pid" "wrk"; } && flags+=h1,
    if [[ $h2port == - ]]; then   # an HTTP/1-only target (the naive reference proxy)
        R_H2=-
    else
        measure_h2 "$name" "$h2port" "$pid"
        { ((R_H2_BAD > 0)) || ! alive "$pid" "h2load"; } && flags+=h2,
    fi
    measure_lat "$name" "$h1port"
    { ((R_LAT_BAD > 0)) || ! alive "$pid" "hey"; } && flags+=lat,
    measure_paced "$name" "$h1port"
    { ((R_PACED_BAD > 0)) || ! alive "$pid" "paced wrk"; } && flags+=paced,
    [[ $want_rss == yes ]] && peak=$(mem_mb "$pid" VmHWM)   # high-water mark, after all load
    record_row "$name" "$R_H1" "$R_H2" "$R_P50" "$R_P99" "$R_PP50" "$R_PP99" "$idle" "$peak" "$flags"
    record_note "$name" "$NOTE"
}

# run_proxy NAME H1PORT H2PORT WANT_RSS CMD...: start a proxy on CPU 1, wait, measure, stop.
# A proxy that does not come up gets a "did not start" row; the run goes on.
run_proxy() {
    local name=$1 h1port=$2 h2port=$3 want_rss=$4
    shift 4
    local p
    for p in "$h1port" "$h2port"; do
        [[ $p == - ]] && continue
        if ! port_free "$p"; then
            log "$name: port $p is already in use by another process, skipping"
            record_row "$name" "port $p busy" "" "" "" "" "" "" "" "skip"
            return
        fi
    done
    log "$name: starting: $*"
    start_server "$name" proxy "$@"
    local pid=$STARTED_PID
    if ! wait_ready "$pid" "$h1port"; then
        log "$name: did not answer 200 on :$h1port within ${READY_TIMEOUT}s; last log lines:"
        tail -n 5 "$W/$name.log" | sed 's/^/    /' >&2
        record_row "$name" "did not start" "" "" "" "" "" "" "" "skip"
        stop_server "$pid"
        return
    fi
    bench_target "$name" "$h1port" "$h2port" "$pid" "$want_rss"
    stop_server "$pid"
}

# ---------------------------------------------------------------------------------------------
# Configs: one worker/thread each, access logs off, keep-alive on both legs, h1 upstream leg.
# ---------------------------------------------------------------------------------------------
write_configs() {
    cat >"$W/backend.conf" <<CONF
worker_processes 1; daemon off; pid $W/backend.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; client_body_temp_path $W;
  client_max_body_size 64m; client_body_buffer_size 1m;
  server { listen 127.0.0.1:$BACKEND_H1; listen 127.0.0.1:$BACKEND_H2 http2;
    location / { return 200 "$BODY\n"; } }
  server { listen 127.0.0.1:$ZIPKIN_SINK; location / { return 202; } } }
CONF
    # meshwire's default config for the issue's targets: quick mode's listener and cluster, the
    # admin listener (metrics), and the tracing filter sampling 1 % to a Zipkin endpoint.
    cat >"$W/meshwire.yaml" <<CONF
telemetry:
  service_name: meshwire-bench
  zipkin: {endpoint: 'http://127.0.0.1:$ZIPKIN_SINK/api/v2/spans'}
admin: {address: '127.0.0.1:$MESHWIRE_ADMIN'}
listeners:
  - name: ingress
    address: 127.0.0.1:$MESHWIRE
    filters:
      - {type: tracing, sampling_rate: 0.01}
      - {type: router}
    routes:
      - {match: {prefix: /}, cluster: upstream}
clusters:
  - {name: upstream, endpoints: ['127.0.0.1:$BACKEND_H1']}
CONF
    cat >"$W/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  upstream be { server 127.0.0.1:$BACKEND_H1; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_H1; listen 127.0.0.1:$NGINX_H2 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
    cat >"$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAPROXY_H1
  bind 127.0.0.1:$HAPROXY_H2 proto h2
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BACKEND_H1
CONF
}

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
print_header() {
    local hey_v
    # shellcheck disable=SC2016  # ${Version} is dpkg-query's format, not a shell expansion
    hey_v=$(dpkg-query -W -f '${Version}' hey 2>/dev/null || echo "?")
    echo "== meshwire benchmark  $(date -u '+%Y-%m-%d %H:%M:%SZ')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "machine : $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "tools   : $(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}'), $(h2load --version 2>&1 | head -n1), hey $hey_v, $(nginx -v 2>&1 | sed 's/.*: //'), haproxy $(haproxy -v 2>&1 | awk 'NR == 1 {print $3}'), $("$ROOT/.venv/bin/python" -V 2>/dev/null || echo 'no .venv')"
    echo "duration: ${D}s per test; h1: wrk -t1 -c16; h2c: h2load -c4 -m16 (prior knowledge)"
    echo "latency : ${RATE} req/s over HTTP/1.1, bursts: hey -c $HEY_C -q $HEY_Q; paced: wrk -t1 -c$PACED_C -s bench/paced.lua (one evenly spaced schedule)"
    echo "pinning : $PINNED"
    echo "loadavg : $LOADAVG_BEFORE (before start)"
    if awk -v l="${LOADAVG_BEFORE%% *}" 'BEGIN {exit !(l > 0.5)}'; then
        echo "WARNING : 1-min load > 0.5: the box was busy just now (another benchmark, build or test run?); figures may be noisy"
    fi
    echo "meshwire: $MESHWIRE_CMD"
}

print_table() {
    local nginx_h1 nginx_h2
    nginx_h1=$(awk -F'|' '$1 == "nginx" && $10 !~ /skip|h1/ {print $2}' "$W/rows")
    nginx_h2=$(awk -F'|' '$1 == "nginx" && $10 !~ /skip|h2/ {print $3}' "$W/rows")
    echo
    awk -F'|' -v n1="${nginx_h1:-0}" -v n2="${nginx_h2:-0}" '
        function ratio(v, n) { return (n > 0 && v > 0) ? sprintf("%.2f", v / n) : "-" }
        function mark(v, bad) { return bad ? v "!" : v }
        BEGIN {
            fmt = "%-16s %9s %9s %7s %7s %7s %7s %8s %9s %7s %7s\n"
            printf fmt, "target", "h1 req/s", "h2c req/s", "burst", "burst", "paced", "paced", "h1/nginx", "h2c/nginx", "idle MB", "peak MB"
            printf fmt, "", "(wrk)", "(h2load)", "p50 ms", "p99 ms", "p50 ms", "p99 ms", "", "", "(RSS)", "(VmHWM)"
        }
        $10 ~ /skip/ { printf "%-16s %s\n", $1, $2; next }
        {
            printf fmt, $1, mark($2, $10 ~ /h1/), mark($3, $10 ~ /h2/), mark($4, $10 ~ /lat/), mark($5, $10 ~ /lat/),
                mark($6, $10 ~ /paced/), mark($7, $10 ~ /paced/), ratio($2, n1), ratio($3, n2), $8, $9
        }' "$W/rows"
    echo
    echo "latency at ${RATE} req/s: burst = hey (10 workers x 50/s fire together, so p50 includes queueing in the burst);"
    echo "  paced = evenly spaced sends (wrk + bench/paced.lua, ${PACED_C} connections, one schedule), the per-request latency"
    echo "checks (! above = errors, non-2xx or missed rate: do not trust that figure; cpu = server under test / CPU 0 (backend+generator), % of one core):"
    cat "$W/notes" 2>/dev/null
    if [[ -z $nginx_h1 || -z $nginx_h2 ]]; then
        echo "  note: no clean nginx figure, so some ratios are '-'"
    fi
    echo
    print_targets
}

# The issue's targets for meshwire (Envoy mode: tracing at 1 %, metrics on), judged from this
# run, one `TARGET name: value vs goal PASS|FAIL` line each (bench/summary.py collects them).
# A figure flagged by its checks, or missing, never passes; the value says why.
print_targets() {
    awk -F'|' -v gn="$GOAL_VS_NAIVE" -v g1="$GOAL_H1_VS_NGINX" -v g2="$GOAL_H2_VS_NGINX" \
        -v gl="$GOAL_P50_OVER_NGINX_MS" '
        function clean(row, col, flag) { return row != "" && row !~ /skip/ && split(row, f, "|") && f[10] !~ flag && f[col] != "-" && f[col] > 0 }
        function get(row, col) { split(row, f, "|"); return f[col] }
        function why(row, col, flag, unit,   f) {
            if (row == "") return "not measured"
            split(row, f, "|")
            if (f[10] ~ /skip/) return f[2]
            if (f[10] ~ flag) return f[col] unit " failed its checks (see checks above)"
            return "no figure"
        }
        # TARGET line for meshwire / reference throughput ratio (columns: 2 h1, 3 h2c).
        function ratio_target(name, ref, refname, col, flag, goal,   m, r) {
            if (!clean(M, col, flag)) { printf "TARGET %s: meshwire %s vs >= %.2fx FAIL\n", name, why(M, col, flag, " req/s"), goal; return }
            if (!clean(ref, col, flag)) { printf "TARGET %s: %s %s vs >= %.2fx FAIL\n", name, refname, why(ref, col, flag, " req/s"), goal; return }
            m = get(M, col); r = get(ref, col)
            printf "TARGET %s: %.2fx (%d vs %d req/s) vs >= %.2fx %s\n", name, m / r, m, r, goal, (m >= goal * r) ? "PASS" : "FAIL"
        }
        $1 == "nginx" { N = $0 }
        $1 == "meshwire" { M = $0 }
        $1 == "naive-httptools" { H = $0 }
        END {
            ratio_target("envoy h1 vs naive-httptools", H, "naive-httptools", 2, "h1", gn)
            ratio_target("envoy h1 vs nginx", N, "nginx", 2, "h1", g1)
            ratio_target("envoy h2c vs nginx", N, "nginx", 3, "h2", g2)
            name = "envoy p50 @500/s paced vs nginx"
            if (!clean(M, 6, "paced")) printf "TARGET %s: meshwire %s vs <= +%.1f ms FAIL\n", name, why(M, 6, "paced", " ms p50"), gl
            else if (!clean(N, 6, "paced")) printf "TARGET %s: nginx %s vs <= +%.1f ms FAIL\n", name, why(N, 6, "paced", " ms p50"), gl
            else {
                m = get(M, 6); n = get(N, 6)
                printf "TARGET %s: %+.2f ms (%.2f vs %.2f ms) vs <= +%.1f ms %s\n", name, m - n, m, n, gl, (m - n <= gl) ? "PASS" : "FAIL"
            }
        }' "$W/rows"
}

# ---------------------------------------------------------------------------------------------
main() {
    local t missing=()
    for t in nginx haproxy wrk h2load hey curl setsid; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    if ((${#missing[@]})); then
        echo "missing tools: ${missing[*]} (run: make bench-tools)" >&2
        exit 1
    fi
    CLK_TCK=$(getconf CLK_TCK)
    LOADAVG_BEFORE=$(cat /proc/loadavg)

    # Pinning (envoy.md §5.3): proxies on CPU 1, backend + generators on CPU 0.
    PIN_PROXY=() PIN_LOAD=()
    if command -v taskset >/dev/null && (($(nproc) >= 2)); then
        PIN_PROXY=(taskset -c 1) PIN_LOAD=(taskset -c 0)
        PINNED="yes: proxy under test on CPU 1; backend + wrk/h2load/hey on CPU 0 (direct row: backend on CPU 0 too)"
    else
        PINNED="NO (needs taskset and >= 2 CPUs): all processes share all CPUs, ratios are less meaningful"
    fi

    print_header
    write_configs
    : >"$W/rows"

    # The backend runs for the whole session; without it nothing can be measured.
    for t in "$BACKEND_H1" "$BACKEND_H2" "$ZIPKIN_SINK"; do
        if ! port_free "$t"; then
            echo "port $t is already in use (another benchmark running?); refusing to measure a foreign server" >&2
            exit 1
        fi
    done
    log "starting backend nginx on :$BACKEND_H1 (h1), :$BACKEND_H2 (h2c) and :$ZIPKIN_SINK (Zipkin sink)"
    start_server backend load nginx -e "$W/backend.err" -p "$W" -c "$W/backend.conf"
    local backend=$STARTED_PID
    if ! wait_ready "$backend" "$BACKEND_H1"; then
        echo "backend did not start:" >&2
        cat "$W/backend.log" "$W/backend.err" >&2 2>/dev/null
        exit 1
    fi

    bench_target direct "$BACKEND_H1" "$BACKEND_H2" "$backend" no
    run_proxy nginx "$NGINX_H1" "$NGINX_H2" no nginx -e "$W/nginx.err" -p "$W" -c "$W/nginx.conf"
    run_proxy haproxy "$HAPROXY_H1" "$HAPROXY_H2" no haproxy -db -f "$W/haproxy.cfg"
    run_proxy meshwire "$MESHWIRE" "$MESHWIRE" yes bash -c "exec $MESHWIRE_CMD"
    # The first yardstick: a naive trio+h11 proxy (HTTP/1.1 only), measured in the same run.
    run_proxy naive-h11 "$NAIVE_H11" - yes "$ROOT/.venv/bin/python" "$ROOT/bench/naive_proxy.py" "$NAIVE_H11" "$BACKEND_H1"
    # The issue's yardstick (h1 >= 0.5x): the same naive loop with httptools (llhttp) on both legs.
    run_proxy naive-httptools "$NAIVE_HTTPTOOLS" - yes "$ROOT/.venv/bin/python" "$ROOT/bench/naive_httptools_proxy.py" "$NAIVE_HTTPTOOLS" "$BACKEND_H1"

    # Optional extra rows: "name|cmd|port", separated by newlines or ";;".
    local entry name cmd port
    while IFS= read -r entry; do
        [[ -z ${entry//[[:space:]]/} ]] && continue
        IFS='|' read -r name cmd port <<<"$entry"
        name=$(echo "$name" | xargs) port=$(echo "$port" | xargs)
        if [[ -z $name || -z $cmd || ! $port =~ ^[0-9]+$ ]]; then
            log "ignoring malformed MESHWIRE_EXTRA entry: $entry"
            continue
        fi
        run_proxy "$name" "$port" "$port" yes bash -c "exec $cmd"
    done <<<"${MESHWIRE_EXTRA//;;/$'\n'}"

    print_table
}

main
