#!/usr/bin/env bash
# benches/foundation.sh — produces every figure in tuning.md.
#
#   bash benches/foundation.sh [N ...]          # default: 5000 15000
#
# For each N (a fresh deployment and a fresh frontend process each time):
#   connect N loadgen agents (ramp 1000/s by default), report time to connect all,
#   connect_time p50/p99, frontend RSS baseline vs all-connected -> KiB per agent.
# While the largest N is connected: schedule TASKS collections (Generic.Client.Info) to
#   random connected agents, TASK_GAP_MS apart; task latency p50/p99 from loadgen's report.
# Then ingest: INGEST_AGENTS agents, the 4-artifact collection to all of them at once,
#   ingest MB/s (packhunt_result_bytes_written_total delta / first POST -> last finish)
#   against the datastore disk's own sequential append rate (dd, right before and after),
#   and the frontend's CPU-seconds per second during ingest.
#
# Environment (all optional):
#   OUT=dir            results go here (default: a new mktemp -d under /tmp)
#   RAMP=1000          loadgen --ramp-per-second
#   TASKS=300          collections scheduled for the task-latency measurement
#   TASK_GAP_MS=20     spacing between those POSTs
#   INGEST_AGENTS=2000 fleet size for the ingest measurement (0 = skip)
#   PARALLEL_POSTS=64  concurrent API requests while scheduling the ingest collections
#   CONNECT_TIMEOUT=180 seconds to wait for a fleet to connect before recording a miss
#   DD_MB=1024         size of each dd run
#
# Only loopback addresses are used. Every process started here is stopped by this script
# (loadgen by --duration-s / SIGINT / timeout, the frontend by SIGTERM then SIGKILL).
# Frontend and loadgen share the same (2-core) box: no CPU pinning.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACKHUNT=$ROOT/target/release/packhunt
LOADGEN=$ROOT/target/release/loadgen
COUNTS=("$@")
[[ ${#COUNTS[@]} -eq 0 ]] && COUNTS=(5000 15000)
RAMP=${RAMP:-1000}
TASKS=${TASKS:-300}
TASK_GAP_MS=${TASK_GAP_MS:-20}
INGEST_AGENTS=${INGEST_AGENTS:-2000}
PARALLEL_POSTS=${PARALLEL_POSTS:-64}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-180}
DD_MB=${DD_MB:-1024}
OUT=${OUT:-$(mktemp -d /tmp/packhunt-foundation.XXXXXX)}
mkdir -p "$OUT"
PW=pw
INGEST_ARTIFACTS='["Linux.Sys.Pslist","Linux.Network.Netstat","Generic.Files.Glob","Linux.Sys.Users"]'
LATENCY_N=$(printf '%s\n' "${COUNTS[@]}" | sort -n | tail -1)
CLK_TCK=$(getconf CLK_TCK)

for tool in curl jq ss dd awk shuf; do
    command -v "$tool" >/dev/null || { echo "foundation.sh: needs $tool" >&2; exit 1; }
done
if [[ ! -x $PACKHUNT || ! -x $LOADGEN ]]; then
    (cd "$ROOT" && cargo build --release --workspace)
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
now_ms() { date +%s%3N; }
SUMMARY=$OUT/summary.tsv
: >"$SUMMARY"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SUMMARY"; }   # step, figure, value

# ---------------------------------------------------------------- processes ----------
FE_PID="" LG_PID="" FE_DIR="" GUI_PORT=""
cleanup() {
    [[ -n $LG_PID ]] && kill -INT "$LG_PID" 2>/dev/null && sleep 2 && kill -KILL "$LG_PID" 2>/dev/null
    [[ -n $FE_PID ]] && kill -TERM "$FE_PID" 2>/dev/null && sleep 2 && kill -KILL "$FE_PID" 2>/dev/null
    true
}
trap cleanup EXIT

free_port() {   # below the ephemeral range (32768-60999), so agents' source ports never collide
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ -z $(ss -Htan "( sport = :$p )") ]] && { echo "$p"; return; }
    done
}

# deploy DIR: a fresh deployment (CA, certs, admin user) on free loopback ports.
deploy() {
    local dir=$1 fport
    fport=$(free_port)
    GUI_PORT=$(free_port)
    while [[ $GUI_PORT == "$fport" ]]; do GUI_PORT=$(free_port); done
    "$PACKHUNT" config generate --out "$dir" --admin-password "$PW" \
        --frontend-port "$fport" --gui-port "$GUI_PORT" >"$dir.generate.log" 2>&1
    # The generated agent port binds 0.0.0.0; this benchmark stays on loopback.
    sed -i 's/^bind_address = "0.0.0.0"/bind_address = "127.0.0.1"/' "$dir/server.config.toml"
    FE_DIR=$dir
}

