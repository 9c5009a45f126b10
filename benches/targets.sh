#!/usr/bin/env bash
# benches/targets.sh — one command per performance target, each running its arms in one
# invocation, alternating (A, B, A, B, ...) for REPEATS rounds, and printing a table of
# every repeat's value, the median, and ratios of medians (also $OUT/table.md).
#
#   bash benches/targets.sh p1 [N]        RSS per idle agent, THP on vs off (N=19000)
#   bash benches/targets.sh p1-fleet [N]  3 frontends x N agents each (N=17000), THP on vs off
#   bash benches/targets.sh p2 [N]        task delivery latency, N agents vs FEW (N=19000)
#   bash benches/targets.sh p3 [N]        ingest MB/s of N uploading agents vs dd (N=1000; P3_FSYNC=true,
#                                         P3_CONCURRENCY= the frontend's default)
#   bash benches/targets.sh p4 [N]        GUI/API probe latency, idle vs N uploading agents (P4_FSYNC=false,
#                                         P4_CONCURRENCY=256)
#                                         (N=15000), [gui] priority executor vs shared (P4_PRIOS);
#                                         SEED_CLIENTS=50000 puts that many offline clients in the
#                                         datastore first, PROBE_PATHS="/api/v1/frontends
#                                         /api/v1/clients?search=seed-4711 {results}" probes the
#                                         GUI's own calls, each reported on its own
#   bash benches/targets.sh p5 [N]        task delivery latency through a master + 2 minions, N agents
#                                         over all three (N=15000): agents on the master vs on minions
#   bash benches/targets.sh p6 [N]        frontend CPU per accepted connection and per
#                                         reconnect (resumed / full) vs a bare rustls server
#                                         on a glommio socket (loadgen --bare-tls-server, accept
#                                         and close included) and vs in-memory rustls
#                                         handshakes (N=1000); agents and the bare client come
#                                         from P6_SOURCES loopback addresses (16), so the
#                                         frontend's per-source handshake cap rarely bites
#   bash benches/targets.sh hunt [N]      one hunt over N agents (N=15000): recruitment 100/s vs
#                                         1000/s, [gui] priority executor vs shared (HUNT_ARMS)
#   bash benches/targets.sh storm [N]     kill -9 + restart under N agents (N=15000): time to
#                                         reconnect all, with load shedding (200/s) vs without;
#                                         then CPU per refused vs per accepted connection
#   bash benches/targets.sh p2-fleet [N]  one collection to N agents at once (N=19000; a hunt,
#                                         recruitment unthrottled), fsync_documents true vs false,
#                                         and the datastore on tmpfs (P2F_ARMS; an arm ARM@D
#                                         sets [frontend] io_ring_depth = D); KEEP_DATA=1 keeps every
#                                         datastore (on ext4 without a journal a mass delete slows the
#                                         next run's inode allocations for minutes: tuning.md); each
#                                         kept 19,000-agent datastore holds ~0.8 GB in ~10^6 files
#                                         and takes minutes to delete: watch the disk over a series
#   bash benches/targets.sh events [N]    N agents x EPS events/s for EVENTS_S s (N=15000, EPS=1,
#                                         EVENTS_S=300) on EVENTS_FRONTENDS (1; 3 = master + 2 minions):
#                                         ingest rows/s and MB/s, watch lag, a file sink's lag (1 frontend),
#                                         CPU per 1,000 events/s, task delivery and API p99, with events
#                                         vs the same fleet without (EVENTS_ARMS)
#   bash benches/targets.sh gui-paint [SEED] each GUI view's time to its data painted in headless
#                                         Chromium, SEED clients in the index (SEED=50000)
#   bash benches/targets.sh files [N]     N agents each uploading one FILE_BYTES file at once (N=1000,
#                                         FILE_BYTES=20000000) through the default permits vs dd:
#                                         upload MB/s (server-verified files), frontend peak RSS,
#                                         API p99 during it (FILES_FSYNC=true, FILES_TIMEOUT=1800)
#   bash benches/targets.sh p3-mount [N]  P3 with the datastore on an sshfs mount over loopback:
#                                         ingest MB/s vs the mount's own append, same run (benches/p3_mount.sh)
#   bash benches/targets.sh soak [MIN]    MIN minutes (30) of 15,000 agents over a master + 2 minions on
#                                         the shared mount with tasking, hunts, files and events, minions
#                                         killed and the master restarted; checked against loadgen's
#                                         record (benches/soak.sh)
#   bash benches/targets.sh box-fleet [N] N idle agents on the box (N=200000) past one process's 20,000
#                                         open files: a master + ceil(N / AGENTS_PER_FRONTEND) - 1 minions
#                                         (18500 each, shards 1) on one datastore, loadgen workers of
#                                         <= AGENTS_PER_WORKER (18000) from SOURCE_IPS (ceil(N / 20000),
#                                         >= 16) addresses; agents per frontend, RSS per agent on both sides,
#                                         MemAvailable and kernel memory, IDLE_S (20) s of idle CPU, a tasking
#                                         round (TASKS=1000 at TASK_RATE=20/s to MEASURE=100 probe agents)
#                                         and one unthrottled hunt over all (HUNT_ARTIFACT); a watchdog stops
#                                         loadgen if MemAvailable falls below WATCHDOG_MIN_MIB (1024);
#                                         the kernel's TCP aborts, drops and socket memory per phase.
#                                         REPEATS=1 by default; KEEP_DATA=1 keeps the datastore;
#                                         NETDEV_MAX_BACKLOG (65536; keep: the box's) for the run
#
# Environment (all optional): REPEATS=3, OUT (default: new mktemp -d), BIN_DIR,
# RAMP=1000 (agents/s), CONNECT_TIMEOUT=300 (s), LOADGEN_CPUS=1 (taskset for loadgen; empty
# = unpinned), SHARDS ([frontend] shards; default 1 for p1, p1-fleet, p5, p6 and storm's cost
# rounds, and the generated 0 = one per core for p2, p3, p4, hunt, storm, p2-fleet), and per
# target: see the defaults at the top of each run_* function.
#
# Pinning: the frontend pins agent shard k to cpu k itself (src/frontend/run.rs); its
# priority (GUI/API) executor and the datastore I/O threads are unpinned. With SHARDS=1
# (p1, p1-fleet, p6) the frontend's agent work is on cpu 0 and loadgen runs on cpu 1, so
# per-connection server cost is not mixed with load generation. p6's in-memory handshakes
# and its bare TLS server run on cpu 0 too (HS_CPU), the core the frontend's shard is
# measured on. p2, p3 and p4 keep the generated one-shard-per-core layout (a frontend as
# deployed), so there loadgen (still on cpu 1) shares cpu 1 with shard 1: the box has only
# two cores. p1-fleet's three frontends all put their one shard on cpu 0, and so do p5's
# and box-fleet's master and minions; box-fleet's loadgen workers all share cpu 1. curl and
# dd are never pinned.
#
# CPU figures are the frontend's whole-process CPU (all threads' schedstat run time;
# utime + stime ticks are logged alongside in run.log). The box is shared: read single
# values with the spread of the repeats.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

usage() { sed -n '2,/^set -euo pipefail$/{/^set -euo/!p}' "$0" >&2; exit 2; }   # the header above
TARGET=${1:-}
[[ -n $TARGET ]] || usage
shift
[[ $TARGET == box-fleet ]] && REPEATS=${REPEATS:-1}   # one 200,000-agent run is ~15 min
REPEATS=${REPEATS:-3}
RAMP=${RAMP:-1000}
OUT=${OUT:-$(mktemp -d "/tmp/packhunt-$TARGET.XXXXXX")}
mkdir -p "$OUT"
lib_init "targets.sh $TARGET"
log "target $TARGET; results under $OUT; $(nproc) cores; loadavg $(loadavg); REPEATS=$REPEATS; loadgen cpus '${LOADGEN_CPUS}'"
log "packhunt sha256 $(sha256sum "$PACKHUNT" | cut -c1-12); HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); ulimit -n $(ulimit -n)"

# fleet_up DIR NAME N LIMIT_S ARGS...: start loadgen and wait until N agents are connected;
# sets RAMP_S (identities ready -> all connected, from loadgen's 1 s progress lines).
fleet_up() {
    local dir=$1 name=$2 n=$3 limit=$4 t0
    shift 4
    start_loadgen "$dir" "$name" "$limit" --clients "$n" --ramp-per-second "$RAMP" --duration-s "$limit" "$@"
    wait_identities || { log "loadgen exited early:"; tail -5 "$LG_ERR" >&2; return 1; }
    t0=$(now_ms)
    if wait_progress connected "$n" "$CONNECT_TIMEOUT"; then RAMP_S=$(ms_to_s "$t0" "$(now_ms)"); else RAMP_S=miss; fi
}

api_args() { echo --api-url "https://127.0.0.1:$GUI_PORT/" --api-password "$PW"; }

# ---------------------------------------------------------------- p1 -----------------
p1_one() {   # p1_one ARM N REPEAT: one frontend, N idle agents
    local arm=$1 n=$2 r=$3 dir=$OUT/p1-$1-$3 thp=true base rss conn
    [[ $arm == nothp ]] && thp=false
    deploy "$dir"
    set_key "$dir" frontend shards "${SHARDS:-1}"
    set_key "$dir" frontend transparent_huge_pages "$thp"
    start_frontend "$dir"
    sleep 2
    base=$(status_kib "$FE_PID" VmRSS)
    fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + 600)) || true
    sleep "$SETTLE_S"
    rss=$(status_kib "$FE_PID" VmRSS)
    metrics_to "$dir/metrics.txt"
    conn=$(metric_in "$dir/metrics.txt" packhunt_sessions_open)
    log "p1 $arm r$r: RSS $base -> $rss KiB with $conn sessions; AnonHugePages $(awk '$1 == "AnonHugePages:" { print $2 }' "/proc/$FE_PID/smaps_rollup") KiB"
    stop_loadgen
    stop_frontend
    record "RSS per idle agent (KiB)" "$arm" "$(calc "$conn > 0 ? ($rss - $base) / $conn : 0" 1)"
    record "RSS baseline before agents (MiB)" "$arm" "$(calc "$base / 1024" 1)"
    record "agents connected (sessions_open)" "$arm" "$conn"
    record "time to connect all (s)" "$arm" "$RAMP_S"
    record "handshake timeouts" "$arm" "$(metric_in "$dir/metrics.txt" 'packhunt_connection_refusals_total{reason="handshake_timeout"}')"
    record "refusals (all reasons)" "$arm" "$(refusals_in "$dir/metrics.txt" | tr ' ' _)"
    record "loadgen errors" "$arm" "$(rep .errors "$dir/fleet.json" 2>/dev/null || echo '?')"
}

run_p1() {
    local n=${1:-${N:-19000}} r arm
    SETTLE_S=${SETTLE_S:-5}
    log "p1: N=$n per frontend, arms thp / nothp ([frontend] transparent_huge_pages = true / false, the default), shards ${SHARDS:-1}"
    for ((r = 1; r <= REPEATS; r++)); do
        for arm in thp nothp; do p1_one "$arm" "$n" "$r"; done
    done
    ratio "RSS per idle agent nothp / thp" "RSS per idle agent (KiB)" nothp "RSS per idle agent (KiB)" thp
    print_table "p1: frontend RSS per idle agent, N=$n, shards ${SHARDS:-1} ($OUT)"
}

p1_fleet_one() {   # p1_fleet_one ARM N REPEAT: FRONTENDS frontends, N agents each
    local arm=$1 n=$2 r=$3 thp=true k dir total=0 conn rss
    local fe=() lg=() base=() dirs=()
    [[ $arm == nothp ]] && thp=false
    for ((k = 1; k <= FRONTENDS; k++)); do
        dir=$OUT/p1f-$arm-$r-fe$k
        dirs+=("$dir")
        deploy "$dir"
        set_key "$dir" frontend shards "${SHARDS:-1}"
        set_key "$dir" frontend transparent_huge_pages "$thp"
        start_frontend "$dir"
        fe+=("$FE_PID")
    done
    sleep 2
    for ((k = 0; k < FRONTENDS; k++)); do base+=("$(status_kib "${fe[k]}" VmRSS)"); done
    # Each loadgen binds its agents' source ports before connecting, so the three fleets
    # share each source address's ~28k ephemeral ports: spread every fleet over 3 addresses.
    for ((k = 0; k < FRONTENDS; k++)); do
        start_loadgen "${dirs[k]}" fleet $((CONNECT_TIMEOUT + 900)) --clients "$n" --ramp-per-second "$RAMP" \
            --duration-s $((CONNECT_TIMEOUT + 900)) --source-ips "$FRONTENDS"
        lg+=("$LG_PID")
    done
    for ((k = 0; k < FRONTENDS; k++)); do
        LG_PID=${lg[k]} LG_ERR=${dirs[k]}/fleet.err
        wait_progress connected "$n" "$CONNECT_TIMEOUT" || true
    done
    sleep "$SETTLE_S"
    for ((k = 0; k < FRONTENDS; k++)); do
        use_deployment "${dirs[k]}"
        rss=$(status_kib "${fe[k]}" VmRSS)
        metrics_to "${dirs[k]}/metrics.txt"
        conn=$(metric_in "${dirs[k]}/metrics.txt" packhunt_sessions_open)
        total=$((total + conn))
        record "frontend $((k + 1)): RSS per idle agent (KiB)" "$arm" "$(calc "$conn > 0 ? ($rss - ${base[k]}) / $conn : 0" 1)"
        record "frontend $((k + 1)): agents connected" "$arm" "$conn"
        record "frontend $((k + 1)): handshake timeouts" "$arm" "$(metric_in "${dirs[k]}/metrics.txt" 'packhunt_connection_refusals_total{reason="handshake_timeout"}')"
    done
    record "total agents connected" "$arm" "$total"
    for ((k = 0; k < FRONTENDS; k++)); do LG_PID=${lg[k]}; stop_loadgen; done
    for ((k = 0; k < FRONTENDS; k++)); do FE_PID=${fe[k]}; stop_frontend; done
}

run_p1_fleet() {
    local n=${1:-${N:-17000}} r arm
    FRONTENDS=${FRONTENDS:-3}
    SETTLE_S=${SETTLE_S:-5}
    log "p1-fleet: $FRONTENDS frontends x $n agents, arms thp / nothp, shards ${SHARDS:-1} each"
    for ((r = 1; r <= REPEATS; r++)); do
        for arm in thp nothp; do p1_fleet_one "$arm" "$n" "$r"; done
    done
    ratio "frontend 1 RSS per agent nothp / thp" "frontend 1: RSS per idle agent (KiB)" nothp "frontend 1: RSS per idle agent (KiB)" thp
    print_table "p1-fleet: $FRONTENDS frontends x $n idle agents ($OUT)"
}

# ---------------------------------------------------------------- p2 -----------------
p2_one() {   # p2_one ARM N REPEAT: tasking scenario until TASKS tasks arrived
    local arm=$1 n=$2 r=$3 dir=$OUT/p2-$1-$3 rp
    deploy "$dir"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    start_frontend "$dir"
    # shellcheck disable=SC2046
    fleet_up "$dir" tasking "$n" $((CONNECT_TIMEOUT + 900)) --scenario tasking \
        --task-rate-per-second "$TASK_RATE" --probe-rate-per-second 0 $(api_args) || true
    wait_progress tasks "$TASKS" $((TASKS * 4 / ${TASK_RATE%.*} + 120)) || true
    stop_loadgen
    metrics_to "$dir/metrics.txt"
    stop_frontend
    rp=$dir/tasking.json
    record "task latency p50 (ms)" "$arm" "$(rep '.task_latency.p50_us / 1000' "$rp")"
    record "task latency p99 (ms)" "$arm" "$(rep '.task_latency.p99_us / 1000' "$rp")"
    record "tasks received / scheduled" "$arm" "$(rep '"\(.tasks_received)/\(.collections_scheduled)"' "$rp")"
    record "agents connected (peak)" "$arm" "$(rep .connected_peak "$rp")"
    record "time to connect all (s)" "$arm" "$RAMP_S"
}

run_p2() {
    local n=${1:-${N:-19000}} r
    FEW=${FEW:-100}
    TASKS=${TASKS:-200}
    TASK_RATE=${TASK_RATE:-20}
    log "p2: task delivery with $n agents (loaded) vs $FEW (idle); $TASKS tasks at $TASK_RATE/s each"
    for ((r = 1; r <= REPEATS; r++)); do
        p2_one loaded "$n" "$r"
        p2_one idle "$FEW" "$r"
    done
    ratio "p50 loaded / idle" "task latency p50 (ms)" loaded "task latency p50 (ms)" idle
    ratio "p99 loaded / idle" "task latency p99 (ms)" loaded "task latency p99 (ms)" idle
    print_table "p2: task delivery latency (API call -> agent has the task), loaded=$n idle=$FEW agents ($OUT)"
}

