# benches/lib.sh — helpers shared by the measurement scripts (sourced, not run).
#
# The sourcing script sets OUT (results folder) and calls lib_init, which snapshots the
# binaries, opens $OUT/run.log and installs the cleanup trap. Deployments, frontends and
# loadgens started through these helpers are remembered and stopped by that trap, however
# the script ends. Everything listens on loopback only.
#
# Knobs read here: BIN_DIR (packhunt + loadgen, default this tree's target/release),
# LOADGEN_CPUS (taskset list for loadgen, default 1; empty = unpinned), CONNECT_TIMEOUT (s).

LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLK_TCK=$(getconf CLK_TCK)
PW=pw
LOADGEN_CPUS=${LOADGEN_CPUS-1}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-300}
FE_PID="" LG_PID="" GUI_PORT=""
ALL_FE_PIDS=() ALL_LG_PIDS=()
ALL_AUX_PIDS=()   # background helpers of a target (e.g. box-fleet's memory watchdog): SIGTERM
ON_EXIT=()        # commands run last at exit (e.g. a kernel setting a target changed, restored)

lib_init() {   # lib_init NAME: binaries, log, trap
    local name=$1 tool
    for tool in curl jq ss dd awk taskset sha256sum; do
        command -v "$tool" >/dev/null || { echo "$name: needs $tool" >&2; exit 1; }
    done
    BIN_DIR=${BIN_DIR:-$LIB_ROOT/target/release}
    if [[ ! -x $BIN_DIR/packhunt || ! -x $BIN_DIR/loadgen ]]; then
        [[ $BIN_DIR == "$LIB_ROOT/target/release" ]] || { echo "$name: no binaries in $BIN_DIR" >&2; exit 1; }
        (cd "$LIB_ROOT" && cargo build --release --workspace)
    fi
    mkdir -p "$OUT/bin"
    # A concurrent `cargo build --release` may relink the binaries mid-run.
    cp "$BIN_DIR/packhunt" "$BIN_DIR/loadgen" "$OUT/bin/"
    PACKHUNT=$OUT/bin/packhunt
    LOADGEN=$OUT/bin/loadgen
    RESULTS=$OUT/results.tsv
    RATIOS=$OUT/ratios.tsv
    : >"$RESULTS"
    : >"$RATIOS"
    trap lib_cleanup EXIT
    trap 'exit 130' INT TERM
}

lib_cleanup() {
    local p
    for p in "${ALL_AUX_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${ALL_LG_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${ALL_FE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${ALL_LG_PIDS[@]}" "${ALL_FE_PIDS[@]}"; do
        # timeout's loadgen child first, while it is still timeout's child
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in "${ON_EXIT[@]}"; do eval "$p" || true; done
}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
now_ms() { date +%s%3N; }
ms_to_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rep() { jq -r "$1" "$2"; }

# ---------------------------------------------------------------- deployments --------
free_port() {   # below the ephemeral range (32768-60999), so agents' source ports never collide
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ -z $(ss -Htan "( sport = :$p )") && ! -e $OUT/.port.$p ]] && { : >"$OUT/.port.$p"; echo "$p"; return; }
    done
}

deploy() {   # deploy DIR: a fresh deployment on free loopback ports; sets GUI_PORT
    local dir=$1 fport
    fport=$(free_port)
    GUI_PORT=$(free_port)
    "$PACKHUNT" config generate --out "$dir" --admin-password "$PW" \
        --frontend-port "$fport" --gui-port "$GUI_PORT" >"$dir.generate.log" 2>&1
    echo "$GUI_PORT" >"$dir/gui.port"
    # The generated agent port binds 0.0.0.0; benchmarks stay on loopback.
    set_key "$dir" frontend bind_address '"127.0.0.1"'
    unshed "$dir"
}

# unshed DIR: loadgen's --ramp-per-second paces the fleet; the frontend's load shedding
# (max_connections_per_second, 200 by default) would cap every ramp at its rate and turn
# ramp figures into a measure of the limit. MAX_CONNECTIONS_PER_SECOND overrides.
unshed() {
    set_key "$1" limits max_connections_per_second "${MAX_CONNECTIONS_PER_SECOND:-1000000}"
}