start_frontend() {
    local dir=$1 i
    "$PACKHUNT" frontend --config "$dir/server.config.toml" >"$dir/frontend.out" 2>"$dir/frontend.err" &
    FE_PID=$!
    for ((i = 0; i < 300; i++)); do
        grep -q ready "$dir/frontend.out" 2>/dev/null && { log "frontend $FE_PID: $(head -1 "$dir/frontend.out")"; return; }
        kill -0 "$FE_PID" 2>/dev/null || { log "frontend died at start:"; tail -20 "$dir/frontend.err" >&2; exit 1; }
        sleep 0.1
    done
    log "frontend not ready after 30 s"; exit 1
}

stop_frontend() {
    local i
    [[ -z $FE_PID ]] && return
    kill -TERM "$FE_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$FE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FE_PID" 2>/dev/null || true
    wait "$FE_PID" 2>/dev/null || true
    FE_PID=""
}

# start_loadgen DIR N DURATION_S
start_loadgen() {
    local dir=$1 n=$2 d=$3
    timeout --signal=INT --kill-after=30 $((d + 120)) \
        "$LOADGEN" --config "$dir/client.config.toml" --clients "$n" --duration-s "$d" \
        --ramp-per-second "$RAMP" --report "$dir/loadgen.json" 2>"$dir/loadgen.err" &
    LG_PID=$!
}

stop_loadgen() {   # SIGINT: loadgen stops its agents and writes the report
    local i
    [[ -z $LG_PID ]] && return
    kill -INT "$LG_PID" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LG_PID" 2>/dev/null || true
    wait "$LG_PID" 2>/dev/null || true
    LG_PID=""
}

loadgen_pid() { pgrep -P "$LG_PID" -x loadgen | head -1; }   # the child of `timeout`