# ---------------------------------------------------------------- p3 -----------------
p3_ingest() {   # p3_ingest N REPEAT -> sets P3_DIR (its datastore is on the disk dd measures)
    local n=$1 r=$2 dir=$OUT/p3-ingest-$2 a b d bytes window
    P3_DIR=$dir
    deploy "$dir"
    set_key "$dir" datastore fsync_documents "$P3_FSYNC"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    [[ -n $P3_CONCURRENCY ]] && put_key "$dir" limits concurrency "$P3_CONCURRENCY"
    start_frontend "$dir"
    # shellcheck disable=SC2046
    fleet_up "$dir" upload "$n" $((CONNECT_TIMEOUT + INGEST_TIMEOUT)) --scenario upload \
        --upload-bytes-per-agent "$UPLOAD_BYTES" --exit-after-flows "$n" --probe-rate-per-second 0 $(api_args) || true
    a=$(cpu_snap "$FE_PID")
    wait_loadgen_exit "$INGEST_TIMEOUT" || { log "p3: flows not done after $INGEST_TIMEOUT s"; stop_loadgen; }
    b=$(cpu_snap "$FE_PID")
    d=$(cpu_delta "$a" "$b")
    echo "p3 ingest r$r cpu_s wall_s ticks_s: $d" >>"$OUT/run.log"
    metrics_to "$dir/metrics.txt"
    stop_frontend
    bytes=$(metric_in "$dir/metrics.txt" packhunt_result_bytes_written_total)
    # first collection created -> last finished, as the frontend wrote them in status.json
    window=$(find "$dir/datastore/clients" -path '*/collections/*/status.json' -print0 | xargs -0 cat |
        jq -s '(map(.finish_time_ms // 0) | max) - (map(.create_time_ms) | min)')
    record "ingest MB/s (result bytes, first create -> last finish)" ingest "$(calc "$bytes / 1e6 / ($window / 1000)" 1)"
    record "frontend CPU-s/s (of $(nproc))" ingest "$(calc "${d%% *} / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "MB/s per server core (MB per frontend CPU-s)" ingest "$(calc "$bytes / 1e6 / ${d%% *}" 1)"
    record "flows finished / agents" ingest "$(metric_in "$dir/metrics.txt" 'packhunt_flow_transitions_total{state="finished"}')/$n"
    record "result MB written" ingest "$(calc "$bytes / 1e6" 1)"
    record "upload 503s (concurrency)" ingest "$(metric_in "$dir/metrics.txt" 'packhunt_upload_rejections_total{reason="concurrency"}')"
}

run_p3() {
    local n=${1:-${N:-1000}} r
    UPLOAD_BYTES=${UPLOAD_BYTES:-2097152}
    P3_FSYNC=${P3_FSYNC:-true}
    INGEST_TIMEOUT=${INGEST_TIMEOUT:-900}
    DD_MB=${DD_MB:-1024}
    KEEP_DATA=${KEEP_DATA:-0}
    # Empty = the frontend's default (2 x cores x 8 permits), which sheds a burst of 1,000
    # agents' simultaneous uploads with 503 + Retry-After; 256 measures ingest itself.
    P3_CONCURRENCY=${P3_CONCURRENCY-}
    log "p3: $n agents x $UPLOAD_BYTES bytes (upload scenario) vs dd ${DD_MB} MiB append+fdatasync, alternating; datastore.fsync_documents = $P3_FSYNC; limits.concurrency = ${P3_CONCURRENCY:-default}"
    for ((r = 1; r <= REPEATS; r++)); do
        # dd before and after: the one after finds the page cache the ingest left (a
        # direct-writing ingest leaves it clean and dd then runs faster), the one before
        # whatever came earlier; both are reported.
        log "p3 dd-before r$r on $(df --output=source,fstype "$OUT" | tail -1 | tr -s ' ')"
        record "ingest MB/s (result bytes, first create -> last finish)" dd-before "$(dd_rate "$OUT" "$DD_MB")"
        p3_ingest "$n" "$r"
        log "p3 dd r$r on $(df --output=source,fstype "$P3_DIR/datastore" | tail -1 | tr -s ' ')"
        record "ingest MB/s (result bytes, first create -> last finish)" dd "$(dd_rate "$P3_DIR/datastore" "$DD_MB")"
        [[ $KEEP_DATA == 1 ]] || rm -rf "$P3_DIR/datastore"
    done
    ratio "ingest / dd" "ingest MB/s (result bytes, first create -> last finish)" ingest "ingest MB/s (result bytes, first create -> last finish)" dd
    ratio "ingest / dd-before" "ingest MB/s (result bytes, first create -> last finish)" ingest "ingest MB/s (result bytes, first create -> last finish)" dd-before
    print_table "p3: result ingest vs the datastore disk's sequential append, $n agents ($OUT)"
}

# ---------------------------------------------------------------- p4 -----------------
# thread_sched PID PREFIX: "run_delay_ns timeslices" of PID's favoured thread whose name
# starts with PREFIX (/proc schedstat: time spent runnable but waiting for a CPU, and times
# run). Favoured = niced or real-time: the executor thread, not its blocking pool, which
# shares the name.
thread_sched() {
    local t delay=0 slices=0 x y stat f
    for t in /proc/"$1"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == "$2"* ]] || continue
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        read -ra f <<<"${stat##*) }"
        # f[0] is field 3 (state): nice is field 19, policy field 41.
        [[ ${f[16]} != 0 || ${f[38]} != 0 ]] || continue
        read -r _ x y <"$t/schedstat" || continue
        delay=$((delay + x)) slices=$((slices + y))
    done
    echo "$delay $slices"
}

# read_p99_between BEFORE AFTER (metrics files): upper bound (ms) of the histogram bucket
# holding the 99th percentile of GET handling inside the frontend between the two.
read_p99_between() {
    awk '
        FNR == 1 { file++ }
        /^packhunt_api_request_duration_seconds_bucket\{kind="read",le="/ {
            match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
            if (file == 1) before[le] = $2; else { after[le] = $2; order[++n] = le }
        }
        END {
            total = after["+Inf"] - before["+Inf"]
            if (total <= 0) { print "-"; exit }
            for (i = 1; i <= n; i++) if (after[order[i]] - before[order[i]] >= 0.99 * total) {
                if (order[i] == "+Inf") print "inf"; else printf "%g\n", order[i] * 1000
                exit
            }
        }' "$1" "$2"
}

p4_probe() {   # p4_probe DIR NAME -> records the probe's p50/p99 for arm $ARM
    local dir=$1 name=$2 a b d s0 s1
    a=$(cpu_snap "$FE_PID")
    s0=$(thread_sched "$FE_PID" priority)
    metrics_to "$dir/$name-metrics-before.txt"
    # The probe stands for an operator's browser on another machine: unpinned and niced
    # above the fleet's loadgen, or it measures its own wait for loadgen's core (a steady
    # ~30 ms p99 whatever the frontend did).
    # shellcheck disable=SC2046
    LOADGEN_CPUS="" LOADGEN_NICE=${PROBE_NICE:--10} start_loadgen "$dir" "$name" $((PROBE_S + 60)) --clients 0 \
        --duration-s "$PROBE_S" --probe-rate-per-second "$PROBE_RATE" $(api_args) $(probe_path_args)
    wait_loadgen_exit $((PROBE_S + 60)) || stop_loadgen
    b=$(cpu_snap "$FE_PID")
    s1=$(thread_sched "$FE_PID" priority)
    metrics_to "$dir/$name-metrics-after.txt"
    d=$(cpu_delta "$a" "$b")
    echo "p4 $ARM probe cpu_s wall_s ticks_s: $d; priority thread run_delay_ns slices: $s0 -> $s1" >>"$OUT/run.log"
    # How long the GUI/API thread waited for a CPU each time it was woken (average).
    record "priority thread: wait for a CPU per run (µs, mean)" "$ARM" \
        "$(awk -v a="$s0" -v b="$s1" 'BEGIN { split(a, x, " "); split(b, y, " "); n = y[2] - x[2]; if (n <= 0) print "-"; else printf "%.1f", (y[1] - x[1]) / n / 1000 }')"
    record "API probe p50 (ms)" "$ARM" "$(rep '.api_latency.p50_us / 1000' "$dir/$name.json")"
    record "API probe p99 (ms)" "$ARM" "$(rep '.api_latency.p99_us / 1000' "$dir/$name.json")"
    # The same requests as the frontend's handler saw them (headers parsed -> answer built).
    record "frontend's own GET handling p99, bucket bound (ms)" "$ARM" "$(read_p99_between "$dir/$name-metrics-before.txt" "$dir/$name-metrics-after.txt")"
    record "probe requests" "$ARM" "$(rep .api_latency.count "$dir/$name.json")"
    local path label
    for path in $PROBE_PATHS_RESOLVED; do
        # The query says which search it is; a results page's ids change from run to run.
        label=$(sed -E 's#/clients/C\.[0-9a-f]+/collections/F\.[0-9A-F]+/results\?.*#/clients/{id}/collections/{flow}/results#' <<<"$path")
        record "API p99 GET $label (ms)" "$ARM" "$(rep ".api_latency_by_path[\"$path\"].p99_us / 1000" "$dir/$name.json")"
    done
    record "frontend CPU-s/s during probe" "$ARM" "$(calc "${d%% *} / $(echo "$d" | cut -d' ' -f2)" 2)"
}

# The GUI's own calls (PROBE_PATHS, space separated) instead of the default probe path.
# `{results}` stands for one finished collection's results page: a one-agent loadgen
# (hostname results-0) is started and collected from before the probe.
probe_path_args() {
    local p
    for p in $PROBE_PATHS_RESOLVED; do printf -- '--probe-path %s ' "$p"; done
}
seed_clients() {   # seed_clients DIR: SEED_CLIENTS offline clients in the datastore, before start
    ((${SEED_CLIENTS:-0} > 0)) || return 0
    python3 "$ROOT/benches/seed_clients.py" "$1/datastore" "$SEED_CLIENTS" 2>>"$OUT/run.log"
}
wait_index() {   # wait_index: until the master's client index lists the seeded fleet
    local i total
    ((${SEED_CLIENTS:-0} > 0)) || return 0
    for ((i = 0; i < 600; i++)); do
        total=$(api "/api/v1/clients?limit=1" | jq -r 'if .complete == false then -1 else .total end' 2>/dev/null || echo -1)
        ((total >= SEED_CLIENTS)) && { log "client index: $total clients"; return 0; }
        sleep 0.5
    done
    log "client index: not complete after 300 s"
}
resolve_probe_paths() {   # resolve_probe_paths DIR: sets PROBE_PATHS_RESOLVED (starts the results agent)
    local dir=$1 keep_pid=${LG_PID:-} keep_err=${LG_ERR:-} id flow i state page
    PROBE_PATHS_RESOLVED=${PROBE_PATHS:-}
    RESULTS_LG_PID=""
    [[ $PROBE_PATHS_RESOLVED == *"{results}"* ]] || return 0
    # shellcheck disable=SC2046
    start_loadgen "$dir" results-agent 3600 --clients 1 --hostname-prefix results- --duration-s 3600 \
        --probe-rate-per-second 0
    RESULTS_LG_PID=$LG_PID
    LG_PID=$keep_pid LG_ERR=$keep_err
    for ((i = 0; i < 120; i++)); do
        id=$(api "/api/v1/clients?search=results-0&connected=true&limit=1" | jq -r '.items[0].client_id // empty' 2>/dev/null)
        [[ -n $id ]] && break
        sleep 0.5
    done
    flow=$(api_post "/api/v1/clients/$id/collections" '{"artifacts":["Linux.Sys.Pslist"]}' | jq -r .flow_id)
    for ((i = 0; i < 120; i++)); do
        state=$(api "/api/v1/clients/$id/collections/$flow" | jq -r .state 2>/dev/null)
        [[ $state == finished ]] && break
        sleep 0.5
    done
    log "results page for the probe: client $id flow $flow ($state)"
    page="/api/v1/clients/$id/collections/$flow/results?artifact=Linux.Sys.Pslist&start_row=0&rows=100"
    PROBE_PATHS_RESOLVED=${PROBE_PATHS_RESOLVED//"{results}"/"$page"}
}
stop_results_agent() {
    local keep_pid=${LG_PID:-}
    [[ -n ${RESULTS_LG_PID:-} ]] || return 0
    LG_PID=$RESULTS_LG_PID
    stop_loadgen
    LG_PID=$keep_pid
}

p4_one() {   # p4_one LOAD(idle|loaded) PRIORITY N REPEAT
    local load=$1 prio=$2 n=$3 r=$4 dir=$OUT/p4-$1-$2-$4 fleet_lg u0 u1 s0
    ARM=$load-$prio
    deploy "$dir"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    set_key "$dir" gui priority "\"$prio\""
    # P4 is about CPU scheduling: with fsyncs the uploads wait on the disk and leave the
    # shards idle (0.33 CPU-s/s measured), so by default the load is the CPU-bound kind.
    set_key "$dir" datastore fsync_documents "$P4_FSYNC"
    # The default 32 upload permits shed a 15,000-agent upload storm with 503s and leave the
    # shards half idle (0.55 CPU-s/s measured); P4 wants them saturated.
    put_key "$dir" limits concurrency "$P4_CONCURRENCY"
    seed_clients "$dir"
    start_frontend "$dir"
    wait_index
    resolve_probe_paths "$dir"
    if [[ $load == loaded ]]; then
        # shellcheck disable=SC2046
        fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + 1800)) --scenario upload \
            --upload-bytes-per-agent "$UPLOAD_BYTES" --probe-rate-per-second 0 $(api_args) || true
        fleet_lg=$LG_PID
        # loadgen schedules one collection per agent through the API, one POST at a time,
        # while earlier agents already upload: probe as soon as uploads flow, and record
        # how much scheduling (itself API work) overlapped the probe.
        wait_progress tasks "$LOAD_TASKS" "$SCHEDULE_TIMEOUT" || true
        sleep "$LOAD_WARMUP_S"
        u0=$(metric packhunt_upload_bytes_total)
        s0=$(metric 'packhunt_flow_transitions_total{state="scheduled"}')
        p4_probe "$dir" probe
        u1=$(metric packhunt_upload_bytes_total)
        record "collections scheduled (API POSTs) during probe" "$ARM" "$(($(metric 'packhunt_flow_transitions_total{state="scheduled"}') - s0))"
        record "agent upload MB/s during probe" "$ARM" "$(calc "($u1 - $u0) / 1e6 / $PROBE_S" 1)"
        record "flows finished when probe ended (of $n; < n = still loaded)" "$ARM" "$(metric 'packhunt_flow_transitions_total{state="finished"}')"
        record "upload 503s (concurrency) until the probe ended" "$ARM" "$(metric 'packhunt_upload_rejections_total{reason="concurrency"}')"
        LG_PID=$fleet_lg
        stop_loadgen
    else
        p4_probe "$dir" probe
    fi
    stop_results_agent
    stop_frontend
    [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$dir/datastore"
}

run_p4() {
    local n=${1:-${N:-15000}} r prio load
    PROBE_S=${PROBE_S:-30}
    P4_FSYNC=${P4_FSYNC:-false}
    P4_CONCURRENCY=${P4_CONCURRENCY:-256}
    PROBE_RATE=${PROBE_RATE:-20}
    UPLOAD_BYTES=${UPLOAD_BYTES:-4194304}
    LOAD_WARMUP_S=${LOAD_WARMUP_S:-3}
    SCHEDULE_TIMEOUT=${SCHEDULE_TIMEOUT:-600}
    LOAD_TASKS=${LOAD_TASKS:-20}
    P4_PRIOS=${P4_PRIOS:-executor shared}
    log "p4: API probe ${PROBE_RATE}/s for ${PROBE_S}s: idle vs $n uploading agents, gui.priority: $P4_PRIOS; datastore.fsync_documents = $P4_FSYNC; limits.concurrency = $P4_CONCURRENCY"
    for ((r = 1; r <= REPEATS; r++)); do
        for prio in $P4_PRIOS; do
            for load in idle loaded; do p4_one "$load" "$prio" "$n" "$r"; done
        done
    done
    for prio in $P4_PRIOS; do
        ratio "p50 loaded / idle ($prio)" "API probe p50 (ms)" "loaded-$prio" "API probe p50 (ms)" "idle-$prio"
        ratio "p99 loaded / idle ($prio)" "API probe p99 (ms)" "loaded-$prio" "API probe p99 (ms)" "idle-$prio"
    done
    ratio "p50 shared / executor, loaded" "API probe p50 (ms)" loaded-shared "API probe p50 (ms)" loaded-executor
    ratio "p99 shared / executor, loaded" "API probe p99 (ms)" loaded-shared "API probe p99 (ms)" loaded-executor
    ratio "p99 executor / realtime, loaded" "API probe p99 (ms)" loaded-executor "API probe p99 (ms)" loaded-realtime
    print_table "p4: GUI/API latency probe, idle vs $n uploading agents ($OUT)"
}

# ---------------------------------------------------------------- p5 -----------------
# One deployment per repeat: a master and MINIONS minions sharing its datastore folder and
# server.config.toml, one loadgen fleet whose agents each pick a random frontend from the
# generated client.config.toml (all three URLs), and loadgen's tasking scenario scheduling
# through the master's API. A task for an agent on the master goes API -> master shard; one
# for an agent on a minion goes API -> master's replication thread -> gRPC stream (mTLS) ->
# minion's replication thread -> minion hub -> minion shard. loadgen files each task's latency under the frontend the
# agent was connected to when it arrived (task_latency_by_frontend), so both arms come from
# the same run, the same scheduler and the same moments: "same" = agents on the master,
# "cross" = agents on any minion (their histograms merged exactly by loadgen).
#
# SHARDS=1 for every frontend, as in p1-fleet: the three agent shards share cpu 0 and
# loadgen has cpu 1. With one shard per frontend, a same-frontend task never crosses a
# shard inside the frontend either, so the difference between the arms is the
# frontend-to-frontend hop alone; one shard per core (the generated 0) would put six
# pinned shards and loadgen on two cores and mix an intra-frontend shard hop into both
# arms. 5,000 agents per frontend is a quarter of what one shard holds (P1).