set_key_in() {   # set_key_in FILE SECTION KEY VALUE (TOML literal): replace a key the generator wrote
    awk -v sec="[$2]" -v k="$3" -v v="$4" '
        /^\[/ { cur = $0 }
        cur == sec && $1 == k && $2 == "=" && !done { print k " = " v; done = 1; next }
        { print }
        END { if (!done) exit 3 }' "$1" >"$1.new" || { log "set_key: no $3 in [$2] of $1"; exit 1; }
    mv "$1.new" "$1"
}

set_key() {   # set_key DIR SECTION KEY VALUE: set_key_in for every frontend's config in DIR
    local f
    for f in "$1"/server.config.toml "$1"/minion-*.config.toml; do
        [[ -f $f ]] || continue
        set_key_in "$f" "$2" "$3" "$4"
    done
}

put_key() {   # put_key DIR SECTION KEY VALUE: as set_key, adding the key if the generator left it out
    local f
    for f in "$1"/server.config.toml "$1"/minion-*.config.toml; do
        [[ -f $f ]] || continue
        if ! awk -v sec="[$2]" -v k="$3" '/^\[/ { cur = $0 } cur == sec && $1 == k && $2 == "=" { found = 1 } END { exit !found }' "$f"; then
            awk -v sec="[$2]" -v k="$3" -v v="$4" '{ print } $0 == sec { print k " = " v }' "$f" >"$f.new" && mv "$f.new" "$f"
        fi
    done
    set_key "$@"
}

use_deployment() { GUI_PORT=$(cat "$1/gui.port"); }

# deploy_cluster DIR MINIONS: a fresh deployment (as `deploy`) plus a replication port and
# MINIONS minions on free loopback ports, each with a /metrics port. Sets GUI_PORT,
# MASTER_NODE and MINION_NODES (HOST:PORT) and MINION_METRICS_PORTS (same order). Keys
# set with set_key afterwards apply to every frontend: set_key edits server.config.toml and
# each minion's own config.
deploy_cluster() {
    local dir=$1 minions=$2 fport k node
    fport=$(free_port)
    GUI_PORT=$(free_port)
    "$PACKHUNT" config generate --out "$dir" --admin-password "$PW" --frontend-port "$fport" \
        --gui-port "$GUI_PORT" --replication-port "$(free_port)" >"$dir.generate.log" 2>&1
    echo "$GUI_PORT" >"$dir/gui.port"
    set_key "$dir" frontend bind_address '"127.0.0.1"'
    unshed "$dir"
    MASTER_NODE=127.0.0.1:$fport
    MINION_NODES=() MINION_METRICS_PORTS=()
    for ((k = 0; k < minions; k++)); do
        node=127.0.0.1:$(free_port)
        MINION_METRICS_PORTS+=("$(free_port)")
        "$PACKHUNT" config frontend --config "$dir/server.config.toml" --name "$node" \
            --metrics-port "${MINION_METRICS_PORTS[k]}" >>"$dir.generate.log" 2>&1
        MINION_NODES+=("$node")
    done
}

# ---------------------------------------------------------------- processes ----------
start_frontend() {   # start_frontend DIR [ENV=VALUE ...]: sets FE_PID once it says ready
    local dir=$1 i
    shift
    env "$@" "$PACKHUNT" frontend --config "$dir/server.config.toml" >"$dir/frontend.out" 2>"$dir/frontend.err" &
    FE_PID=$!
    ALL_FE_PIDS+=("$FE_PID")
    for ((i = 0; i < 300; i++)); do
        grep -q ready "$dir/frontend.out" 2>/dev/null && { log "frontend $FE_PID ($*): $(head -1 "$dir/frontend.out")"; return; }
        kill -0 "$FE_PID" 2>/dev/null || { log "frontend died at start:"; tail -20 "$dir/frontend.err" >&2; exit 1; }
        sleep 0.1
    done
    log "frontend not ready after 30 s"
    exit 1
}

start_minion() {   # start_minion DIR HOST:PORT [ENV=VALUE ...]: sets FE_PID once it says ready
    local dir=$1 node=$2 out i
    shift 2
    out=$dir/minion-${node##*:}
    # A minion runs from its own config (the only one with its key); older ones shared it.
    local config=$dir/minion-${node//[^A-Za-z0-9.-]/_}.config.toml
    [[ -f $config ]] || config=$dir/server.config.toml
    env "$@" "$PACKHUNT" frontend --config "$config" --minion --node "$node" >"$out.out" 2>"$out.err" &
    FE_PID=$!
    ALL_FE_PIDS+=("$FE_PID")
    for ((i = 0; i < 300; i++)); do
        grep -q ready "$out.out" 2>/dev/null && { log "minion $node $FE_PID: $(head -1 "$out.out")"; return; }
        kill -0 "$FE_PID" 2>/dev/null || { log "minion $node died at start:"; tail -20 "$out.err" >&2; exit 1; }
        sleep 0.1
    done
    log "minion $node not ready after 30 s"
    exit 1
}

wait_frontends_up() {   # wait_frontends_up COUNT TIMEOUT_S -> 0 once the master lists COUNT frontends up
    local want=$1 limit=$2 start up=0
    start=$(now_ms)
    while (($(now_ms) - start < limit * 1000)); do
        up=$(api /api/v1/frontends 2>/dev/null | jq '[.items[]? | select(.up)] | length' 2>/dev/null || echo 0)
        ((${up:-0} >= want)) && return 0
        sleep 0.2
    done
    log "only ${up:-0} of $want frontends up after $limit s: $(api /api/v1/frontends 2>/dev/null)"
    return 1
}

stop_frontend() {   # SIGTERM (graceful), SIGKILL after 15 s
    local i
    [[ -z $FE_PID ]] && return
    kill -TERM "$FE_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$FE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FE_PID" 2>/dev/null || true
    wait "$FE_PID" 2>/dev/null || true
    FE_PID=""
}

# start_loadgen DIR NAME LIMIT_S ARGS...: loadgen for DIR's deployment, report $DIR/NAME.json,
# stderr $DIR/NAME.err; sets LG_PID (the `timeout` wrapper that ends it after LIMIT_S).
start_loadgen() {
    local dir=$1 name=$2 limit=$3 pin=() prio=()
    shift 3
    [[ -n $LOADGEN_CPUS ]] && pin=(taskset -c "$LOADGEN_CPUS")
    [[ -n ${LOADGEN_NICE:-} ]] && prio=(nice -n "$LOADGEN_NICE")
    timeout --signal=INT --kill-after=30 "$limit" "${prio[@]}" "${pin[@]}" \
        "$LOADGEN" --config "$dir/client.config.toml" --report "$dir/$name.json" "$@" 2>"$dir/$name.err" &
    LG_PID=$!
    ALL_LG_PIDS+=("$LG_PID")
    LG_ERR=$dir/$name.err
}

stop_loadgen() {   # SIGINT: loadgen stops its agents and writes the report
    local i lg
    [[ -z $LG_PID ]] && return
    lg=$(loadgen_pid)
    kill -INT "${lg:-$LG_PID}" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LG_PID" 2>/dev/null || true
    wait "$LG_PID" 2>/dev/null || true
    LG_PID=""
}

wait_loadgen_exit() {   # wait_loadgen_exit TIMEOUT_S -> 0 if loadgen ended by itself
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        kill -0 "$LG_PID" 2>/dev/null || { wait "$LG_PID" 2>/dev/null || true; LG_PID=""; return 0; }
        sleep 0.1
    done
    return 1
}

loadgen_pid() { pgrep -P "$LG_PID" -x loadgen | head -1 || true; }   # the child of `timeout`

wait_identities() {   # until loadgen has made its keys and starts ramping (or exits)
    local i
    for ((i = 0; i < 6000; i++)); do
        grep -q 'identities ready\|worker processes' "$LG_ERR" 2>/dev/null && return 0
        kill -0 "$LG_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# progress FIELD: the latest value loadgen printed for FIELD (connected, tasks, flows,
# errors, reconnects, tickets) in its once-a-second progress line; 0 before the first.
progress() {
    awk -v f="$1" '/^\[ *[0-9]+s\] connected / { for (i = 2; i < NF; i++) if ($i == f) v = $(i + 1) }
                   END { sub(/\/.*/, "", v); print v + 0 }' "$LG_ERR" 2>/dev/null || echo 0
}

# wait_progress FIELD TARGET TIMEOUT_S -> 0 once FIELD >= TARGET, 1 on timeout or exit.
wait_progress() {
    local field=$1 target=$2 limit=$3 start
    start=$(now_ms)
    while (($(progress "$field") < target)); do
        if (($(now_ms) - start > limit * 1000)) || ! kill -0 "$LG_PID" 2>/dev/null; then
            log "loadgen $field reached only $(progress "$field") of $target"
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- probes -------------
api() { curl -sk --max-time 60 -u "admin:$PW" "https://127.0.0.1:$GUI_PORT$1"; }
api_post() {   # api_post PATH [JSON]: POST to the master's API, body on stdout
    local body='{}'
    [[ -n ${2:-} ]] && body=$2
    curl -sSk --max-time 60 -u "admin:$PW" -X POST -H 'content-type: application/json' --data "$body" "https://127.0.0.1:$GUI_PORT$1"
}
metrics_to() { api /metrics >"$1" 2>/dev/null || : >"$1"; }
metric_in() {   # metric_in FILE 'name' or 'name{label="x"}' -> value (0 if absent)
    awk -v m="$2" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }' "$1"
}
metric() { api /metrics 2>/dev/null | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'; }
refusals_in() {   # refusals_in FILE -> "reason n, ..." for the nonzero connection refusals
    awk -F'[{}"= ]+' '/^packhunt_connection_refusals_total\{/ && $NF != 0 { printf "%s%s %s", s, $3, $NF; s = ", " }
                      END { if (!s) printf "none" }' "$1"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# reset_peak_rss PID: from now on VmHWM is the peak of this window, not of the process's life
# (clear_refs 5, Linux >= 4.0; needs to own the process or be root).
reset_peak_rss() { echo 5 >"/proc/$1/clear_refs"; }

proc_ticks() {   # utime + stime of a process in clock ticks (0 if it is gone)
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# cpu_ns PID: CPU time of all the process's threads (schedstat), in ns. utime + stime
# count in ticks of 10 ms, too coarse for a thousand handshakes of ~0.3 ms each.
cpu_ns() {
    [[ -n $1 && -d /proc/$1/task ]] || { echo 0; return; }
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'   # %d saturates at 2^31 in mawk
}
# run_wait_ns PID: time all the process's threads spent runnable but waiting for a CPU
# (schedstat's second field), in ns: how much a busy neighbour delayed them.
run_wait_ns() {
    [[ -n $1 && -d /proc/$1/task ]] || { echo 0; return; }
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s }'
}
# cpu_snap PID -> "wall_ms cpu_ns ticks"; cpu_delta A B -> "cpu_s wall_s ticks_s"
cpu_snap() { echo "$(now_ms) $(cpu_ns "$1") $(proc_ticks "$1")"; }
cpu_delta() {
    awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " ")
        printf "%.6f %.3f %.2f\n", (y[2] - x[2]) / 1e9, (y[1] - x[1]) / 1000, (y[3] - x[3]) / t }'
}

dd_rate() {   # dd_rate DIR MB -> MB/s (10^6 bytes) of a sequential append with fdatasync
    local f=$1/dd.test line
    line=$(dd if=/dev/zero of="$f" bs=1M count="$2" oflag=append conv=notrunc,fdatasync 2>&1 | tail -1)
    rm -f "$f"
    echo "dd: $line" >>"$OUT/run.log"
    # "... copied, 2.1 s, 511 MB/s" -> bytes / seconds, whatever unit dd picked
    echo "$line" | awk -F', ' '{ split($1, b, " "); split($(NF-1), s, " "); printf "%.1f\n", b[1] / s[1] / 1e6 }'
}

calc() { awk "BEGIN { x = $1; printf \"%.${2:-2}f\n\", x }"; }

box_busy_ticks() {   # CPU ticks the whole box spent busy (user, nice, system, irq, softirq) since boot
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}

# net_snapshot FILE: the kernel's network counters as "name value" lines: every TcpExt and
# Tcp counter (/proc/net/netstat, /proc/net/snmp), the backlog drops and time squeezes
# summed over the cpus (/proc/net/softnet_stat, hex), and the TCP socket gauges of
# /proc/net/sockstat (mem in pages). Whole-uptime counters: compare two snapshots.
net_snapshot() {
    {
        awk '$1 == "TcpExt:" || $1 == "Tcp:" { if (!($1 in names)) { names[$1] = $0; next }
                                              n = split(names[$1], k); for (i = 2; i <= n; i++) print k[i], $i }' \
            /proc/net/netstat /proc/net/snmp
        local _ d q dropped=0 squeezed=0
        while read -r _ d q _; do ((dropped += 16#$d, squeezed += 16#$q)); done </proc/net/softnet_stat
        echo "softnet_dropped $dropped"
        echo "softnet_time_squeeze $squeezed"
        awk '$1 == "TCP:" { for (i = 2; i < NF; i += 2) print "sockstat_tcp_" $i, $(i + 1) }' /proc/net/sockstat
    } >"$1" 2>/dev/null
}
# net_delta BEFORE AFTER NAME...: "name delta, ..." of the named counters that changed
# between two net_snapshot files ("none" when none did)
net_delta() {
    local a=$1 b=$2
    shift 2
    awk -v want="$*" 'BEGIN { n = split(want, w); for (i = 1; i <= n; i++) keep[w[i]] = i }
                      FNR == 1 { file++ } ($1 in keep) { v[file, $1] = $2 }
                      END { for (i = 1; i <= n; i++) { d = v[2, w[i]] - v[1, w[i]]
                                                       if (d) { printf "%s%s %d", sep, w[i], d; sep = ", " } }
                            if (!sep) printf "none" }' "$a" "$b"
}
# What kills or refuses loopback connections under load, for net_delta.
NET_TROUBLE_COUNTERS="TCPAbortOnTimeout TCPAbortOnMemory TCPAbortOnData TCPAbortOnClose TCPAbortOnLinger TCPAbortFailed
ListenOverflows ListenDrops TCPBacklogDrop TCPMemoryPressures TCPReqQFullDrop TCPTimeouts TCPSynRetrans
EstabResets AttemptFails softnet_dropped softnet_time_squeeze"

metrics_at() {   # metrics_at PORT FILE: /metrics of the frontend serving it on PORT (a minion's)
    curl -sk --max-time 60 -u "admin:$PW" "https://127.0.0.1:$1/metrics" >"$2" 2>/dev/null || : >"$2"
}
metric_total_in() {   # metric_total_in FILE NAME -> sum over every label set of NAME (0 if absent)
    awk -v m="$2" '{ n = $1; sub(/\{.*/, "", n) } n == m { s += $2 } END { printf "%.0f\n", s }' "$1"
}

# ---------------------------------------------------------------- datastore ----------
info_docs() {   # info_docs DIR -> agents whose facts (info.json) are on disk
    find "$1/datastore/clients" -mindepth 2 -maxdepth 2 -name info.json 2>/dev/null | wc -l
}

# datastore_at DIR PATH: the deployment's datastore at PATH (e.g. on tmpfs), reachable as
# DIR/datastore like any other so the helpers here find it.
datastore_at() {
    set_key "$1" datastore location "\"$2\""
    mkdir -p "$2"
    [[ -d $1/datastore && ! -L $1/datastore ]] && cp -a "$1/datastore/." "$2/" && rm -rf "$1/datastore"
    ln -sfn "$2" "$1/datastore"
}

# Deleting a datastore leaves tens of thousands of free inodes that ext4 without a journal
# (this box's disk) skips for 60-300 s when it allocates new ones (fs/ext4/ialloc.c,
# recently_deleted()): deleted between arms, the next arm's file creations would pay for
# the previous arm's files. Targets that create many files defer deletion to the end.
DEFERRED_DATASTORES=()
drop_datastore_later() { DEFERRED_DATASTORES+=("$1/datastore"); }
drop_deferred_datastores() {
    local d
    [[ ${KEEP_DATA:-0} == 1 ]] && return
    for d in "${DEFERRED_DATASTORES[@]}"; do
        if [[ -L $d ]]; then rm -rf "$(readlink -f "$d")"; rm -f "$d"; else rm -rf "$d"; fi
    done
    DEFERRED_DATASTORES=()
}

# hunt_disk_times DIR HUNT_ID [UNTIL_MS] -> "participants first_create_us last_create_us
# flows_finished flows_failed last_finish_ms flows_on_disk answered_by" from the participants file
# (a line per recruit) and each flow's request.json and status.json: the hunt's own
# record, reproducible after the run. A hunt's flow folder comes with its agent's first
# answer, so the create times and states are those of the flows_on_disk that answered.
# answered_by: flows whose first answer was written (start_time_ms) by UNTIL_MS (default
# 0), the answers' ingest that fell inside a window such as the fan-out's.
hunt_disk_times() {
    local ds=$1/datastore part=$1/datastore/hunts/$2.participants
    [[ -s $part ]] || { echo "0 0 0 0 0 0 0 0"; return; }
    paste -d' ' \
        <(wc -l <"$part") \
        <(awk -v d="$ds/clients" '{ print d "/" $1 "/collections/" $2 "/request.json" }' "$part" | xargs -d '\n' cat 2>/dev/null |
            jq -rs '[(map(.create_time_us) | min // 0), (map(.create_time_us) | max // 0)] | @tsv' | tr '\t' ' ') \
        <(awk -v d="$ds/clients" '{ print d "/" $1 "/collections/" $2 "/status.json" }' "$part" | xargs -d '\n' cat 2>/dev/null |
            jq -rs --argjson until "${3:-0}" '[(map(select(.state == "finished")) | length), (map(select(.state == "error")) | length),
                     (map(.finish_time_ms // 0) | max // 0), length,
                     (map(select((.start_time_ms // 1e18) <= $until)) | length)] | @tsv' | tr '\t' ' ')
}

# ---------------------------------------------------------------- results ------------
# record FIGURE ARM VALUE: one repeat's value (in repeat order) of FIGURE for ARM.
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; log "  $1 [$2] = $3"; }

median() {   # median V... (numbers only; others are skipped) -> median or "-"
    printf '%s\n' "$@" | awk '$1 ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/' | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_of() {   # median_of FIGURE ARM
    local vals
    mapfile -t vals < <(awk -F'\t' -v f="$1" -v a="$2" '$1 == f && $2 == a { print $3 }' "$RESULTS")
    median "${vals[@]}"
}

# difference LABEL FIGURE_A ARM_A FIGURE_B ARM_B: median(A) - median(B), in the ratios table
difference() {
    local a b
    a=$(median_of "$2" "$3")
    b=$(median_of "$4" "$5")
    printf '%s\t%s\n' "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.3f", a - b }')" >>"$RATIOS"
}

# ratio LABEL FIGURE_A ARM_A FIGURE_B ARM_B: median(A) / median(B)
ratio() {
    local a b
    a=$(median_of "$2" "$3")
    b=$(median_of "$4" "$5")
    printf '%s\t%s\n' "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.3f", a / b }')" >>"$RATIOS"
}

# print_table TITLE: every figure and arm with its repeats and median, then the ratios
# (of medians); to stdout and $OUT/table.md.
print_table() {
    {
        echo "## $1"
        echo
        awk -F'\t' '
            { k = $1 SUBSEP $2; if (!(k in n)) order[++m] = k; v[k, ++n[k]] = $3; if (n[k] > w) w = n[k] }
            END {
                printf "| figure | arm |"; for (i = 1; i <= w; i++) printf " r%d |", i; printf " median |\n"
                printf "|---|---|"; for (i = 1; i <= w; i++) printf "---|"; printf "---|\n"
                for (j = 1; j <= m; j++) {
                    split(order[j], fa, SUBSEP); printf "| %s | %s |", fa[1], fa[2]
                    c = 0; delete nums
                    for (i = 1; i <= w; i++) { x = v[order[j], i]; printf " %s |", (i <= n[order[j]] ? x : "")
                        if (i <= n[order[j]] && x ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/) nums[++c] = x + 0 }
                    for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (nums[b] < nums[a]) { t = nums[a]; nums[a] = nums[b]; nums[b] = t }
                    if (!c) med = "-"; else if (c % 2) med = nums[(c + 1) / 2]; else med = (nums[c / 2] + nums[c / 2 + 1]) / 2
                    printf " %s |\n", med
                }
            }' "$RESULTS"
        if [[ -s $RATIOS ]]; then
            echo
            echo "| ratio (of medians) | value |"
            echo "|---|---|"
            awk -F'\t' '{ printf "| %s | %s |\n", $1, $2 }' "$RATIOS"
        fi
    } | tee "$OUT/table.md"
}