# ---------------------------------------------------------------- probes -------------
api() { curl -sk --max-time 60 -u "admin:$PW" "https://127.0.0.1:$GUI_PORT$1"; }
connected_clients() {
    local v
    v=$({ api /api/v1/frontends || true; } | jq -r '.items[0].connected_clients // 0' 2>/dev/null || true)
    echo "${v:-0}"
}
metric() {   # metric 'name' or 'name{label="x"}' -> value (0 if absent or unreachable)
    { api /metrics || true; } | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() {   # utime + stime of a process (0 if it is gone)
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
thread_ticks() {   # "tid:comm ticks" per thread
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s:%s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" "$(sed 's/^.*) //' "$t/stat" | awk '{ print $12 + $13 }')"
    done | sort
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rep() { jq -r "$1" "$2"; }

# wait_connected N -> seconds (API view) from the moment loadgen's identities were ready
wait_connected() {
    local n=$1 dir=$2 start c i t0
    for ((i = 0; i < 6000; i++)); do
        grep -q 'identities ready' "$dir/loadgen.err" 2>/dev/null && break
        kill -0 "$LG_PID" 2>/dev/null || break
        sleep 0.1
    done
    start=$(now_ms)
    t0=$start
    while :; do
        c=$(connected_clients)
        if ((c >= n)); then
            echo "$(((($(now_ms) - start)) / 1000)).$(((($(now_ms) - start)) % 1000 / 100))"
            return 0
        fi
        if (($(now_ms) - t0 > CONNECT_TIMEOUT * 1000)) || ! kill -0 "$LG_PID" 2>/dev/null; then
            log "only $c/$n agents connected after $(((($(now_ms) - start)) / 1000)) s"
            echo "miss"
            return 0
        fi
        sleep 0.5
    done
}

dd_rate() {   # dd_rate DIR -> MB/s (10^6 bytes) of a DD_MB sequential append with fdatasync
    local f=$1/dd.test line
    line=$(dd if=/dev/zero of="$f" bs=1M count="$DD_MB" oflag=append conv=notrunc,fdatasync 2>&1 | tail -1)
    rm -f "$f"
    echo "$line" >>"$OUT/run.log"
    # "... copied, 2.1 s, 511 MB/s" -> bytes / seconds, unit-independent
    echo "$line" | awk -F', ' '{ split($1, b, " "); split($(NF-1), s, " "); printf "%.1f\n", b[1] / s[1] / 1e6 }'
}

# ---------------------------------------------------------------- steps --------------
log "results under $OUT; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; loadavg $(loadavg)"
log "ulimit -n $(ulimit -n), ulimit -l $(ulimit -l) KiB; somaxconn $(cat /proc/sys/net/core/somaxconn); tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog); ip_local_port_range $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range)"

task_latency_step() {
    local dir=$1 gap f0 i c pids=() codes ok done_ f_now e0
    log "task latency: $TASKS collections (Generic.Client.Info), ${TASK_GAP_MS} ms apart, with $(connected_clients) connected"
    api '/api/v1/clients?limit=20000' >"$dir/clients.json"
    record "tasks@$LATENCY_N" "clients listed (limit=20000 asked)" "$(rep '.items | length' "$dir/clients.json") of total $(rep '.total' "$dir/clients.json")"
    rep '.items[] | select(.connected) | .client_id' "$dir/clients.json" | shuf -n "$TASKS" >"$dir/task-targets.txt"
    mkdir -p "$dir/tasks"
    f0=$(metric 'packhunt_flow_transitions_total{state="finished"}')
    e0=$(metric 'packhunt_flow_transitions_total{state="error"}')
    gap=$(awk -v g="$TASK_GAP_MS" 'BEGIN { printf "%.3f", g / 1000 }')
    i=0
    while read -r c; do
        curl -sk --max-time 60 -u "admin:$PW" -o "$dir/tasks/$i.json" -w '%{http_code}\n' \
            -X POST -H 'content-type: application/json' -d '{"artifacts":["Generic.Client.Info"]}' \
            "https://127.0.0.1:$GUI_PORT/api/v1/clients/$c/collections" >"$dir/tasks/$i.code" 2>&1 &
        pids+=($!)
        i=$((i + 1))
        sleep "$gap"
    done <"$dir/task-targets.txt"
    for p in "${pids[@]}"; do wait "$p" || true; done
    ok=$(cat "$dir"/tasks/*.code | grep -c '^200$' || true)
    record "tasks@$LATENCY_N" "POSTs answered 200" "$ok/$i"
    for ((i = 0; i < 600; i++)); do
        f_now=$(metric 'packhunt_flow_transitions_total{state="finished"}')
        done_=$((f_now - f0 + $(metric 'packhunt_flow_transitions_total{state="error"}') - e0))
        ((done_ >= ok)) && break
        sleep 0.1
    done
    record "tasks@$LATENCY_N" "flows finished / error" "$((f_now - f0)) / $(($(metric 'packhunt_flow_transitions_total{state="error"}') - e0))"
}

connect_step() {
    local n=$1 dir=$OUT/connect-$n base conn hwm t_api d lgpid lg_rss
    deploy "$dir"
    start_frontend "$dir"
    sleep 2
    base=$(rss_kib "$FE_PID")
    log "N=$n: frontend baseline RSS $base KiB; loadavg $(loadavg)"
    d=$((n / RAMP + 120))
    [[ $n == "$LATENCY_N" ]] && d=$((d + 120))
    start_loadgen "$dir" "$n" "$d"
    t_api=$(wait_connected "$n" "$dir")
    sleep 2   # let the last sessions settle before sampling
    conn=$(rss_kib "$FE_PID")
    hwm=$(hwm_kib "$FE_PID")
    lgpid=$(loadgen_pid || true)
    lg_rss=$([[ -n $lgpid ]] && rss_kib "$lgpid" || echo 0)
    local c; c=$(connected_clients)
    log "N=$n: $c connected (API) after ${t_api} s; frontend RSS $conn KiB (HWM $hwm); loadgen RSS $lg_rss KiB; loadavg $(loadavg)"
    record "connect@$n" "connected (API) when sampled" "$c/$n"
    record "connect@$n" "time to connect all, API poll from ramp start (s)" "$t_api"
    record "connect@$n" "frontend RSS baseline (KiB)" "$base"
    record "connect@$n" "frontend RSS all connected (KiB)" "$conn"
    record "connect@$n" "frontend VmHWM (KiB)" "$hwm"
    record "connect@$n" "frontend RSS per connected agent (KiB)" "$(awk -v a="$conn" -v b="$base" -v n="$c" 'BEGIN { printf "%.1f", n ? (a - b) / n : 0 }')"
    record "connect@$n" "loadgen RSS per agent (KiB)" "$(awk -v a="$lg_rss" -v n="$n" 'BEGIN { printf "%.1f", a / n }')"
    record "connect@$n" "loadavg at sample" "$(loadavg)"
    if [[ $n == "$LATENCY_N" && $TASKS -gt 0 ]]; then
        task_latency_step "$dir"
    fi
    stop_loadgen
    api /metrics >"$dir/metrics.txt" || true
    stop_frontend
    local r=$dir/loadgen.json
    if [[ -s $r ]]; then
        record "connect@$n" "loadgen time_to_connect_all_s" "$(rep '.time_to_connect_all_s // "never"' "$r")"
        record "connect@$n" "connect_time p50 / p99 / max (ms)" "$(rep '[.connect_time.p50_us, .connect_time.p99_us, .connect_time.max_us] | map(. / 1000 | floor) | join(" / ")' "$r")"
        record "connect@$n" "ever_connected / connected_peak / reconnects" "$(rep '[.ever_connected, .connected_peak, .reconnects] | join(" / ")' "$r")"
        record "connect@$n" "loadgen errors (last_error)" "$(rep '"\(.errors) (\(.last_error // "none"))"' "$r")"
        if [[ $n == "$LATENCY_N" && $TASKS -gt 0 ]]; then
            record "tasks@$n" "tasks_received" "$(rep .tasks_received "$r")"
            record "tasks@$n" "task latency p50 / p99 / max (ms)" "$(rep '[.task_latency.p50_us, .task_latency.p99_us, .task_latency.max_us] | map(. / 1000 * 10 | floor / 10) | join(" / ")' "$r")"
        fi
    else
        record "connect@$n" "loadgen report" "missing (see $dir/loadgen.err)"
    fi
    record "connect@$n" "frontend refusals (nonzero)" "$(grep '^packhunt_connection_refusals_total' "$dir/metrics.txt" | awk '$2 != 0' | tr '\n' ' ' | sed 's/packhunt_connection_refusals_total//g')"
    record "connect@$n" "frontend stderr WARN/ERROR lines" "$(grep -cE 'WARN|ERROR' "$dir/frontend.err" || true)"
}

ingest_step() {
    local n=$INGEST_AGENTS dir=$OUT/ingest t_api dd1 dd2 b0 b1 f0 e0 fin err c0 c1 l0 l1 t0 t_posted t_done
    local lgpid posted ok last_finish wall wall_status i
    deploy "$dir"
    start_frontend "$dir"
    start_loadgen "$dir" "$n" 900
    t_api=$(wait_connected "$n" "$dir")
    record "ingest@$n" "connected before scheduling (API)" "$(connected_clients)/$n (after ${t_api} s)"
    sleep 2
    log "ingest: dd before ($DD_MB MiB) on $(df --output=source,fstype "$dir/datastore" | tail -1 | tr -s ' ')"
    dd1=$(dd_rate "$dir/datastore")
    api '/api/v1/clients?limit=20000' | jq -r '.items[] | select(.connected) | .client_id' >"$dir/targets.txt"
    printf '{"artifacts":%s}' "$INGEST_ARTIFACTS" >"$dir/body.json"
    {
        echo "silent"; echo "insecure"; echo "user = \"admin:$PW\""; echo "request = \"POST\""
        echo "header = \"content-type: application/json\""; echo "data = \"@$dir/body.json\""
        echo "max-time = 120"; echo "write-out = \"%{http_code}\\n\""
        mkdir -p "$dir/posts"
        i=0
        while read -r c; do
            echo "url = \"https://127.0.0.1:$GUI_PORT/api/v1/clients/$c/collections\""
            echo "output = \"$dir/posts/$i.json\""
            i=$((i + 1))
        done <"$dir/targets.txt"
    } >"$dir/posts.curl"
    posted=$(wc -l <"$dir/targets.txt")
    b0=$(metric packhunt_result_bytes_written_total)
    f0=$(metric 'packhunt_flow_transitions_total{state="finished"}')
    e0=$(metric 'packhunt_flow_transitions_total{state="error"}')
    lgpid=$(loadgen_pid || true)
    thread_ticks "$FE_PID" >"$dir/threads.before"
    c0=$(cpu_ticks "$FE_PID"); l0=$(cpu_ticks "$lgpid")
    log "ingest: scheduling $posted collections ($PARALLEL_POSTS concurrent POSTs); loadavg $(loadavg)"
    t0=$(now_ms)
    curl --parallel --parallel-max "$PARALLEL_POSTS" -K "$dir/posts.curl" >"$dir/posts.codes" 2>"$dir/posts.err" || true
    t_posted=$(now_ms)
    ok=$(grep -c '^200$' "$dir/posts.codes" || true)
    while :; do
        fin=$(($(metric 'packhunt_flow_transitions_total{state="finished"}') - f0))
        err=$(($(metric 'packhunt_flow_transitions_total{state="error"}') - e0))
        t_done=$(now_ms)
        ((fin + err >= ok)) && break
        ((t_done - t0 > 600000)) && { log "ingest: only $fin finished + $err error of $ok after 600 s"; break; }
        kill -0 "$FE_PID" 2>/dev/null || { log "ingest: frontend died"; break; }
        sleep 0.1
    done
    c1=$(cpu_ticks "$FE_PID"); l1=$(cpu_ticks "$lgpid")
    thread_ticks "$FE_PID" >"$dir/threads.after"
    b1=$(metric packhunt_result_bytes_written_total)
    api /metrics >"$dir/metrics.txt"
    # The precise end: the latest finish_time_ms the frontend wrote into status.json.
    last_finish=$(find "$dir/datastore/clients" -path '*/collections/*/status.json' -print0 |
        xargs -0 cat | jq -s 'map(.finish_time_ms // 0) | max')
    log "ingest: dd after"
    dd2=$(dd_rate "$dir/datastore")
    stop_loadgen
    stop_frontend
    wall=$(awk -v a="$t0" -v b="$t_done" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
    wall_status=$(awk -v a="$t0" -v b="$last_finish" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
    local mbs; mbs=$(awk -v d="$((b1 - b0))" -v w="$wall_status" 'BEGIN { printf "%.1f", d / 1e6 / w }')
    record "ingest@$n" "collections POSTed / answered 200" "$posted / $ok"
    record "ingest@$n" "flows finished / error" "$fin / $err"
    record "ingest@$n" "POST phase (s)" "$(awk -v a="$t0" -v b="$t_posted" 'BEGIN { printf "%.2f", (b - a) / 1000 }')"
    record "ingest@$n" "first POST -> last finish_time_ms (s)" "$wall_status"
    record "ingest@$n" "first POST -> finish seen by 0.1 s poll (s)" "$wall"
    record "ingest@$n" "result bytes written (MB)" "$(awk -v d="$((b1 - b0))" 'BEGIN { printf "%.1f", d / 1e6 }')"
    record "ingest@$n" "ingest MB/s" "$mbs"
    record "ingest@$n" "dd append MB/s before / after" "$dd1 / $dd2"
    record "ingest@$n" "ingest / dd (mean of before, after)" "$(awk -v i="$mbs" -v a="$dd1" -v b="$dd2" 'BEGIN { printf "%.3f", i / ((a + b) / 2) }')"
    record "ingest@$n" "frontend CPU-s per s (2 cores = 2.0)" "$(awk -v c="$((c1 - c0))" -v t="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.2f", c / t / w }')"
    record "ingest@$n" "loadgen CPU-s per s" "$(awk -v c="$((l1 - l0))" -v t="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.2f", c / t / w }')"
    record "ingest@$n" "frontend threads CPU-s per s" "$(join "$dir/threads.before" "$dir/threads.after" 2>/dev/null |
        awk -v t="$CLK_TCK" -v w="$wall" '{ d = ($3 - $2) / t / w; sub(/^[0-9]+:/, "", $1); if (d >= 0.01) printf "%s %.2f; ", $1, d }')"
    record "ingest@$n" "upload rejections (nonzero)" "$(grep '^packhunt_upload_rejections_total' "$dir/metrics.txt" | awk '$2 != 0' | tr '\n' ' ' | sed 's/packhunt_upload_rejections_total//g')"
    record "ingest@$n" "loadgen errors (last_error)" "$(rep '"\(.errors) (\(.last_error // "none"))"' "$dir/loadgen.json" 2>/dev/null || echo 'no report')"
    record "ingest@$n" "frontend stderr WARN/ERROR lines" "$(grep -cE 'WARN|ERROR' "$dir/frontend.err" || true)"
}

for n in "${COUNTS[@]}"; do connect_step "$n"; done
if ((INGEST_AGENTS > 0)); then ingest_step; fi

echo
echo "== packhunt foundation figures ($OUT) =="
awk -F'\t' '{ printf "%-14s %-52s %s\n", $1, $2, $3 }' "$SUMMARY"