p5_one() {   # p5_one N REPEAT
    local n=$1 r=$2 dir=$OUT/p5-$2 rp fe=() node k arm same cross_urls=() drops=0 f
    local lg t0 wall box0 box1 lg0 lg1 fe0 fe1 wait0 wait1
    deploy_cluster "$dir" "$MINIONS"
    set_key "$dir" frontend shards "${SHARDS:-1}"
    start_frontend "$dir"
    fe+=("$FE_PID")
    for node in "${MINION_NODES[@]}"; do
        start_minion "$dir" "$node"
        fe+=("$FE_PID")
    done
    wait_frontends_up $((MINIONS + 1)) 60 || true
    # shellcheck disable=SC2046
    fleet_up "$dir" tasking "$n" $((CONNECT_TIMEOUT + 900)) --scenario tasking \
        --task-rate-per-second "$TASK_RATE" --probe-rate-per-second 0 $(api_args) || true
    api /api/v1/frontends >"$dir/frontends.json" || true
    # Where the box's CPU went while tasks flowed, and how long the frontends waited for a
    # CPU: the box is shared, so each repeat's tail is read against what else ran.
    lg=$(loadgen_pid)
    t0=$(now_ms) box0=$(box_busy_ticks) lg0=$(cpu_ns "$lg") fe0=0 wait0=()
    for f in "${fe[@]}"; do fe0=$((fe0 + $(cpu_ns "$f"))); wait0+=("$(run_wait_ns "$f")"); done
    wait_progress tasks "$TASKS" $((TASKS * 4 / ${TASK_RATE%.*} + 120)) || true
    wall=$(ms_to_s "$t0" "$(now_ms)") box1=$(box_busy_ticks) lg1=$(cpu_ns "$lg") fe1=0 wait1=()
    for f in "${fe[@]}"; do fe1=$((fe1 + $(cpu_ns "$f"))); wait1+=("$(run_wait_ns "$f")"); done
    stop_loadgen
    metrics_to "$dir/metrics-master.txt"
    for ((k = 0; k < MINIONS; k++)); do metrics_at "${MINION_METRICS_PORTS[k]}" "$dir/metrics-minion-$((k + 1)).txt"; done
    for ((k = ${#fe[@]} - 1; k >= 0; k--)); do FE_PID=${fe[k]}; stop_frontend; done
    [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$dir/datastore"

    rp=$dir/tasking.json
    same=https://$MASTER_NODE/
    for node in "${MINION_NODES[@]}"; do cross_urls+=(--frontend "https://$node/"); done
    "$LOADGEN" --config "$dir/client.config.toml" --task-latency-of "$rp" --frontend "$same" >"$dir/latency-same.json" 2>>"$OUT/run.log" ||
        echo '{}' >"$dir/latency-same.json"
    "$LOADGEN" --config "$dir/client.config.toml" --task-latency-of "$rp" "${cross_urls[@]}" >"$dir/latency-cross.json" 2>>"$OUT/run.log" ||
        echo '{}' >"$dir/latency-cross.json"
    for arm in same cross; do
        f=$dir/latency-$arm.json
        record "task latency p50 (ms)" "$arm" "$(rep '.p50_us / 1000' "$f")"
        record "task latency p99 (ms)" "$arm" "$(rep '.p99_us / 1000' "$f")"
        record "task latency max (ms)" "$arm" "$(rep '.max_us / 1000' "$f")"
        record "tasks received" "$arm" "$(rep '.count' "$f")"
    done
    for ((k = 0; k < MINIONS; k++)); do
        record "task latency p99 (ms)" "minion-$((k + 1))" "$(rep ".task_latency_by_frontend[\"https://${MINION_NODES[k]}/\"].p99_us / 1000" "$rp")"
    done
    record "p99 cross - same (ms)" this-repeat "$(jq -rn --slurpfile a "$dir/latency-cross.json" --slurpfile b "$dir/latency-same.json" \
        '($a[0].p99_us - $b[0].p99_us) / 1000' 2>/dev/null || echo '?')"
    record "agents connected, master API" same "$(jq --arg m "$MASTER_NODE" '[.items[] | select(.name == $m) | .connected_clients] | add' "$dir/frontends.json" 2>/dev/null || echo '?')"
    record "agents connected, master API" cross "$(jq --arg m "$MASTER_NODE" '[.items[] | select(.name != $m) | .connected_clients] | add' "$dir/frontends.json" 2>/dev/null || echo '?')"
    record "tasks received / scheduled" all "$(rep '"\(.tasks_received)/\(.collections_scheduled)"' "$rp")"
    record "time to connect all (s)" all "$RAMP_S"
    for f in "$dir"/metrics-*.txt; do
        drops=$((drops + $(metric_total_in "$f" packhunt_replication_dropped_total) + $(metric_total_in "$f" packhunt_notifications_dropped_total)))
    done
    record "replication + notification drops, all frontends" all "$drops"
    # What targeting saves: every message the master queued on its minions' links (work,
    # cancels, watched sets, keepalives), per collection scheduled over the whole run.
    record "master replication messages sent / task" all "$(calc "$(metric_total_in "$dir/metrics-master.txt" packhunt_replication_sent_total) / $(rep '.collections_scheduled' "$rp")" 2)"
    record "tasking window (s)" all "$wall"
    record "CPU-s/s while tasking (of $(nproc)): whole box" all "$(calc "($box1 - $box0) / $CLK_TCK / $wall")"
    record "CPU-s/s while tasking: $((MINIONS + 1)) frontends" all "$(calc "($fe1 - $fe0) / 1e9 / $wall")"
    record "CPU-s/s while tasking: loadgen" all "$(calc "($lg1 - $lg0) / 1e9 / $wall")"
    record "CPU-s/s while tasking: everything else on the box" all \
        "$(calc "($box1 - $box0) / $CLK_TCK / $wall - ($fe1 - $fe0 + $lg1 - $lg0) / 1e9 / $wall")"
    for ((k = 0; k < ${#fe[@]}; k++)); do
        record "run-queue wait while tasking, all threads (ms/s)" "$( ((k == 0)) && echo same || echo "minion-$k")" \
            "$(calc "(${wait1[k]} - ${wait0[k]}) / 1e6 / $wall" 1)"
    done
    record "tasks pushed by minions" all "$(cat "$dir"/metrics-minion-*.txt | awk '$1 == "packhunt_tasks_pushed_total" { s += $2 } END { print s + 0 }')"
}

run_p5() {
    local n=${1:-${N:-15000}} r
    MINIONS=${MINIONS:-2}
    # ~1/3 of the tasks land on the master: 1,800 give each arm's p99 hundreds of samples.
    TASKS=${TASKS:-1800}
    TASK_RATE=${TASK_RATE:-20}
    log "p5: master + $MINIONS minions, $n agents over all, $TASKS tasks at $TASK_RATE/s through the master; shards ${SHARDS:-1} each"
    for ((r = 1; r <= REPEATS; r++)); do p5_one "$n" "$r"; done
    ratio "p50 cross / same" "task latency p50 (ms)" cross "task latency p50 (ms)" same
    ratio "p99 cross / same" "task latency p99 (ms)" cross "task latency p99 (ms)" same
    difference "p50 cross - same (ms, difference of medians)" "task latency p50 (ms)" cross "task latency p50 (ms)" same
    difference "p99 cross - same (ms, difference of medians)" "task latency p99 (ms)" cross "task latency p99 (ms)" same
    print_table "p5: task delivery latency through the master (same) vs through a minion (cross), $n agents on $((MINIONS + 1)) frontends ($OUT)"
}

# ---------------------------------------------------------------- p6 -----------------
FIG_CONN="server CPU per connection (us)"

SOURCE_REFUSALS=packhunt_agentport_source_handshakes_refused_total

# p6_storm KIND(resumed|full) N IDLE_CPU_S_PER_S: every agent reconnects at once
p6_storm() {
    local kind=$1 n=$2 idle=$3 sig=USR1 r0 t0 a b d cpu wall h0 h1 s0 s1
    [[ $kind == full ]] && sig=USR2
    r0=$(progress reconnects)
    t0=$(progress tickets)
    h0=$(metric 'packhunt_connection_refusals_total{reason="handshake_timeout"}')
    s0=$(metric "$SOURCE_REFUSALS")
    sleep 1
    a=$(cpu_snap "$FE_PID")
    kill -"$sig" "$(loadgen_pid)"
    wait_progress reconnects $((r0 + n)) "$STORM_TIMEOUT" || true
    b=$(cpu_snap "$FE_PID")
    d=$(cpu_delta "$a" "$b")
    read -r cpu wall _ <<<"$d"
    echo "p6 storm-$kind cpu_s wall_s ticks_s: $d" >>"$OUT/run.log"
    h1=$(metric 'packhunt_connection_refusals_total{reason="handshake_timeout"}')
    s1=$(metric "$SOURCE_REFUSALS")
    record "$FIG_CONN" "storm-$kind" "$(calc "($cpu - $idle * $wall) * 1e6 / $n" 1)"
    record "storm: reconnects / tickets offered" "storm-$kind" "$(($(progress reconnects) - r0))/$(($(progress tickets) - t0))"
    record "storm: seconds to reconnect all" "storm-$kind" "$wall"
    record "storm: handshake timeouts" "storm-$kind" "$((h1 - h0))"
    # Closed at accept because their source address held the most handshakes in flight
    # (HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT); each is retried, and its cost is in the
    # storm's CPU.
    record "storm: source refusals" "storm-$kind" "$(calc "$s1 - $s0" 0)"
}

# p6_bare KIND(full|resumed) N REPEAT: the baseline. A bare rustls server on a glommio
# socket (loadgen --bare-tls-server: the frontend's agent-port TLS config and handshake
# permits, accept and close included, nothing above TLS) pinned to the shard's cpu, N
# connections to it from `loadgen --bare-tls-connect` on LOADGEN_CPUS. The server's CPU
# over the client's run, less its idle CPU, per connection: as p6_storm measures the
# frontend. Resumed: each client worker keeps its tickets, so all but its first
# connection resume; those first ones (BARE_CONCURRENCY of N, a fifth of a 300-connection
# run) are taken out at this round's bare-full price, so the figure is per resumed
# connection, as every storm-resumed reconnect is (run.log keeps the raw figure).
p6_bare() {
    local kind=$1 n=$2 r=$3 dir=$P6_DIR port pid srv cl i a0 a b d cpu wall idle pin=() resumed=()
    local cpu_us hs res full_us
    port=$(free_port)
    srv=$dir/bare-$kind-$r.server
    cl=$dir/bare-$kind-$r.client.json
    [[ -n $LOADGEN_CPUS ]] && pin=(taskset -c "$LOADGEN_CPUS")
    [[ $kind == resumed ]] && resumed=(--bare-tls-resumed)
    # --bare-tls-seconds is a backstop only: the server is stopped with SIGTERM below.
    taskset -c "$HS_CPU" "$LOADGEN" --bare-tls-server "127.0.0.1:$port" \
        --server-config "$dir/server.config.toml" --bare-tls-seconds $((STORM_TIMEOUT + 60)) \
        >"$srv.json" 2>"$srv.err" &
    pid=$!
    ALL_LG_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        grep -q listening "$srv.err" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q listening "$srv.err" 2>/dev/null || { log "bare server ($kind) did not start:"; tail -5 "$srv.err" >&2; return 1; }
    sleep 0.5
    a0=$(cpu_snap "$pid")
    sleep 1
    a=$(cpu_snap "$pid")
    read -r cpu wall _ <<<"$(cpu_delta "$a0" "$a")"
    idle=$(calc "$cpu / $wall" 4)
    timeout --signal=INT --kill-after=30 "$STORM_TIMEOUT" "${pin[@]}" "$LOADGEN" \
        --config "$dir/client.config.toml" --bare-tls-connect "$n" --bare-tls-target "127.0.0.1:$port" \
        --bare-tls-concurrency "$BARE_CONCURRENCY" --source-ips "$P6_SOURCES" "${resumed[@]}" \
        >"$cl" 2>>"$OUT/run.log" || log "bare client ($kind) failed: see $OUT/run.log"
    b=$(cpu_snap "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || log "bare server ($kind) exited with $?: $(tail -1 "$srv.err")"
    d=$(cpu_delta "$a" "$b")
    read -r cpu wall _ <<<"$d"
    cpu_us=$(calc "($cpu - $idle * $wall) * 1e6" 0)
    echo "p6 bare-$kind r$r cpu_s wall_s ticks_s: $d (idle $idle CPU-s/s; raw $(calc "$cpu_us / $n" 1) us per connection)" >>"$OUT/run.log"
    if [[ $kind == full ]]; then
        record "$FIG_CONN" bare-full "$(calc "$cpu_us / $n" 1)"
    else
        hs=$(rep '.handshakes_completed' "$srv.json" 2>/dev/null || echo 0)
        res=$(rep '.handshakes_resumed' "$srv.json" 2>/dev/null || echo 0)
        full_us=$(awk -F'\t' -v f="$FIG_CONN" '$1 == f && $2 == "bare-full" { v = $3 } END { print v + 0 }' "$RESULTS")
        if ((res > 0)); then
            record "$FIG_CONN" bare-resumed "$(calc "($cpu_us - ($hs - $res) * $full_us) / $res" 1)"
        else
            record "$FIG_CONN" bare-resumed -
        fi
        record "bare: full handshakes taken out (a worker's first)" bare-resumed "$((hs - res))"
    fi
    record "bare: server handshakes / resumed / failures" "bare-$kind" \
        "$(rep '"\(.handshakes_completed)/\(.handshakes_resumed)/\(.handshake_failures)"' "$srv.json" 2>/dev/null || echo '?')"
    record "bare: client handshakes / resumed / errors" "bare-$kind" \
        "$(rep '"\(.handshakes)/\(.resumed)/\(.errors)"' "$cl" 2>/dev/null || echo '?')"
    record "bare: seconds for all" "bare-$kind" "$wall"
    record "bare: server cpu (check: $HS_CPU)" "bare-$kind" "$(rep .cpu "$srv.json" 2>/dev/null || echo '?')"
}

p6_round() {   # p6_round N REPEAT: ramp, storms (resumed, full), in-memory handshakes, bare server
    local n=$1 r=$2 dir=$P6_DIR a b d cpu wall idle lg
    a=$(cpu_snap "$FE_PID")
    fleet_up "$dir" "fleet-$r" "$n" $((CONNECT_TIMEOUT + 1800)) --source-ips "$P6_SOURCES" || true
    b=$(cpu_snap "$FE_PID")
    d=$(cpu_delta "$a" "$b")
    echo "p6 ramp r$r cpu_s wall_s ticks_s: $d" >>"$OUT/run.log"
    record "$FIG_CONN" ramp-new-agent "$(calc "${d%% *} * 1e6 / $n" 1)"
    record "ramp: seconds to connect all" ramp-new-agent "$RAMP_S"
    sleep 2
    # The frontend's own CPU with the fleet connected and quiet, taken out of storm windows.
    a=$(cpu_snap "$FE_PID")
    sleep "$IDLE_S"
    b=$(cpu_snap "$FE_PID")
    read -r cpu wall _ <<<"$(cpu_delta "$a" "$b")"
    idle=$(calc "$cpu / $wall" 4)
    record "frontend idle CPU-s/s, fleet connected" ramp-new-agent "$idle"
    p6_storm resumed "$n" "$idle"
    p6_storm full "$n" "$idle"
    stop_loadgen
    lg=$dir/handshake-$r.json
    taskset -c "$HS_CPU" "$LOADGEN" --config "$dir/client.config.toml" --server-config "$dir/server.config.toml" \
        --measure-handshake "$HANDSHAKES" >"$lg" 2>>"$OUT/run.log"
    record "$FIG_CONN" inmem-full "$(rep '.full.server_cpu_us_mean * 10 | round / 10' "$lg")"
    record "$FIG_CONN" inmem-resumed "$(rep '.resumed.server_cpu_us_mean * 10 | round / 10' "$lg")"
    record "in-memory: server saw resumed / handshakes" inmem-resumed "$(rep '"\(.resumed.server_saw_resumed)/\(.resumed.count)"' "$lg")"
    record "in-memory p99 (us)" inmem-full "$(rep '.full.server_cpu_us_p99 | round' "$lg")"
    record "in-memory p99 (us)" inmem-resumed "$(rep '.resumed.server_cpu_us_p99 | round' "$lg")"
    p6_bare full "$n" "$r" || true
    p6_bare resumed "$n" "$r" || true
}

run_p6() {
    local n=${1:-${N:-1000}} r resumed_metrics
    HANDSHAKES=${HANDSHAKES:-2000}
    HS_CPU=${HS_CPU:-0}
    IDLE_S=${IDLE_S:-3}
    STORM_TIMEOUT=${STORM_TIMEOUT:-300}
    # 16 sources x HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT (32) = 512 >= the shard's 256
    # handshake permits: a storm spread evenly stays under every source's cap.
    P6_SOURCES=${P6_SOURCES:-16}
    BARE_CONCURRENCY=${BARE_CONCURRENCY:-64}
    P6_DIR=$OUT/p6
    log "p6: $n agents per round (new fleet each round) from $P6_SOURCES source addresses, storms resumed / full; $HANDSHAKES in-memory handshakes per kind and a bare TLS server ($n connections per kind, $BARE_CONCURRENCY at once) on cpu $HS_CPU; shards ${SHARDS:-1}"
    deploy "$P6_DIR"
    set_key "$P6_DIR" frontend shards "${SHARDS:-1}"
    start_frontend "$P6_DIR"
    for ((r = 1; r <= REPEATS; r++)); do p6_round "$n" "$r"; done
    metrics_to "$P6_DIR/metrics.txt"
    stop_frontend
    record "frontend refusals over the run" all "$(refusals_in "$P6_DIR/metrics.txt" | tr ' ' _)"
    # Whether the server resumed is only visible client-side (tickets offered) unless
    # the frontend grows a counter for it.
    resumed_metrics=$(grep -o '^packhunt_[a-z_]*resum[a-z_]*' "$P6_DIR/metrics.txt" | sort -u | paste -sd, || true)
    record "frontend metrics about resumption" all "${resumed_metrics:-none}"
    ratio "storm full / bare full" "$FIG_CONN" storm-full "$FIG_CONN" bare-full
    ratio "storm resumed / bare resumed" "$FIG_CONN" storm-resumed "$FIG_CONN" bare-resumed
    ratio "bare resumed / bare full" "$FIG_CONN" bare-resumed "$FIG_CONN" bare-full
    ratio "bare full / in-memory full" "$FIG_CONN" bare-full "$FIG_CONN" inmem-full
    ratio "ramp (new agent) / in-memory full" "$FIG_CONN" ramp-new-agent "$FIG_CONN" inmem-full
    ratio "storm full / in-memory full" "$FIG_CONN" storm-full "$FIG_CONN" inmem-full
    ratio "storm resumed / in-memory resumed" "$FIG_CONN" storm-resumed "$FIG_CONN" inmem-resumed
    ratio "storm resumed / storm full" "$FIG_CONN" storm-resumed "$FIG_CONN" storm-full
    ratio "in-memory resumed / full" "$FIG_CONN" inmem-resumed "$FIG_CONN" inmem-full
    print_table "p6: frontend CPU per connection vs a bare rustls server and in-memory handshakes, $n agents ($OUT)"
}

# ---------------------------------------------------------------- hunts --------------
# hunt and p2-fleet: one frontend in the generated layout (a shard per core), a fleet of
# idle agents, one hunt over all of them (no condition). The hunt's own record on disk
# gives recruitment: each flow's request.json create_time_us is stamped when the recruiter
# takes the agent, so (participants - 1) / (last - first) is the rate it achieved and the
# last one against the hunt's start_time_ms (stamped by the start call) is the time to
# schedule everyone; status.json's finish_time_ms gives completion. loadgen's agents give
# the delivery side: task_latency (receive time - create_time_us, same clock) and the
# wall-clock time of the last task to arrive.

# facts_ready DIR N LIMIT_S: until every agent's info.json is on disk. The recruiter defers
# an agent without known facts by 1 s, so a hunt started before would measure the tail of
# the info.json writes instead of recruitment.
facts_ready() {
    local dir=$1 n=$2 limit=$3 start
    start=$(now_ms)
    while (($(info_docs "$dir") < n)); do
        if (($(now_ms) - start > limit * 1000)); then
            log "only $(info_docs "$dir") of $n agents' facts on disk after $limit s"
            return 1
        fi
        sleep 0.5
    done
}

hunt_create() {   # hunt_create ARTIFACT -> id of a new paused hunt over every agent
    api_post /api/v1/hunts "{\"artifacts\":[\"$1\"],\"condition\":{\"labels\":[],\"os\":\"\"},\"expires_ms\":0}" | jq -r .hunt_id
}

# probe_start DIR NAME / probe_stop: the GUI/API probe as p4 runs it (unpinned, niced
# above the fleet's loadgen: an operator's browser elsewhere) for an open-ended window.
# The fleet's LG_PID and LG_ERR stay as they were.
probe_start() {
    local keep_pid=$LG_PID keep_err=$LG_ERR
    # shellcheck disable=SC2046
    LOADGEN_CPUS="" LOADGEN_NICE=${PROBE_NICE:--10} start_loadgen "$1" "$2" $((PROBE_MAX_S + 60)) --clients 0 \
        --duration-s "$PROBE_MAX_S" --probe-rate-per-second "$PROBE_RATE" $(api_args)
    PROBE_PID=$LG_PID
    LG_PID=$keep_pid LG_ERR=$keep_err
}
probe_stop() {
    local keep_pid=$LG_PID
    LG_PID=$PROBE_PID
    stop_loadgen
    LG_PID=$keep_pid
}
probe_for() {   # probe_for DIR NAME SECONDS: a fixed-length probe, waited for
    local keep_pid=$LG_PID keep_err=$LG_ERR
    # shellcheck disable=SC2046
    LOADGEN_CPUS="" LOADGEN_NICE=${PROBE_NICE:--10} start_loadgen "$1" "$2" $(($3 + 60)) --clients 0 \
        --duration-s "$3" --probe-rate-per-second "$PROBE_RATE" $(api_args)
    wait_loadgen_exit $(($3 + 60)) || stop_loadgen
    LG_PID=$keep_pid LG_ERR=$keep_err
}

# record_hunt_disk ARM DIR HUNT START_MS N [UNTIL_MS]: figures from the hunt's record on
# disk; HUNT_ANSWERED_BY is how many first answers were written by UNTIL_MS.
record_hunt_disk() {
    local arm=$1 dir=$2 id=$3 start_ms=$4 n=$5 parts first last fin failed last_fin on_disk answered_by
    read -r parts first last fin failed last_fin on_disk answered_by <<<"$(hunt_disk_times "$dir" "$id" "${6:-0}")"
    echo "hunt $id on disk: participants $parts create_us $first..$last finished $fin failed $failed last_finish_ms $last_fin flows_on_disk $on_disk start_ms $start_ms" >>"$OUT/run.log"
    record "participants / agents" "$arm" "$parts/$n"
    record "participants whose flow is on disk (answered)" "$arm" "$on_disk"
    record "recruitment rate achieved (/s): (n-1) / (last - first create_time)" "$arm" \
        "$(calc "$last > $first ? ($on_disk - 1) / (($last - $first) / 1e6) : 0" 0)"
    record "time to schedule all (s): start -> last create_time" "$arm" "$(calc "($last / 1000 - $start_ms) / 1000" 2)"
    record "time to complete all (s): start -> last finish_time" "$arm" "$(calc "($last_fin - $start_ms) / 1000" 2)"
    record "flows finished / failed (status.json)" "$arm" "$fin/$failed"
    HUNT_LAST_CREATE_US=$last
    HUNT_ANSWERED_BY=$answered_by
}

# hunt_one RATE PRIORITY N REPEAT
hunt_one() {
    local rate=$1 prio=$2 n=$3 r=$4 arm=r$1-$2 dir=$OUT/hunt-r$1-$2-$4
    local id t0 start_ms st s c e p rss rss0 rss_max=0 hwm a b d fleet_lg rp rej0 rej1 bytes0 bytes1 box0 box1
    deploy "$dir"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    set_key "$dir" limits hunt_recruitment_per_second "$rate"
    set_key "$dir" gui priority "\"$prio\""
    set_key "$dir" datastore fsync_documents "$HUNT_FSYNC"
    start_frontend "$dir"
    fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + HUNT_TIMEOUT + 600)) --probe-rate-per-second 0 || true
    fleet_lg=$LG_PID
    facts_ready "$dir" "$n" 180 || true
    sleep "$SETTLE_S"
    probe_for "$dir" probe-idle "$PROBE_IDLE_S"
    id=$(hunt_create "$ARTIFACT")
    metrics_to "$dir/metrics-before.txt"
    rej0=$(metric_in "$dir/metrics-before.txt" 'packhunt_upload_rejections_total{reason="concurrency"}')
    bytes0=$(metric_in "$dir/metrics-before.txt" packhunt_result_bytes_written_total)
    rss0=$(status_kib "$FE_PID" VmRSS)
    reset_peak_rss "$FE_PID"
    probe_start "$dir" probe-hunt
    a=$(cpu_snap "$FE_PID")
    box0=$(box_busy_ticks)
    t0=$(now_ms)
    api_post "/api/v1/hunts/$id/start" >"$dir/start.json" || log "hunt $arm r$r: start POST: curl exit $?"
    printf 'ms_since_start\tscheduled\tcompleted\terrors\tpending\trss_kib\n' >"$dir/hunt-stats.tsv"
    while :; do
        st=$(api "/api/v1/hunts/$id")
        read -r s c e p <<<"$(jq -r '[.scheduled, .completed, .errors, .pending_recruitment] | @tsv' <<<"$st" 2>/dev/null || echo '0 0 0 0')"
        rss=$(status_kib "$FE_PID" VmRSS)
        ((rss > rss_max)) && rss_max=$rss
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(($(now_ms) - t0))" "$s" "$c" "$e" "$p" "$rss" >>"$dir/hunt-stats.tsv"
        ((${c:-0} + ${e:-0} >= n)) && break
        if (($(now_ms) - t0 > HUNT_TIMEOUT * 1000)); then
            log "hunt $arm r$r: $c completed, $e errors of $n after $HUNT_TIMEOUT s"
            break
        fi
        sleep 0.5
    done
    b=$(cpu_snap "$FE_PID")
    box1=$(box_busy_ticks)
    hwm=$(status_kib "$FE_PID" VmHWM)
    probe_stop
    d=$(cpu_delta "$a" "$b")
    echo "hunt $arm r$r cpu_s wall_s ticks_s: $d" >>"$OUT/run.log"
    api "/api/v1/hunts/$id" >"$dir/hunt.json"
    start_ms=$(jq -r .start_time_ms "$dir/hunt.json")
    LG_PID=$fleet_lg
    stop_loadgen
    metrics_to "$dir/metrics.txt"
    stop_frontend
    rej1=$(metric_in "$dir/metrics.txt" 'packhunt_upload_rejections_total{reason="concurrency"}')
    bytes1=$(metric_in "$dir/metrics.txt" packhunt_result_bytes_written_total)
    rp=$dir/fleet.json
    record "agent-side task latency p50 (ms)" "$arm" "$(rep '.task_latency.p50_us / 1000' "$rp")"
    record "agent-side task latency p99 (ms)" "$arm" "$(rep '.task_latency.p99_us / 1000' "$rp")"
    record "agent-side task latency max (ms)" "$arm" "$(rep '.task_latency.max_us / 1000' "$rp")"
    record "tasks received" "$arm" "$(rep .tasks_received "$rp")"
    record_hunt_disk "$arm" "$dir" "$id" "$start_ms" "$n"
    record "API probe p50 during the hunt (ms)" "$arm" "$(rep '.api_latency.p50_us / 1000' "$dir/probe-hunt.json")"
    record "API probe p99 during the hunt (ms)" "$arm" "$(rep '.api_latency.p99_us / 1000' "$dir/probe-hunt.json")"
    record "API probe max during the hunt (ms)" "$arm" "$(rep '.api_latency.max_us / 1000' "$dir/probe-hunt.json")"
    record "API probe requests during the hunt" "$arm" "$(rep .api_latency.count "$dir/probe-hunt.json")"
    record "API probe p99 before the hunt, fleet idle (ms)" "$arm" "$(rep '.api_latency.p99_us / 1000' "$dir/probe-idle.json")"
    record "frontend RSS before the hunt (MiB)" "$arm" "$(calc "$rss0 / 1024" 1)"
    record "frontend peak RSS during the hunt (MiB, VmHWM)" "$arm" "$(calc "$hwm / 1024" 1)"
    record "peak RSS - RSS before (MiB)" "$arm" "$(calc "($hwm - $rss0) / 1024" 1)"
    record "frontend CPU-s/s during the hunt (of $(nproc))" "$arm" "$(calc "${d%% *} / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "whole box CPU-s/s during the hunt (frontend, loadgen, neighbours)" "$arm" "$(calc "($box1 - $box0) / $CLK_TCK / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "upload 503s (concurrency) during the hunt" "$arm" "$((rej1 - rej0))"
    record "result MB written" "$arm" "$(calc "($bytes1 - $bytes0) / 1e6" 1)"
    record "time to connect all (s)" "$arm" "$RAMP_S"
    drop_datastore_later "$dir"
}

run_hunt() {
    local n=${1:-${N:-15000}} r arm
    HUNT_ARMS=${HUNT_ARMS:-"100:executor 1000:executor 1000:shared"}
    ARTIFACT=${ARTIFACT:-Linux.Sys.Pslist}
    HUNT_FSYNC=${HUNT_FSYNC:-true}
    PROBE_RATE=${PROBE_RATE:-50}
    PROBE_IDLE_S=${PROBE_IDLE_S:-10}
    SETTLE_S=${SETTLE_S:-3}
    HUNT_TIMEOUT=${HUNT_TIMEOUT:-$((n / 100 * 2 + 300))}
    PROBE_MAX_S=$((HUNT_TIMEOUT + 60))
    log "hunt: $ARTIFACT over $n agents, arms (rate:priority) $HUNT_ARMS; probe ${PROBE_RATE}/s; datastore.fsync_documents = $HUNT_FSYNC"
    for ((r = 1; r <= REPEATS; r++)); do
        for arm in $HUNT_ARMS; do hunt_one "${arm%%:*}" "${arm##*:}" "$n" "$r"; done
    done
    local p99="API probe p99 during the hunt (ms)" lat="agent-side task latency p99 (ms)" done_s="time to complete all (s): start -> last finish_time"
    ratio "probe p99, 1000/s shared / executor" "$p99" r1000-shared "$p99" r1000-executor
    ratio "probe p99, executor 1000/s / 100/s" "$p99" r1000-executor "$p99" r100-executor
    ratio "probe p99 during / before the hunt, 1000/s executor" "$p99" r1000-executor "API probe p99 before the hunt, fleet idle (ms)" r1000-executor
    ratio "probe p99 during / before the hunt, 1000/s shared" "$p99" r1000-shared "API probe p99 before the hunt, fleet idle (ms)" r1000-shared
    ratio "task latency p99, executor 1000/s / 100/s" "$lat" r1000-executor "$lat" r100-executor
    ratio "time to complete all, executor 100/s / 1000/s" "$done_s" r100-executor "$done_s" r1000-executor
    ratio "peak RSS, executor 1000/s / 100/s" "frontend peak RSS during the hunt (MiB, VmHWM)" r1000-executor "frontend peak RSS during the hunt (MiB, VmHWM)" r100-executor
    print_table "hunt: $ARTIFACT over $n agents, recruitment rate x GUI priority ($OUT)"
    drop_deferred_datastores
}

# ---------------------------------------------------------------- p2-fleet -----------
# P2's second half: one collection to every connected agent at once is a hunt with
# recruitment unthrottled (1,000,000/s: the token bucket's 0.1 s burst covers the fleet).
# Fan-out time = the last agent's receive time (loadgen, wall clock) - the hunt's
# start_time_ms (stamped by the start call before it writes the hunt document); both come
# from this host's clock. Generic.Client.Info (one row) so that the figure is delivery, not
# result ingest.
# p2f_trace_sample -> "tasks_pushed uploads_refused_for_concurrency", one /metrics read.
p2f_trace_sample() {
    api /metrics 2>/dev/null | awk '$1 == "packhunt_tasks_pushed_total" { p = $2 }
        $1 == "packhunt_upload_rejections_total{reason=\"concurrency\"}" { r = $2 } END { print p + 0, r + 0 }'
}

p2f_one() {   # p2f_one ARM(true|false|tmpfs, optionally @RING_DEPTH) N REPEAT
    local kind=${1%@*} depth="" n=$2 r=$3 arm dir=$OUT/p2f-$1-$3 id t_post tasks0 a b d start_ms rp first_us last_us st c e t0 perf_pid="" box0 box1
    [[ $1 == *@* ]] && depth=${1#*@}
    arm=fsync-$kind
    deploy "$dir"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    [[ -n $depth ]] && set_key "$dir" frontend io_ring_depth "$depth"
    set_key "$dir" limits hunt_recruitment_per_second 1000000
    # P2F_CONCURRENCY: upload permits (default: the frontend's), to see what the first
    # answers' 503s cost the fan-out.
    [[ -n ${P2F_CONCURRENCY:-} ]] && put_key "$dir" limits concurrency "$P2F_CONCURRENCY"
    if [[ $kind == tmpfs ]]; then
        # The same work without this box's disk and filesystem: what packhunt itself costs.
        arm=tmpfs
        datastore_at "$dir" "/dev/shm/$(basename "$OUT")-p2f-$r"
    else
        set_key "$dir" datastore fsync_documents "$kind"
    fi
    [[ -n $depth ]] && arm=$arm-ring$depth
    start_frontend "$dir"
    # P2F_COLLECT_MS: each agent holds its collection that long before answering, as a
    # real one takes time (0: loadgen answers at once, the answers' ingest inside the
    # fan-out's seconds).
    # P2F_ANSWER_NICE=N: loadgen's agents answer on threads at nice N, their connections
    # reading at the default priority (loadgen --answer-nice), as agents with CPUs of
    # their own would: one agent's answer does not hold up another's reading.
    fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + 900)) --probe-rate-per-second 0 --collect-ms "${P2F_COLLECT_MS:-0}" ${P2F_ANSWER_NICE:+--answer-nice "$P2F_ANSWER_NICE"} || true
    facts_ready "$dir" "$n" 180 || true
    sleep "$SETTLE_S"
    id=$(hunt_create "$P2F_ARTIFACT")
    tasks0=$(progress tasks)
    if [[ ${PERF:-0} == 1 ]]; then
        # PERF_ALL=1: the whole box (loadgen's agents share it), sorted by comm later.
        if [[ ${PERF_ALL:-0} == 1 ]]; then perf_who=(-a); else perf_who=(-p "$FE_PID"); fi
        perf record -F 999 -g "${perf_who[@]}" -o "$dir/perf.data" -- sleep "$PERF_S" >"$dir/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    # P2F_PUSH_TRACE=1: the server's tasks-pushed counter every ~50 ms (a curl each, on
    # the priority executor), to tell the frontend's delivery from loadgen's reading; beside
    # it the uploads refused for concurrency, the answers' work the frontend did meanwhile.
    local pushed0 refused0 trace_pid=""
    if [[ ${P2F_PUSH_TRACE:-0} == 1 ]]; then
        read -r pushed0 refused0 <<<"$(p2f_trace_sample)"
        (for _ in $(seq 1 160); do echo "$(now_ms) $(p2f_trace_sample)"; sleep 0.03; done) >"$dir/pushed.tsv" &
        trace_pid=$!
    fi
    a=$(cpu_snap "$FE_PID")
    box0=$(box_busy_ticks)
    t_post=$(now_ms)
    api_post "/api/v1/hunts/$id/start" >"$dir/start.json" || log "p2-fleet $arm r$r: start POST: curl exit $?"
    wait_progress tasks $((tasks0 + n)) "$FANOUT_TIMEOUT" || true
    b=$(cpu_snap "$FE_PID")
    box1=$(box_busy_ticks)
    d=$(cpu_delta "$a" "$b")
    echo "p2-fleet $arm r$r cpu_s wall_s ticks_s (start -> loadgen printed all tasks): $d" >>"$OUT/run.log"
    t0=$(now_ms)
    while :; do
        st=$(api "/api/v1/hunts/$id")
        read -r c e <<<"$(jq -r '[.completed, .errors] | @tsv' <<<"$st" 2>/dev/null || echo '0 0')"
        ((${c:-0} + ${e:-0} >= n || $(now_ms) - t0 > 180000)) && break
        sleep 0.5
    done
    [[ -n $perf_pid ]] && wait "$perf_pid" 2>/dev/null || true
    api "/api/v1/hunts/$id" >"$dir/hunt.json"
    start_ms=$(jq -r .start_time_ms "$dir/hunt.json")
    metrics_to "$dir/metrics.txt"
    stop_loadgen
    stop_frontend
    rp=$dir/fleet.json
    first_us=$(rep '.first_task_unix_us // 0' "$rp")
    last_us=$(rep '.last_task_unix_us // 0' "$rp")
    record_hunt_disk "$arm" "$dir" "$id" "$start_ms" "$n" "$((last_us / 1000))"
    record "fan-out (ms): start -> last agent has its task" "$arm" "$(calc "$last_us / 1000 - $start_ms" 0)"
    record "fan-out from the start POST sent (ms, curl included)" "$arm" "$(calc "$last_us / 1000 - $t_post" 0)"
    record "start -> first agent has its task (ms)" "$arm" "$(calc "$first_us / 1000 - $start_ms" 0)"
    # A recruit's create_time is stamped when its token is taken, before its queue entry is
    # written: with the facts in memory every token of an unthrottled hunt goes at once, and
    # the writes' end shows in the push trace (P2F_PUSH_TRACE=1), not here.
    record "start -> last token taken (ms, last create_time)" "$arm" "$(calc "$HUNT_LAST_CREATE_US / 1000 - $start_ms" 0)"
    record "last token taken -> last task arrived (ms)" "$arm" "$(calc "($last_us - $HUNT_LAST_CREATE_US) / 1000" 0)"
    record "within 2 s" "$arm" "$(calc "$last_us / 1000 - $start_ms <= 2000 ? 1 : 0" 0)"
    record "first answers written by then (flows started by the last task's arrival)" "$arm" "$HUNT_ANSWERED_BY"
    if [[ -n $trace_pid ]]; then
        wait "$trace_pid" 2>/dev/null || true
        # The first sample with every task pushed (the counter is the shards' pushes into
        # their streams, before TLS and the socket).
        local pushed_ms
        pushed_ms=$(awk -v want=$((pushed0 + n)) '$2 >= want { print $1; exit }' "$dir/pushed.tsv")
        record "start -> the server had pushed every task (ms, sampled ~50 ms)" "$arm" "$(calc "${pushed_ms:-0} - $start_ms" 0)"
        record "server pushed every task -> last agent has its task (ms)" "$arm" "$(calc "$last_us / 1000 - ${pushed_ms:-0}" 0)"
        record "upload 503s by the last task's arrival (sampled)" "$arm" \
            "$(awk -v until=$((last_us / 1000)) -v base="$refused0" '$1 <= until { r = $3 } END { print (r ? r - base : 0) }' "$dir/pushed.tsv")"
    fi
    record "agent-side task latency p50 (ms)" "$arm" "$(rep '.task_latency.p50_us / 1000' "$rp")"
    record "agent-side task latency p99 (ms)" "$arm" "$(rep '.task_latency.p99_us / 1000' "$rp")"
    record "agent-side task latency max (ms)" "$arm" "$(rep '.task_latency.max_us / 1000' "$rp")"
    record "tasks received / agents" "$arm" "$(rep .tasks_received "$rp")/$n"
    record "frontend CPU-s, start -> loadgen printed all tasks" "$arm" "$(calc "${d%% *}" 2)"
    record "whole box CPU-s/s in that window (frontend, loadgen, neighbours)" "$arm" "$(calc "($box1 - $box0) / $CLK_TCK / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "upload 503s (concurrency)" "$arm" "$(metric_in "$dir/metrics.txt" 'packhunt_upload_rejections_total{reason="concurrency"}')"
    record "agents connected (server)" "$arm" "$(metric_in "$dir/metrics.txt" packhunt_sessions_open)"
    record "time to connect all (s)" "$arm" "$RAMP_S"
    # First contact of a fresh fleet: facts the server refused (503) or timed out waiting
    # for (408), as the agents saw them.
    record "first contact: facts 503 / 408 (loadgen)" "$arm" "$(rep '"\(.facts_refused // 0)/\(.facts_timed_out // 0)"' "$rp")"
    record "first contact: facts written / refused (server)" "$arm" "$(metric_in "$dir/metrics.txt" 'packhunt_agent_facts_total{outcome="written"}')/$(metric_in "$dir/metrics.txt" 'packhunt_agent_facts_total{outcome="refused"}')"
    if [[ -n $perf_pid ]]; then
        perf report -i "$dir/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep "%" >"$dir/flat.txt" || true
        perf report -i "$dir/perf.data" --children --sort sym --stdio -g none 2>/dev/null | grep "%" >"$dir/children.txt" || true
        python3 "$ROOT/benches/perf_classify.py" "$dir/flat.txt" >"$dir/classified.md" || true
        log "p2-fleet $arm r$r profile: $dir/classified.md"
    fi
    drop_datastore_later "$dir"
}

run_p2_fleet() {
    local n=${1:-${N:-19000}} r kind
    P2F_ARTIFACT=${P2F_ARTIFACT:-Generic.Client.Info}
    P2F_ARMS=${P2F_ARMS:-"true false tmpfs"}
    SETTLE_S=${SETTLE_S:-3}
    FANOUT_TIMEOUT=${FANOUT_TIMEOUT:-300}
    PERF_S=${PERF_S:-8}
    log "p2-fleet: $P2F_ARTIFACT to $n agents by one unthrottled hunt; datastore.fsync_documents arms: $P2F_ARMS; PERF=${PERF:-0}"
    for ((r = 1; r <= REPEATS; r++)); do
        for kind in $P2F_ARMS; do p2f_one "$kind" "$n" "$r"; done
    done
    local f="fan-out (ms): start -> last agent has its task"
    ratio "fan-out fsync true / false" "$f" fsync-true "$f" fsync-false
    printf '%s\t%s\n' "fan-out / 2,000 ms target, fsync true" "$(calc "$(median_of "$f" fsync-true) / 2000" 3)" >>"$RATIOS"
    printf '%s\t%s\n' "fan-out / 2,000 ms target, fsync false" "$(calc "$(median_of "$f" fsync-false) / 2000" 3)" >>"$RATIOS"
    ratio "fan-out disk (fsync true) / tmpfs" "$f" fsync-true "$f" tmpfs
    ratio "fan-out fsync true, ring depth 128 / default" "$f" fsync-true-ring128 "$f" fsync-true
    ratio "frontend CPU-s, fsync true, ring depth 128 / default" "frontend CPU-s, start -> loadgen printed all tasks" fsync-true-ring128 "frontend CPU-s, start -> loadgen printed all tasks" fsync-true
    print_table "p2-fleet: one collection to $n agents (hunt, recruitment unthrottled) ($OUT)"
    drop_deferred_datastores
}

# ---------------------------------------------------------------- storm --------------
# A frontend dies under a connected fleet (kill -9) and is started again at once; every
# agent reconnects. Arms: the restarted frontend with the default load shedding
# (max_connections_per_second = 200, split over the shards) vs unlimited. The ramp before
# the kill is unshed in both arms (not what is measured); the restart reads the arm's
# limit. Generated layout (a shard per core), loadgen on cpu 1.
storm_one() {   # storm_one ARM(shed|unshed) N REPEAT
    local arm=$1 n=$2 r=$3 dir=$OUT/storm-$1-$3 limit=1000000 fe_old t_kill t_ready t_all r0 e0 a b d
    local rss_before hwm conn rc st box0 box1 p99
    [[ $arm == shed ]] && limit=$SHED_RATE
    deploy "$dir"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    start_frontend "$dir"
    fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + STORM_TIMEOUT + 600)) || true
    sleep "$SETTLE_S"
    rss_before=$(status_kib "$FE_PID" VmRSS)
    r0=$(progress reconnects)
    e0=$(progress errors)
    set_key "$dir" limits max_connections_per_second "$limit"
    fe_old=$FE_PID
    t_kill=$(now_ms)
    kill -KILL "$fe_old"
    wait "$fe_old" 2>/dev/null || true
    mv "$dir/frontend.out" "$dir/frontend-killed.out"
    mv "$dir/frontend.err" "$dir/frontend-killed.err"
    start_frontend "$dir"
    t_ready=$(now_ms)
    a=$(cpu_snap "$FE_PID")
    box0=$(box_busy_ticks)
    printf 'ms_since_kill\tconnected\treconnects\trss_kib\n' >"$dir/storm-series.tsv"
    st=ok
    while :; do
        conn=$(progress connected)
        rc=$(($(progress reconnects) - r0))
        printf '%s\t%s\t%s\t%s\n' "$(($(now_ms) - t_kill))" "$conn" "$rc" "$(status_kib "$FE_PID" VmRSS)" >>"$dir/storm-series.tsv"
        ((rc >= n && conn >= n)) && break
        if (($(now_ms) - t_kill > STORM_TIMEOUT * 1000)) || ! kill -0 "$LG_PID" 2>/dev/null; then
            st=miss
            log "storm $arm r$r: $rc of $n reconnected ($conn connected) after $STORM_TIMEOUT s"
            break
        fi
        sleep 0.2
    done
    t_all=$(now_ms)
    b=$(cpu_snap "$FE_PID")
    box1=$(box_busy_ticks)
    hwm=$(status_kib "$FE_PID" VmHWM)
    d=$(cpu_delta "$a" "$b")
    echo "storm $arm r$r cpu_s wall_s ticks_s (ready -> all reconnected): $d" >>"$OUT/run.log"
    sleep 2
    metrics_to "$dir/metrics.txt"
    record "time to reconnect all (s): kill -9 -> all connected" "$arm" "$([[ $st == ok ]] && ms_to_s "$t_kill" "$t_all" || echo miss)"
    record "time to reconnect all (s): restarted frontend ready -> all" "$arm" "$([[ $st == ok ]] && ms_to_s "$t_ready" "$t_all" || echo miss)"
    record "frontend down (s): kill -> ready" "$arm" "$(ms_to_s "$t_kill" "$t_ready")"
    # The tail is agents whose dead connection they noticed late (see tuning.md, storm).
    p99=$(awk -F'\t' -v n="$n" 'NR > 1 && $3 >= 0.99 * n { printf "%.2f", $1 / 1000; exit }' "$dir/storm-series.tsv")
    record "time to 99 % reconnected (s): kill -9 -> 99 %" "$arm" "${p99:-miss}"
    record "frontend peak RSS during the storm (MiB, VmHWM)" "$arm" "$(calc "$hwm / 1024" 1)"
    record "frontend RSS before the kill (MiB)" "$arm" "$(calc "$rss_before / 1024" 1)"
    record "refused: rate_limited" "$arm" "$(metric_in "$dir/metrics.txt" 'packhunt_connection_refusals_total{reason="rate_limited"}')"
    record "handshake timeouts" "$arm" "$(metric_in "$dir/metrics.txt" 'packhunt_connection_refusals_total{reason="handshake_timeout"}')"
    record "refusals (all reasons)" "$arm" "$(refusals_in "$dir/metrics.txt" | tr ' ' _)"
    record "connections accepted (accept() calls)" "$arm" "$(metric_in "$dir/metrics.txt" packhunt_connections_accepted_total)"
    record "handshakes completed" "$arm" "$(metric_in "$dir/metrics.txt" packhunt_handshakes_completed_total)"
    record "agents' failed connection attempts (loadgen errors)" "$arm" "$(($(progress errors) - e0))"
    record "sessions open 2 s after (server)" "$arm" "$(metric_in "$dir/metrics.txt" packhunt_sessions_open)"
    record "frontend CPU-s, ready -> all reconnected" "$arm" "$(calc "${d%% *}" 2)"
    record "frontend CPU per agent back (us)" "$arm" "$(calc "${d%% *} * 1e6 / $n" 0)"
    record "whole box CPU-s/s, ready -> all (frontend, loadgen, neighbours)" "$arm" "$(calc "($box1 - $box0) / $CLK_TCK / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "time to connect all before (s)" "$arm" "$RAMP_S"
    stop_loadgen
    stop_frontend
    drop_datastore_later "$dir"
}

# What each way costs the frontend, one shard on cpu 0 and loadgen on cpu 1 (as p6):
# accepted = p6's full-handshake reconnect storm of COST_N agents (per connection);
# refused = COST_N new agents against max_connections_per_second = 1: nearly every
# connection is closed right after accept(), and the agents retry with backoff for
# COST_S seconds; frontend CPU over that window (less its idle CPU and the handful it
# admitted at the accepted price) per refusal. On loopback the kernel's SYN handling runs
# in the connecting process's context: what the server pays is accept(), the rate check
# and close().
cost_round() {   # cost_round N REPEAT
    local n=$1 r=$2 dir a b cpu wall idle ref0 ref1 hs0 hs1 per_acc
    dir=$OUT/cost-accepted-$r
    deploy "$dir"
    set_key "$dir" frontend shards 1
    start_frontend "$dir"
    fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + 600)) || true
    sleep 2
    a=$(cpu_snap "$FE_PID")
    sleep "$IDLE_S"
    b=$(cpu_snap "$FE_PID")
    read -r cpu wall _ <<<"$(cpu_delta "$a" "$b")"
    p6_storm full "$n" "$(calc "$cpu / $wall" 4)"
    stop_loadgen
    stop_frontend
    drop_datastore_later "$dir"
    per_acc=$(awk -F'\t' -v f="$FIG_CONN" '$1 == f && $2 == "storm-full" { v = $3 } END { print v + 0 }' "$RESULTS")

    dir=$OUT/cost-refused-$r
    deploy "$dir"
    set_key "$dir" frontend shards 1
    set_key "$dir" limits max_connections_per_second 1
    start_frontend "$dir"
    sleep 2
    a=$(cpu_snap "$FE_PID")
    sleep "$IDLE_S"
    b=$(cpu_snap "$FE_PID")
    read -r cpu wall _ <<<"$(cpu_delta "$a" "$b")"
    idle=$(calc "$cpu / $wall" 4)
    metrics_to "$dir/metrics-0.txt"
    ref0=$(metric_in "$dir/metrics-0.txt" 'packhunt_connection_refusals_total{reason="rate_limited"}')
    hs0=$(metric_in "$dir/metrics-0.txt" packhunt_handshakes_completed_total)
    start_loadgen "$dir" fleet $((COST_S + 60)) --clients "$n" --ramp-per-second "$n" --duration-s $((COST_S + 30))
    wait_identities || true
    a=$(cpu_snap "$FE_PID")
    sleep "$COST_S"
    b=$(cpu_snap "$FE_PID")
    metrics_to "$dir/metrics-1.txt"
    stop_loadgen
    stop_frontend
    drop_datastore_later "$dir"
    ref1=$(metric_in "$dir/metrics-1.txt" 'packhunt_connection_refusals_total{reason="rate_limited"}')
    hs1=$(metric_in "$dir/metrics-1.txt" packhunt_handshakes_completed_total)
    read -r cpu wall _ <<<"$(cpu_delta "$a" "$b")"
    echo "cost refused r$r cpu_s $cpu wall_s $wall idle $idle refusals $((ref1 - ref0)) admitted $((hs1 - hs0)) at $per_acc us" >>"$OUT/run.log"
    record "$FIG_CONN" refused "$(calc "($cpu - $idle * $wall - ($hs1 - $hs0) * $per_acc / 1e6) * 1e6 / ($ref1 - $ref0)" 1)"
    record "refusals in the window / admitted" refused "$((ref1 - ref0))/$((hs1 - hs0))"
    record "refusals per second" refused "$(calc "($ref1 - $ref0) / $wall" 0)"
}

run_storm() {
    local n=${1:-${N:-15000}} r arm
    SHED_RATE=${SHED_RATE:-200}
    STORM_ARMS=${STORM_ARMS:-"shed unshed"}
    STORM_TIMEOUT=${STORM_TIMEOUT:-600}
    SETTLE_S=${SETTLE_S:-3}
    COST_N=${COST_N:-2000}
    COST_S=${COST_S:-10}
    IDLE_S=${IDLE_S:-3}
    log "storm: $n agents, kill -9 + restart; max_connections_per_second $SHED_RATE (shed) vs 1000000 (unshed); then cost per connection with $COST_N agents on one shard"
    for ((r = 1; r <= REPEATS; r++)); do
        for arm in $STORM_ARMS; do storm_one "$arm" "$n" "$r"; done
        ((COST_N > 0)) && cost_round "$COST_N" "$r"
    done
    local t="time to reconnect all (s): kill -9 -> all connected"
    ratio "reconnect time shed / unshed" "$t" shed "$t" unshed
    ratio "peak RSS shed / unshed" "frontend peak RSS during the storm (MiB, VmHWM)" shed "frontend peak RSS during the storm (MiB, VmHWM)" unshed
    ratio "CPU per agent back shed / unshed" "frontend CPU per agent back (us)" shed "frontend CPU per agent back (us)" unshed
    ratio "refused / accepted (full-handshake reconnect), CPU per connection" "$FIG_CONN" refused "$FIG_CONN" storm-full
    print_table "storm: kill -9 + restart under $n agents, shedding at $SHED_RATE/s vs unlimited; CPU per refused vs accepted connection ($OUT)"
    drop_deferred_datastores
}

# ---------------------------------------------------------------- events -------------
# events_one ARM(events|quiet) N REPEAT: N agents over EVENTS_FRONTENDS frontends (a master
# and minions), emitting EPS events/s each (events) or idle (quiet); over EVENTS_S seconds
# a small measuring loadgen (MEASURE agents, hostnames probe-*) takes tasks at TASK_RATE/s
# and probes the API at PROBE_RATE/s, and (events arm) watches the artifact on the
# master. With one frontend a file sink takes every event (with several, they would share
# its file).
events_one() {
    local arm=$1 n=$2 r=$3 dir=$OUT/events-$1-$3 fe=() node k f t0 t1 c0=0 c1=0 lag_max=0 lag fleet_lg measure_lg i
    if ((EVENTS_FRONTENDS > 1)); then
        deploy_cluster "$dir" $((EVENTS_FRONTENDS - 1))
    else
        deploy "$dir"
        MINION_NODES=() MINION_METRICS_PORTS=()
        cat >>"$dir/server.config.toml" <<EOT

[[sinks]]
name = "bench-file"
kind = "file"
path = "$dir/sink.jsonl"
artifacts = ["$EVENT_ARTIFACT"]
EOT
    fi
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    start_frontend "$dir"
    fe+=("$FE_PID")
    for node in "${MINION_NODES[@]}"; do
        start_minion "$dir" "$node"
        fe+=("$FE_PID")
    done
    ((EVENTS_FRONTENDS > 1)) && { wait_frontends_up "$EVENTS_FRONTENDS" 60 || true; }
    if [[ $arm == events ]]; then
        # shellcheck disable=SC2046
        fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + EVENTS_S + 600)) --scenario events \
            --events-per-second-per-agent "$EPS" --event-artifact "$EVENT_ARTIFACT" \
            --probe-rate-per-second 0 $(api_args) || true
    else
        fleet_up "$dir" fleet "$n" $((CONNECT_TIMEOUT + EVENTS_S + 600)) --scenario idle \
            --probe-rate-per-second 0 || true
    fi
    fleet_lg=$LG_PID
    sleep "$EVENTS_WARMUP_S"
    metrics_to "$dir/metrics-before.txt"
    for ((k = 0; k < ${#MINION_NODES[@]}; k++)); do metrics_at "${MINION_METRICS_PORTS[k]}" "$dir/metrics-before-minion-$k.txt"; done
    t0=$(now_ms)
    for f in "${fe[@]}"; do c0=$((c0 + $(cpu_ns "$f"))); done
    local watch=()
    [[ $arm == events ]] && watch=(--watch-artifact "$EVENT_ARTIFACT")
    # The measuring loadgen stands for the operator: unpinned, niced like p4's probe.
    # shellcheck disable=SC2046
    LOADGEN_CPUS="" LOADGEN_NICE=${PROBE_NICE:--10} start_loadgen "$dir" measure $((EVENTS_S + 300)) \
        --clients "$MEASURE" --hostname-prefix probe- --duration-s "$EVENTS_S" --scenario tasking \
        --task-rate-per-second "$TASK_RATE" --probe-rate-per-second "$PROBE_RATE" "${watch[@]}" $(api_args)
    measure_lg=$LG_PID
    for ((i = 0; i < EVENTS_S / 5; i++)); do
        sleep 5
        lag=$(metric 'packhunt_sink_lag_seconds{sink="bench-file"}')
        lag_max=$(awk -v a="$lag_max" -v b="$lag" 'BEGIN { print (b > a) ? b : a }')
    done
    LG_PID=$measure_lg
    wait_loadgen_exit 300 || stop_loadgen
    t1=$(now_ms)
    for f in "${fe[@]}"; do c1=$((c1 + $(cpu_ns "$f"))); done
    metrics_to "$dir/metrics-after.txt"
    for ((k = 0; k < ${#MINION_NODES[@]}; k++)); do metrics_at "${MINION_METRICS_PORTS[k]}" "$dir/metrics-after-minion-$k.txt"; done
    LG_PID=$fleet_lg
    stop_loadgen
    for ((k = ${#fe[@]} - 1; k >= 0; k--)); do FE_PID=${fe[k]}; stop_frontend; done
    local wall cpu rows=0 bytes=0 rps m0 m1
    wall=$(ms_to_s "$t0" "$t1")
    cpu=$(calc "($c1 - $c0) / 1e9 / $wall" 3)
    for m0 in "$dir"/metrics-before*.txt; do
        m1=${m0/before/after}
        rows=$((rows + $(metric_in "$m1" packhunt_events_rows_ingested_total) - $(metric_in "$m0" packhunt_events_rows_ingested_total)))
        bytes=$((bytes + $(metric_in "$m1" packhunt_events_bytes_ingested_total) - $(metric_in "$m0" packhunt_events_bytes_ingested_total)))
    done
    m1=$dir/metrics-after.txt
    echo "events $arm frontends $EVENTS_FRONTENDS cpu_s/s $cpu wall $wall rows $rows bytes $bytes" >>"$OUT/run.log"
    rps=$(calc "$rows / $wall" 1)
    record "ingest rows/s" "$arm" "$rps"
    record "ingest MB/s" "$arm" "$(calc "$bytes / 1e6 / $wall" 2)"
    record "frontend CPU-s/s (all $EVENTS_FRONTENDS)" "$arm" "$cpu"
    record "frontend CPU-ms per 1,000 events" "$arm" "$(awk -v c="$cpu" -v r="$rps" 'BEGIN { if (r < 1) print "-"; else printf "%.1f", c * 1000 / (r / 1000) }')"
    record "task delivery p50 (ms)" "$arm" "$(rep '.task_latency.p50_us / 1000' "$dir/measure.json")"
    record "task delivery p99 (ms)" "$arm" "$(rep '.task_latency.p99_us / 1000' "$dir/measure.json")"
    record "tasks received / scheduled" "$arm" "$(rep '"\(.tasks_received)/\(.collections_scheduled)"' "$dir/measure.json")"
    record "API probe p99 (ms)" "$arm" "$(rep '.api_latency.p99_us / 1000' "$dir/measure.json")"
    if [[ $arm == events ]]; then
        record "watch lag p50 (ms)" "$arm" "$(rep '.watch.lag.p50_us / 1000' "$dir/measure.json")"
        record "watch lag p99 (ms)" "$arm" "$(rep '.watch.lag.p99_us / 1000' "$dir/measure.json")"
        record "watch events seen / ingested" "$arm" "$(rep '.watch.events_seen' "$dir/measure.json")/$rows"
        record "watch end reason" "$arm" "$(rep '.watch.end_reason // "none"' "$dir/measure.json")"
        ((EVENTS_FRONTENDS == 1)) && record "file sink lag, max sampled (s)" "$arm" "$lag_max"
        ((EVENTS_FRONTENDS == 1)) && record "file sink dropped" "$arm" "$(metric_total_in "$m1" packhunt_sink_dropped_total)"
        record "events acked by loadgen (whole run)" "$arm" "$(rep '.events_acked_rows' "$dir/fleet.json")"
        record "events dropped by agents (whole run)" "$arm" "$(rep '.events_dropped_rows' "$dir/fleet.json")"
    fi
    record "upload 503s (concurrency), master" "$arm" "$(metric_in "$m1" 'packhunt_upload_rejections_total{reason="concurrency"}')"
    record "agents connected (peak)" "$arm" "$(rep .connected_peak "$dir/fleet.json")"
    [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$dir/datastore" "$dir"/sink.jsonl*
}

run_events() {
    local n=${1:-${N:-15000}} r arm
    EPS=${EPS:-1}
    EVENTS_S=${EVENTS_S:-300}
    EVENTS_WARMUP_S=${EVENTS_WARMUP_S:-20}
    EVENTS_FRONTENDS=${EVENTS_FRONTENDS:-1}
    EVENT_ARTIFACT=${EVENT_ARTIFACT:-Generic.Client.Stats}
    MEASURE=${MEASURE:-50}
    TASK_RATE=${TASK_RATE:-5}
    PROBE_RATE=${PROBE_RATE:-20}
    EVENTS_ARMS=${EVENTS_ARMS:-events quiet}
    log "events: $n agents over $EVENTS_FRONTENDS frontend(s) x $EPS events/s of $EVENT_ARTIFACT for ${EVENTS_S}s vs the same fleet idle; $MEASURE measuring agents, $TASK_RATE tasks/s, $PROBE_RATE probes/s"
    for ((r = 1; r <= REPEATS; r++)); do
        for arm in $EVENTS_ARMS; do events_one "$arm" "$n" "$r"; done
    done
    ratio "task delivery p99 events / quiet" "task delivery p99 (ms)" events "task delivery p99 (ms)" quiet
    ratio "API probe p99 events / quiet" "API probe p99 (ms)" events "API probe p99 (ms)" quiet
    ratio "frontend CPU events / quiet" "frontend CPU-s/s (all $EVENTS_FRONTENDS)" events "frontend CPU-s/s (all $EVENTS_FRONTENDS)" quiet
    print_table "events: $n agents x $EPS/s over $EVENTS_FRONTENDS frontend(s) vs the same fleet without events ($OUT)"
}

# ---------------------------------------------------------------- files ---------------
# files_upload N REPEAT -> sets FILES_DIR (its datastore is on the disk dd measures). Every
# agent is tasked with Generic.Collectors.File through the API and uploads one synthetic
# file of FILE_BYTES at once; the frontend keeps its default permits and chunk size, so the
# peak RSS shows whether memory is bounded by permits x chunk, not agents x file. The
# fleet's loadgen probes the API (its own p99, and the frontend's handling p99 from the
# metrics before/after), and checks every file's size and SHA-256 on the server.
files_upload() {
    local n=$1 r=$2 dir=$OUT/files-$2 a b d hwm mb before after
    FILES_DIR=$dir
    deploy "$dir"
    set_key "$dir" datastore fsync_documents "$FILES_FSYNC"
    [[ -n ${SHARDS:-} ]] && set_key "$dir" frontend shards "$SHARDS"
    [[ -n ${CONCURRENCY:-} ]] && put_key "$dir" limits concurrency "$CONCURRENCY"
    start_frontend "$dir"
    reset_peak_rss "$FE_PID"
    metrics_to "$dir/metrics-before.txt"
    # shellcheck disable=SC2046
    fleet_up "$dir" files "$n" $((CONNECT_TIMEOUT + FILES_TIMEOUT)) --scenario files \
        --file-bytes-per-agent "$FILE_BYTES" --exit-after-flows "$n" \
        --probe-rate-per-second "$PROBE_RATE" $(api_args) || true
    PROBE_MAX_S=$FILES_TIMEOUT probe_start "$dir" probe-files
    a=$(cpu_snap "$FE_PID")
    wait_loadgen_exit "$FILES_TIMEOUT" || { log "files: flows not done after $FILES_TIMEOUT s"; stop_loadgen; }
    b=$(cpu_snap "$FE_PID")
    probe_stop
    d=$(cpu_delta "$a" "$b")
    hwm=$(status_kib "$FE_PID" VmHWM)
    metrics_to "$dir/metrics-after.txt"
    echo "files r$r cpu_s wall_s ticks_s: $d" >>"$OUT/run.log"
    stop_frontend
    rep '.files' "$dir/files.json" >>"$OUT/run.log" 2>/dev/null || true
    mb=$(rep '.files.upload_mb_per_second // "-"' "$dir/files.json" 2>/dev/null || echo -)
    record "upload MB/s (verified files, first scheduled -> last flow)" upload "$mb"
    record "files complete and verified / agents" upload "$(rep '.files.files_completed // 0' "$dir/files.json" 2>/dev/null || echo 0)/$n"
    record "files wrong (size, SHA-256 or error)" upload "$(rep '.files.files_wrong // "-"' "$dir/files.json" 2>/dev/null || echo -)"
    record "sample downloads verified / failed" upload "$(rep '"\(.files.downloads_verified)/\(.files.downloads_failed)"' "$dir/files.json" 2>/dev/null || echo -)"
    record "frontend peak RSS during the uploads (MiB, VmHWM)" upload "$(calc "$hwm / 1024" 1)"
    record "frontend CPU-s/s (of $(nproc))" upload "$(calc "${d%% *} / $(echo "$d" | cut -d' ' -f2)" 2)"
    record "API probe p99 inside the fleet's loadgen (ms)" upload "$(rep '.api_latency.p99_us / 1000' "$dir/files.json" 2>/dev/null || echo -)"
    record "API probe p99 from a process of its own, niced above the fleet (ms)" upload "$(rep '.api_latency.p99_us / 1000' "$dir/probe-files.json" 2>/dev/null || echo -)"
    record "frontend's own GET handling p99, bucket bound (ms)" upload "$(read_p99_between "$dir/metrics-before.txt" "$dir/metrics-after.txt")"
    record "loadgen errors" upload "$(rep .errors "$dir/files.json" 2>/dev/null || echo -)"
}

run_files() {
    local n=${1:-${N:-1000}} r
    FILE_BYTES=${FILE_BYTES:-20000000}
    FILES_FSYNC=${FILES_FSYNC:-true}
    FILES_TIMEOUT=${FILES_TIMEOUT:-1800}
    PROBE_RATE=${PROBE_RATE:-20}
    DD_MB=${DD_MB:-1024}
    KEEP_DATA=${KEEP_DATA:-0}
    log "files: $n agents x $FILE_BYTES bytes (files scenario, default permits) vs dd ${DD_MB} MiB append+fdatasync, alternating; datastore.fsync_documents = $FILES_FSYNC"
    for ((r = 1; r <= REPEATS; r++)); do
        files_upload "$n" "$r"
        log "files dd r$r on $(df --output=source,fstype "$FILES_DIR/datastore" | tail -1 | tr -s ' ')"
        record "upload MB/s (verified files, first scheduled -> last flow)" dd "$(dd_rate "$FILES_DIR/datastore" "$DD_MB")"
        [[ $KEEP_DATA == 1 ]] || rm -rf "$FILES_DIR/datastore"
    done
    ratio "upload / dd" "upload MB/s (verified files, first scheduled -> last flow)" upload "upload MB/s (verified files, first scheduled -> last flow)" dd
    print_table "files: file uploads vs the datastore disk's sequential append, $n agents x $FILE_BYTES bytes ($OUT)"
}

# ---------------------------------------------------------------- box-fleet ----------
# The box's ceiling in idle agents, past the 20,000 open files one process may hold here:
# one cluster, a master and M minions sharing the one datastore (deploy_cluster), with
# M = ceil(N / AGENTS_PER_FRONTEND) - 1. A frontend takes at most max_open_files (20,000)
# less RESERVED_FILES_COUNT (512) = 19,488 agents and refuses the next ones before any TLS
# work (out_of_files); AGENTS_PER_FRONTEND (18,500) keeps each frontend's share below that
# with room for the spread. Every frontend runs one shard ([frontend] shards = 1, SHARDS),
# so all their agent shards are on cpu 0 and loadgen has cpu 1 (LOADGEN_CPUS).
#
# How the agents spread: an agent starts at a uniformly random URL of client.config.toml's
# server_urls (src/agent/run.rs: `gen_range(0..n)`), and moves to the next URL in the list
# (wrapping) when a connect fails or a frontend tells it to move. `config frontend` appends
# each minion's URL once, so the list is the master and every minion, once each: N agents
# fall binomially, N / F per frontend with a standard deviation of sqrt(N (F - 1)) / F (129
# at 200,000 over 11, so the fullest frontend lands near 18,500, far from 19,488); only a
# frontend at its limit passes agents on to its neighbour in the list. No hash is involved.
#
# loadgen: one coordinator forking ceil(N / AGENTS_PER_WORKER) worker processes (at most
# 18,000 agents each, the same number each), on LOADGEN_CPUS (the workers inherit the
# pinning). SOURCE_IPS (default ceil(N / 20,000), loadgen's AGENTS_PER_SOURCE_IP, and at
# least 16) is passed explicitly: it bounds every source address to 20,000 connections in
# all, so ~20,000 / F towards any one frontend port (28,232 ephemeral ports), and keeps a
# source's handshakes in flight at one frontend under its cap of 32 (p6's reasoning; from
# one address a 600-agent ramp over 2 frontends had 243 connections refused by it). With
# --source-ips 0 each worker would pick its own count from its own last agent index, and
# the low addresses would carry several times their share.
#
# A memory watchdog (box_watchdog) samples MemAvailable every second into memavail.tsv
# while the fleet is up; below WATCHDOG_MIN_MIB (1,024) it snapshots every frontend's and
# loadgen's RSS, stops every loadgen (SIGINT, SIGKILL after 10 s or at once below half the
# floor) and the run goes on to the cleanup: the box has no swap.
#
# Rounds, once everything is connected, every agent's facts are on disk and SETTLE_S has
# passed: memory (frontend and loadgen RSS, MemAvailable, kernel memory), IDLE_S of idle
# CPU, a tasking round, then a hunt round. The tasking round is a measuring loadgen of
# MEASURE agents (hostnames probe-*, spread over the same frontends) with --scenario
# tasking: TASKS collections at TASK_RATE/s through the master's API to random connected
# probe agents. loadgen's tasking scenario schedules from the moment its fleet is connected
# until it stops and keeps one latency histogram for its whole run, so the big fleet itself
# stays idle: started with the scenario, it would be tasked during the idle window and its
# histogram would mix the tasking round with the hunt's N tasks. The hunt round is one hunt
# over every agent (no condition, recruitment unthrottled, HUNT_ARTIFACT
# Generic.Client.Info as p2-fleet): its record on disk, the fleet's task counter and its
# report's last task.

# box_watchdog DIR MIN_MIB FLEET_ERR FE_PIDS...: runs until killed or until it fires.
box_watchdog() {
    local dir=$1 min=$2 err=$3 avail p lg k i fe_kib=0 lg_kib=0 pids=()
    shift 3
    while :; do
        avail=$(mem_available_mib)
        printf '%s\t%s\n' "$(now_ms)" "$avail" >>"$dir/memavail.tsv"
        if ((avail < min)); then break; fi
        sleep 1
    done
    k=$(LG_ERR=$err progress connected)
    mapfile -t pids <"$dir/loadgen.pids"
    # What was held when it fired, read before anything is stopped (a few /proc reads).
    for p in "$@"; do fe_kib=$((fe_kib + $(rss_kib "$p"))); done
    for p in "${pids[@]}"; do
        for lg in $(pgrep -P "$p" -x loadgen || true); do
            lg_kib=$((lg_kib + $(rss_kib "$lg")))
            for i in $(pgrep -P "$lg" || true); do lg_kib=$((lg_kib + $(rss_kib "$i"))); done
        done
    done
    printf 'agents %s\tmem_available_mib %s\tfrontend_rss_kib %s\tloadgen_rss_kib %s\n' "$k" "$avail" "$fe_kib" "$lg_kib" >"$dir/watchdog.tsv"
    log "MEMORY WATCHDOG: MemAvailable $avail MiB < $min MiB with $k agents connected; stopping every loadgen"
    for p in "${pids[@]}"; do
        lg=$(pgrep -P "$p" -x loadgen | head -1 || true)
        kill -INT "${lg:-$p}" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        avail=$(mem_available_mib)
        printf '%s\t%s\n' "$(now_ms)" "$avail" >>"$dir/memavail.tsv"
        if ((avail < min / 2)); then break; fi
        lg=0
        for p in "${pids[@]}"; do if kill -0 "$p" 2>/dev/null; then lg=1; fi; done
        if ((lg == 0)); then break; fi
        sleep 0.2
    done
    for p in "${pids[@]}"; do
        for lg in $(pgrep -P "$p" -x loadgen || true); do
            pkill -KILL -P "$lg" 2>/dev/null || true
            kill -KILL "$lg" 2>/dev/null || true
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    log "memory watchdog: loadgen stopped; MemAvailable now $(mem_available_mib) MiB"
}

meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
mem_available_mib() { echo $(($(meminfo_kib MemAvailable) / 1024)); }
kernel_kib() { awk '$1 == "Slab:" || $1 == "KernelStack:" || $1 == "PageTables:" { s += $2 } END { print s }' /proc/meminfo; }
# rss_kib PID: VmRSS, always a number (0 for a process that is gone or a zombie)
rss_kib() { local v; v=$(status_kib "$1" VmRSS 2>/dev/null) || v=0; echo "${v:-0}"; }
rss_sum_kib() {   # rss_sum_kib PID...: VmRSS summed
    local p s=0
    for p in "$@"; do s=$((s + $(rss_kib "$p"))); done
    echo "$s"
}
cpu_ns_sum() {
    local p s=0
    for p in "$@"; do s=$((s + $(cpu_ns "$p"))); done
    echo "$s"
}
# refusals_sum FILE...: "reason n, ..." of the nonzero connection refusals summed over
# every frontend's metrics, and the per-source handshake refusals
refusals_sum() {
    awk -F'[{}"= ]+' '/^packhunt_connection_refusals_total\{/ { s[$3] += $NF }
                      /^packhunt_agentport_source_handshakes_refused_total / { s["source_handshakes"] += $NF }
                      END { for (k in s) if (s[k]) { printf "%s%s %d", sep, k, s[k]; sep = ", " }
                            if (!sep) printf "none" }' "$@"
}
# slab_growth BEFORE AFTER: the ten slab caches that grew most (KiB), from /proc/slabinfo copies
slab_growth() {
    awk 'FNR == 1 { file++ } /^#|^slabinfo/ { next }
         { kib = $3 * $4 / 1024; if (file == 1) a[$1] = kib; else b[$1] = kib }
         END { for (k in b) printf "%.0f %s\n", b[k] - a[k], k }' "$1" "$2" | sort -rn | head -10 | paste -sd, -
}

box_fleet_metrics() {   # box_fleet_metrics DIR TAG: every frontend's /metrics, DIR/metrics-TAG-{master,minion-K}.txt
    local k
    metrics_to "$1/metrics-$2-master.txt"
    for ((k = 0; k < MINIONS; k++)); do metrics_at "${MINION_METRICS_PORTS[k]}" "$1/metrics-$2-minion-$((k + 1)).txt"; done
}

# box_fleet_ok: the watchdog has not fired, the fleet's loadgen and every frontend still
# run (a dead frontend is logged once into frontends-down.txt). Uses box_fleet_one's dir,
# fe, fleet_pid and fleet_err.
box_fleet_ok() {
    local k
    [[ -s $dir/watchdog.tsv ]] && return 1
    if [[ -n $fleet_pid ]] && ! kill -0 "$fleet_pid" 2>/dev/null; then
        [[ -e $dir/fleet-gone ]] || { log "box-fleet: the fleet's loadgen is gone: $(tail -n 1 "$fleet_err")"; : >"$dir/fleet-gone"; }
        return 1
    fi
    for ((k = 0; k < ${#fe[@]}; k++)); do
        kill -0 "${fe[k]}" 2>/dev/null && continue
        if ! grep -qx "$( ((k == 0)) && echo master || echo "minion-$k")" "$dir/frontends-down.txt" 2>/dev/null; then
            log "box-fleet: frontend $( ((k == 0)) && echo master || echo "minion $k") (pid ${fe[k]}) is gone; the rounds after this are skipped"
            { ((k == 0)) && echo master || echo "minion-$k"; } >>"$dir/frontends-down.txt"
        fi
        return 1
    done
}

# box_fleet_net DIR: what the kernel counted against TCP in each phase (net_delta of the
# phase's net_snapshot against the one before; a phase the run did not reach has none),
# and TCP's socket memory against its limit (tcp_mem, pages): above the limit's middle
# value TCP is under memory pressure, above its last it drops and aborts.
box_fleet_net() {
    local dir=$1 prev="" f phase
    for f in "$dir"/net-[0-9]-*.txt; do
        [[ -e $f ]] || continue
        phase=${f##*/net-?-}
        phase=${phase%.txt}
        [[ -n $prev ]] && record "kernel TCP trouble, $phase phase" "$arm" "$(net_delta "$prev" "$f" $NET_TROUBLE_COUNTERS | tr ' ' _)"
        record "kernel TCP sockets / socket memory (MiB) after the $phase phase" "$arm" \
            "$(awk '$1 == "sockstat_tcp_alloc" { a = $2 } $1 == "sockstat_tcp_mem" { m = $2 } END { printf "%d/%.0f", a, m * 4 / 1024 }' "$f")"
        prev=$f
    done
    record "kernel tcp_mem pressure / limit (MiB)" "$arm" "$(awk '{ printf "%.0f/%.0f", $2 * 4 / 1024, $3 * 4 / 1024 }' /proc/sys/net/ipv4/tcp_mem)"
    record "kernel netdev_max_backlog" "$arm" "$(cat /proc/sys/net/core/netdev_max_backlog)"
}

box_fleet_one() {   # box_fleet_one N REPEAT
    local n=$1 r=$2 dir=$OUT/box-fleet-$2 arm=fleet fe=() node k f w=0 t0 t1 sips apw conn=0 counts=() c
    local lg lgs=() fe_base fe_rss lg_rss avail0 avail1 kern0 kern1 unrec0 unrec1 keys mfiles=()
    local box0 box1 fe0 fe1 lg0 lg1 wall stopped="" wd_pid rp id="" tasks0=0 t_post start_ms st cc e
    local fleet_pid="" fleet_err="" last_us first_us hunt_n hunt_t1 same cross_urls=() rej=0 f1 wk wa wf wl
    local frontends=$((MINIONS + 1))
    deploy_cluster "$dir" "$MINIONS"
    set_key "$dir" frontend shards "${SHARDS:-1}"
    set_key "$dir" limits hunt_recruitment_per_second 1000000
    # The generated gRPC API port is the fixed 8890: another deployment on the box may hold it.
    set_key "$dir" api port "$(free_port)"
    start_frontend "$dir"
    fe+=("$FE_PID")
    for node in "${MINION_NODES[@]}"; do
        start_minion "$dir" "$node"
        fe+=("$FE_PID")
    done
    wait_frontends_up "$frontends" 120 || true
    log "box-fleet r$r: server_urls of the agents: $(grep -A$((frontends + 1)) '^server_urls' "$dir/client.config.toml" | tr -d '\n ' | cut -c1-400)"
    sleep 2
    fe_base=$(rss_sum_kib "${fe[@]}")
    avail0=$(meminfo_kib MemAvailable) kern0=$(kernel_kib) unrec0=$(meminfo_kib SUnreclaim)
    cat /proc/slabinfo >"$dir/slabinfo-before.txt" 2>/dev/null || : >"$dir/slabinfo-before.txt"
    net_snapshot "$dir/net-0-before.txt"
    w=$(((n + AGENTS_PER_WORKER - 1) / AGENTS_PER_WORKER))
    apw=$(((n + w - 1) / w))
    sips=${SOURCE_IPS:-$(((n + 19999) / 20000))}
    ((sips >= 16)) || sips=${SOURCE_IPS:-16}
    record "frontends (master + minions)" "$arm" "$frontends"
    record "loadgen processes x agents each" "$arm" "${w}x$apw"
    log "box-fleet r$r: $frontends frontends (master + $MINIONS minions), $n agents from $w loadgen process(es) of <= $apw agents over $sips source addresses, ramp $RAMP/s; MemAvailable $((avail0 / 1024)) MiB; frontends' RSS $((fe_base / 1024)) MiB"

    # ---- the fleet
    start_loadgen "$dir" fleet "$FLEET_LIMIT" --clients "$n" --ramp-per-second "$RAMP" --duration-s "$FLEET_LIMIT" \
        --agents-per-worker "$apw" --source-ips "$sips" --probe-rate-per-second 0
    fleet_pid=$LG_PID fleet_err=$LG_ERR
    echo "$fleet_pid" >"$dir/loadgen.pids"
    : >"$dir/memavail.tsv"
    box_watchdog "$dir" "$WATCHDOG_MIN_MIB" "$fleet_err" "${fe[@]}" &
    wd_pid=$!
    ALL_AUX_PIDS+=("$wd_pid")
    t0=$(now_ms)
    # Each worker makes its agents' keys before its ramp begins: time to connect counts
    # from the last worker's keys.
    while :; do
        c=$(grep -c 'identities ready' "$fleet_err" 2>/dev/null) || c=0
        ((c >= w)) && break
        kill -0 "$fleet_pid" 2>/dev/null || break
        (($(now_ms) - t0 > CONNECT_S * 1000)) && break
        sleep 0.2
    done
    keys=$(ms_to_s "$t0" "$(now_ms)")
    t0=$(now_ms) RAMP_S=miss
    while :; do
        if (($(progress connected) >= n)); then RAMP_S=$(ms_to_s "$t0" "$(now_ms)"); break; fi
        box_fleet_ok || break
        if ! kill -0 "$fleet_pid" 2>/dev/null || (($(now_ms) - t0 > CONNECT_S * 1000)); then
            log "box-fleet r$r: loadgen connected only $(progress connected) of $n"
            break
        fi
        sleep 0.5
    done
    box_fleet_ok || stopped=1
    net_snapshot "$dir/net-1-ramp.txt"
    lg=$(loadgen_pid)
    [[ -n $lg ]] && mapfile -t lgs < <(echo "$lg"; pgrep -P "$lg" || true)
    if [[ -z $stopped ]]; then
        facts_ready "$dir" "$(progress connected)" "$FACTS_S" || true
        sleep "$SETTLE_S"
        box_fleet_ok || stopped=1
    fi

    # ---- at full size: agents, memory (a fleet the watchdog stopped is measured by its snapshot)
    if [[ -z $stopped ]]; then
        box_fleet_metrics "$dir" full
        mfiles=("$dir/metrics-full-master.txt")
        for ((k = 1; k <= MINIONS; k++)); do mfiles+=("$dir/metrics-full-minion-$k.txt"); done
        for f in "${mfiles[@]}"; do
            c=$(metric_in "$f" packhunt_sessions_open)
            counts+=("$c")
            conn=$((conn + c))
        done
        fe_rss=$(rss_sum_kib "${fe[@]}")
        lg_rss=$(rss_sum_kib "${lgs[@]}")
        avail1=$(meminfo_kib MemAvailable) kern1=$(kernel_kib) unrec1=$(meminfo_kib SUnreclaim)
        cat /proc/slabinfo >"$dir/slabinfo-full.txt" 2>/dev/null || : >"$dir/slabinfo-full.txt"
        net_snapshot "$dir/net-2-full.txt"
        log "box-fleet r$r: sessions per frontend (master, minion 1..$MINIONS): ${counts[*]}; RSS per frontend (MiB): $(for f in "${fe[@]}"; do printf '%s ' $(($(rss_kib "$f") / 1024)); done)"
        log "box-fleet r$r: slab caches grown most (KiB): $(slab_growth "$dir/slabinfo-before.txt" "$dir/slabinfo-full.txt")"
        record "agents connected (sessions_open, all frontends)" "$arm" "$conn"
        record "agents connected (loadgen)" "$arm" "$(progress connected)"
        record "agents per frontend, min" "$arm" "$(printf '%s\n' "${counts[@]}" | sort -n | head -1)"
        record "agents per frontend, max" "$arm" "$(printf '%s\n' "${counts[@]}" | sort -n | tail -1)"
        record "agents per frontend (master, minions)" "$arm" "$(IFS=/; echo "${counts[*]}")"
        record "time to make the agents' keys (s)" "$arm" "$keys"
        record "time to connect all (s), from the last worker's keys" "$arm" "$RAMP_S"
        record "connection refusals, all frontends" "$arm" "$(refusals_sum "${mfiles[@]}" | tr ' ' _)"
        record "loadgen errors (failed connects) until full size" "$arm" "$(progress errors)"
        record "frontends' RSS before agents, sum (MiB)" "$arm" "$(calc "$fe_base / 1024" 1)"
        record "frontends' RSS at full size, sum (MiB)" "$arm" "$(calc "$fe_rss / 1024" 1)"
        record "frontend RSS per agent (KiB)" "$arm" "$(calc "$conn > 0 ? ($fe_rss - $fe_base) / $conn : 0" 1)"
        record "loadgen RSS, coordinator + workers (MiB)" "$arm" "$(calc "$lg_rss / 1024" 1)"
        record "loadgen RSS per agent (KiB)" "$arm" "$(calc "$conn > 0 ? $lg_rss / $conn : 0" 1)"
        record "MemAvailable before agents (MiB)" "$arm" "$((avail0 / 1024))"
        record "MemAvailable at full size (MiB)" "$arm" "$((avail1 / 1024))"
        record "MemAvailable used per agent (KiB)" "$arm" "$(calc "$conn > 0 ? ($avail0 - $avail1) / $conn : 0" 1)"
        record "kernel memory growth, Slab + KernelStack + PageTables (MiB)" "$arm" "$(calc "($kern1 - $kern0) / 1024" 1)"
        record "kernel memory per agent connection, both sockets (KiB)" "$arm" "$(calc "$conn > 0 ? ($kern1 - $kern0) / $conn : 0" 2)"
        # Slab also holds the datastore's inodes and dentries (reclaimable): the unreclaimable
        # part is closer to the sockets' own.
        record "of which SUnreclaim per agent connection (KiB)" "$arm" "$(calc "$conn > 0 ? ($unrec1 - $unrec0) / $conn : 0" 2)"
    fi

    # ---- idle
    if [[ -z $stopped ]]; then
        box0=$(box_busy_ticks) fe0=$(cpu_ns_sum "${fe[@]}") lg0=$(cpu_ns_sum "${lgs[@]}") t1=$(now_ms)
        sleep "$IDLE_S"
        box1=$(box_busy_ticks) fe1=$(cpu_ns_sum "${fe[@]}") lg1=$(cpu_ns_sum "${lgs[@]}")
        wall=$(ms_to_s "$t1" "$(now_ms)")
        record "idle: whole box CPU-s/s (of $(nproc))" "$arm" "$(calc "($box1 - $box0) / $CLK_TCK / $wall" 3)"
        record "idle: $frontends frontends CPU-s/s" "$arm" "$(calc "($fe1 - $fe0) / 1e9 / $wall" 3)"
        record "idle: loadgen CPU-s/s" "$arm" "$(calc "($lg1 - $lg0) / 1e9 / $wall" 3)"
        record "idle: everything else on the box CPU-s/s" "$arm" \
            "$(calc "($box1 - $box0) / $CLK_TCK / $wall - ($fe1 - $fe0 + $lg1 - $lg0) / 1e9 / $wall" 3)"
        record "idle: frontend CPU per agent (us/s)" "$arm" "$(calc "$conn > 0 ? ($fe1 - $fe0) / 1e3 / $wall / $conn : 0" 3)"
        net_snapshot "$dir/net-3-idle.txt"
        box_fleet_ok || stopped=1
    fi

    # ---- tasking round: MEASURE probe agents tasked through the master's API
    if [[ -z $stopped ]]; then
        # shellcheck disable=SC2046
        start_loadgen "$dir" tasking $((CONNECT_TIMEOUT + TASKS * 4 / ${TASK_RATE%.*} + 600)) --clients "$MEASURE" \
            --hostname-prefix probe- --ramp-per-second "$RAMP" --duration-s $((CONNECT_TIMEOUT + TASKS * 4 / ${TASK_RATE%.*} + 600)) \
            --scenario tasking --task-rate-per-second "$TASK_RATE" --probe-rate-per-second 0 $(api_args)
        echo "$LG_PID" >>"$dir/loadgen.pids"
        t1=$(now_ms)
        if wait_identities && wait_progress connected "$MEASURE" "$CONNECT_TIMEOUT"; then
            wait_progress tasks "$TASKS" $((TASKS * 4 / ${TASK_RATE%.*} + 300)) || true
        fi
        wall=$(ms_to_s "$t1" "$(now_ms)")
        stop_loadgen
        net_snapshot "$dir/net-4-tasking.txt"
        box_fleet_ok || stopped=1
        rp=$dir/tasking.json
        record "tasking: task latency p50 (ms)" "$arm" "$(rep '.task_latency.p50_us / 1000' "$rp" 2>/dev/null || echo -)"
        record "tasking: task latency p99 (ms)" "$arm" "$(rep '.task_latency.p99_us / 1000' "$rp" 2>/dev/null || echo -)"
        record "tasking: task latency max (ms)" "$arm" "$(rep '.task_latency.max_us / 1000' "$rp" 2>/dev/null || echo -)"
        record "tasking: tasks received / scheduled ($MEASURE probe agents)" "$arm" "$(rep '"\(.tasks_received)/\(.collections_scheduled)"' "$rp" 2>/dev/null || echo -)"
        record "tasking: round's wall time, probe agents' start included (s)" "$arm" "$wall"
        if ((MINIONS > 0)) && [[ -s $rp ]]; then
            same=https://$MASTER_NODE/
            cross_urls=()
            for node in "${MINION_NODES[@]}"; do cross_urls+=(--frontend "https://$node/"); done
            "$LOADGEN" --config "$dir/client.config.toml" --task-latency-of "$rp" --frontend "$same" >"$dir/latency-master.json" 2>>"$OUT/run.log" ||
                echo '{}' >"$dir/latency-master.json"
            "$LOADGEN" --config "$dir/client.config.toml" --task-latency-of "$rp" "${cross_urls[@]}" >"$dir/latency-minions.json" 2>>"$OUT/run.log" ||
                echo '{}' >"$dir/latency-minions.json"
            record "tasking: p99, agents on the master (ms)" "$arm" "$(rep '(.p99_us // null) / 1000' "$dir/latency-master.json" 2>/dev/null || echo -)"
            record "tasking: p99, agents on a minion (ms)" "$arm" "$(rep '(.p99_us // null) / 1000' "$dir/latency-minions.json" 2>/dev/null || echo -)"
        fi
    fi

    # ---- hunt round: one collection to every connected agent
    if [[ -z $stopped ]]; then
        LG_PID=$fleet_pid LG_ERR=$fleet_err
        hunt_n=$(progress connected)
        id=$(hunt_create "$HUNT_ARTIFACT") || id=""
        [[ $id == null ]] && id=""
        [[ -z $id ]] && log "box-fleet r$r: the hunt could not be created"
    fi
    if [[ -z $stopped && -n $id ]]; then
        tasks0=$(progress tasks)
        box_fleet_metrics "$dir" hunt0
        box0=$(box_busy_ticks) fe0=$(cpu_ns_sum "${fe[@]}")
        t_post=$(now_ms)
        api_post "/api/v1/hunts/$id/start" >"$dir/start.json" || log "box-fleet r$r: hunt start POST: curl exit $?"
        while (($(progress tasks) < tasks0 + hunt_n)); do
            box_fleet_ok || break
            if ! kill -0 "$fleet_pid" 2>/dev/null || (($(now_ms) - t_post > FANOUT_TIMEOUT * 1000)); then
                log "box-fleet r$r: the hunt's task reached $(($(progress tasks) - tasks0)) of $hunt_n agents"
                break
            fi
            sleep 0.2
        done
        box1=$(box_busy_ticks) fe1=$(cpu_ns_sum "${fe[@]}")
        wall=$(ms_to_s "$t_post" "$(now_ms)")
        t1=$(now_ms)
        while box_fleet_ok; do
            st=$(api "/api/v1/hunts/$id") || st={}
            read -r cc e <<<"$(jq -r '[.completed, .errors] | @tsv' <<<"$st" 2>/dev/null || echo '0 0')"
            ((${cc:-0} + ${e:-0} >= hunt_n || $(now_ms) - t1 > HUNT_TIMEOUT * 1000)) && break
            sleep 1
        done
        api "/api/v1/hunts/$id" >"$dir/hunt.json" || true
        start_ms=$(jq -r '.start_time_ms // 0' "$dir/hunt.json" 2>/dev/null || echo 0)
        hunt_t1=$(now_ms)
        box_fleet_metrics "$dir" hunt1
        net_snapshot "$dir/net-5-hunt.txt"
        box_fleet_ok || true
    fi

    # ---- cleanup: the watchdog (one that fired finishes stopping loadgen), loadgen, every
    # frontend (minions first)
    [[ -s $dir/watchdog.tsv ]] || kill -TERM "$wd_pid" 2>/dev/null || true
    wait "$wd_pid" 2>/dev/null || true
    LG_PID=$fleet_pid
    stop_loadgen
    for ((k = ${#fe[@]} - 1; k >= 0; k--)); do FE_PID=${fe[k]}; stop_frontend; done

    if [[ -n $id ]]; then
        rp=$dir/fleet.json
        record_hunt_disk hunt "$dir" "$id" "$start_ms" "$hunt_n"
        last_us=$(rep '.last_task_unix_us // 0' "$rp" 2>/dev/null || echo 0)
        first_us=$(rep '.first_task_unix_us // 0' "$rp" 2>/dev/null || echo 0)
        record "hunt: agents with its task / agents connected (loadgen)" hunt "$(($(rep .tasks_received "$rp" 2>/dev/null || echo "$tasks0") - tasks0))/$hunt_n"
        record "hunt: start -> first agent has its task (s)" hunt "$(calc "$first_us > 0 ? ($first_us / 1000 - $start_ms) / 1000 : -1" 2)"
        record "hunt: start -> last agent has its task (s)" hunt "$(calc "$last_us > 0 ? ($last_us / 1000 - $start_ms) / 1000 : -1" 2)"
        record "hunt: start POST -> loadgen counted all tasks (s)" hunt "$wall"
        record "hunt: frontends CPU-s in that window" hunt "$(calc "($fe1 - $fe0) / 1e9" 2)"
        record "hunt: whole box CPU-s/s in that window" hunt "$(calc "($box1 - $box0) / $CLK_TCK / $wall" 2)"
        for f in "$dir"/metrics-hunt0-*.txt; do
            f1=${f/hunt0/hunt1}
            rej=$((rej + $(metric_in "$f1" 'packhunt_upload_rejections_total{reason="concurrency"}') - $(metric_in "$f" 'packhunt_upload_rejections_total{reason="concurrency"}')))
        done
        record "hunt: upload 503s (concurrency), all frontends" hunt "$rej"
        record "hunt: MemAvailable, lowest while it ran (MiB)" hunt \
            "$(awk -F'\t' -v a="$t_post" -v b="$hunt_t1" '$1 >= a && $1 <= b { if (!n++ || $2 < m) m = $2 } END { print n ? m : "-" }' "$dir/memavail.tsv")"
    fi
    box_fleet_net "$dir"
    record "MemAvailable, lowest while the fleet was up (MiB)" "$arm" "$(awk -F'\t' '{ if (!n++ || $2 < m) m = $2 } END { print m + 0 }' "$dir/memavail.tsv")"
    [[ -s $dir/frontends-down.txt ]] && record "frontends that died during the run" "$arm" "$(paste -sd' ' "$dir/frontends-down.txt")"
    if [[ -s $dir/watchdog.tsv ]]; then
        read -r _ wk _ wa _ wf _ wl <"$dir/watchdog.tsv"
        record "memory watchdog" "$arm" "stopped by memory watchdog at $wk agents"
        record "at the stop: MemAvailable (MiB)" "$arm" "$wa"
        record "at the stop: frontend RSS per agent (KiB)" "$arm" "$(calc "$wk > 0 ? ($wf - $fe_base) / $wk : 0" 1)"
        record "at the stop: loadgen RSS per agent (KiB)" "$arm" "$(calc "$wk > 0 ? $wl / $wk : 0" 1)"
    else
        record "memory watchdog" "$arm" "not triggered (floor $WATCHDOG_MIN_MIB MiB)"
    fi
    # Deleted after the last repeat: a repeat's first contact would pay for this one's deletion.
    drop_datastore_later "$dir"
}

run_box_fleet() {
    local n=${1:-${N:-200000}} r
    AGENTS_PER_FRONTEND=${AGENTS_PER_FRONTEND:-18500}
    AGENTS_PER_WORKER=${AGENTS_PER_WORKER:-18000}
    MINIONS=$(((n + AGENTS_PER_FRONTEND - 1) / AGENTS_PER_FRONTEND - 1))
    ((MINIONS < 0)) && MINIONS=0
    WATCHDOG_MIN_MIB=${WATCHDOG_MIN_MIB:-1024}
    TASKS=${TASKS:-1000}
    TASK_RATE=${TASK_RATE:-20}
    MEASURE=${MEASURE:-100}
    HUNT_ARTIFACT=${HUNT_ARTIFACT:-Generic.Client.Info}
    SETTLE_S=${SETTLE_S:-5}
    IDLE_S=${IDLE_S:-20}
    FACTS_S=${FACTS_S:-600}
    # The ramp alone takes N / RAMP seconds; CONNECT_TIMEOUT (300) is for the small fleets.
    CONNECT_S=$((n * 2 / RAMP + CONNECT_TIMEOUT))
    FANOUT_TIMEOUT=${FANOUT_TIMEOUT:-$((n / 500 + 300))}
    HUNT_TIMEOUT=${HUNT_TIMEOUT:-$((n / 500 + 180))}
    FLEET_LIMIT=$((CONNECT_S * 2 + FACTS_S + IDLE_S + TASKS * 4 / ${TASK_RATE%.*} + FANOUT_TIMEOUT + HUNT_TIMEOUT + 1200))
    ((AGENTS_PER_FRONTEND <= 19488)) || log "box-fleet: AGENTS_PER_FRONTEND $AGENTS_PER_FRONTEND is above what a frontend takes (20,000 - 512 = 19,488): expect out_of_files refusals"
    ((AGENTS_PER_WORKER <= 19800)) || { log "box-fleet: AGENTS_PER_WORKER $AGENTS_PER_WORKER leaves loadgen fewer than 200 spare files of 20,000"; exit 1; }
    # The loopback's packets wait in the sending cpu's backlog (netdev_max_backlog, 1,000 by
    # default) until its softirq runs. With every frontend on cpu 0 and loadgen on cpu 1,
    # both busy, a 200,000-agent ramp overflowed it 805,828 times and connections died
    # unnoticed later (tuning.md); at 65,536, none. So the target raises it for the run,
    # as an operator of a busy server does, and restores it at exit (root; `keep` leaves
    # the box's value).
    NETDEV_MAX_BACKLOG=${NETDEV_MAX_BACKLOG:-65536}
    if [[ $NETDEV_MAX_BACKLOG != keep ]]; then
        ON_EXIT+=("sysctl -qw net.core.netdev_max_backlog=$(cat /proc/sys/net/core/netdev_max_backlog)")
        sysctl -qw "net.core.netdev_max_backlog=$NETDEV_MAX_BACKLOG" || { log "box-fleet: cannot set netdev_max_backlog (not root?); NETDEV_MAX_BACKLOG=keep runs with the box's"; exit 1; }
    fi
    log "box-fleet: $n agents over a master + $MINIONS minions (AGENTS_PER_FRONTEND $AGENTS_PER_FRONTEND), shards ${SHARDS:-1} each; loadgen workers of <= $AGENTS_PER_WORKER; memory floor $WATCHDOG_MIN_MIB MiB; then $TASKS tasks at $TASK_RATE/s to $MEASURE probe agents and one hunt ($HUNT_ARTIFACT) over all"
    for ((r = 1; r <= REPEATS; r++)); do box_fleet_one "$n" "$r"; done
    print_table "box-fleet: $n idle agents on one box, a master + $MINIONS minions, loadgen workers of <= $AGENTS_PER_WORKER ($OUT)"
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        log "box-fleet: datastores kept (KEEP_DATA=1): ${DEFERRED_DATASTORES[*]}"
    else
        log "box-fleet: deleting $REPEATS datastore(s) of ~$n client folders each. On this box's ext4 without a journal, inode allocations skip recently deleted inodes for 60-360 s afterwards (tuning.md, \"the disk's memory of deletions\"): runs that create many files in the next minutes are slower"
        drop_deferred_datastores
    fi
}

# ---------------------------------------------------------------- gui-paint ------------
# Time to first paint of each GUI view in headless Chromium (tests/gui_paint.rs, an ignored
# test that prints one JSON line per view), SEED clients (50,000) in the client index.
run_gui_paint() {
    local seed=${1:-${SEED:-50000}}
    log "gui-paint: each view's time to its data painted, $seed clients in the index"
    (cd "$ROOT" && SEED=$seed cargo test --release --test gui_paint -- \
        --ignored --nocapture --test-threads 1) 2>"$OUT/gui-paint.err" | sed -n 's/^[^{]*\({.*}\)$/\1/p' | tee "$OUT/gui-paint.jsonl"
    echo "| view | median ms | max ms |"
    echo "|---|---|---|"
    jq -r 'select(.view) | "| \(.view) | \(.median_ms // .first_contentful_paint_ms) | \(.max_ms // "-") |"' "$OUT/gui-paint.jsonl"
}

case $TARGET in
    p1) run_p1 "$@" ;;
    p1-fleet) run_p1_fleet "$@" ;;
    p2) run_p2 "$@" ;;
    p3) run_p3 "$@" ;;
    p4) run_p4 "$@" ;;
    p5) run_p5 "$@" ;;
    p6) run_p6 "$@" ;;
    hunt) run_hunt "$@" ;;
    storm) run_storm "$@" ;;
    p2-fleet) run_p2_fleet "$@" ;;
    box-fleet) run_box_fleet "$@" ;;
    events) run_events "$@" ;;
    files) run_files "$@" ;;
    gui-paint) run_gui_paint "$@" ;;
    p3-mount)
        # shellcheck source=benches/p3_mount.sh
        source "$ROOT/benches/p3_mount.sh"
        run_p3_mount "$@"
        ;;
    soak)
        # shellcheck source=benches/soak.sh
        source "$ROOT/benches/soak.sh"
        run_soak "$@"
        ;;
    *) usage ;;
esac
