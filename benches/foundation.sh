#!/usr/bin/env bash
# benches/foundation.sh — the first all-in-one measurement script (its figures are in
# tuning.md's git history); benches/targets.sh produces tuning.md's current figures.
#
#   bash benches/foundation.sh [N ...]          # default: 5000 15000
#
# For each variant in VARIANTS (default "true false true-nothp": datastore.fsync_documents =
# true, which `config generate` writes, or false; "-nothp" starts the frontend with
# MIMALLOC_ALLOW_THP=0, i.e. transparent huge pages off for its process) and each N,
# on a fresh deployment and a fresh frontend:
#   connect N loadgen agents (ramp RAMP/s), report time to connect all, connect_time
#   p50/p99, frontend RSS baseline vs all connected -> KiB per agent.
# While the largest N is connected: two batches of TASKS collections (Generic.Client.Info)
#   to random connected agents, TASK_GAP_MS apart: batch1 right after all connected, batch2
#   once the API lists every agent; task latency p50/p99 from loadgen's report (both
#   batches) and create -> finished per batch from status.json.
# Ingest: INGEST_AGENTS agents get the 4-artifact collection at once; ingest MB/s =
#   delta packhunt_result_bytes_written_total / (first POST -> last finish_time_ms),
#   against the datastore disk's own sequential append rate (dd right before and after).
# During the ramp and the ingest: CPU-seconds per second of the frontend (per thread, with
#   run-queue wait from /proc/*/schedstat), of loadgen and of the whole box (/proc/stat).
#
# Environment (all optional):
#   OUT=dir                   results (default: new mktemp -d under /tmp)
#   BIN_DIR=dir               packhunt + loadgen to measure (default: target/release here)
#   VARIANTS="true false true-nothp"  variants, run in this order (see above)
#   RAMP=1000                 loadgen --ramp-per-second
#   TASKS=300 TASK_GAP_MS=20  task-latency collections and their spacing
#   INGEST_AGENTS=2000        fleet for the ingest measurement (0 = skip)
#   PARALLEL_POSTS=64         concurrent API requests while scheduling the ingest
#   CONNECT_TIMEOUT=180       seconds to wait for a fleet before recording a miss
#   DD_MB=1024                size of each dd run
#   PERF=0                    1: also `perf record` the frontend (499 Hz, call graphs) over
#                             each ramp and the ingest, and print where its CPU went
#
# Loopback only. Every process started here is stopped here (loadgen by --duration-s /
# SIGINT / timeout, the frontend by SIGTERM then SIGKILL). Frontend and loadgen share the
# box (2 cores): no CPU pinning beyond what the frontend does to its own shards.
# TCP counters come from /proc/net/netstat and so count the whole box, not only this run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNTS=("$@")
[[ ${#COUNTS[@]} -eq 0 ]] && COUNTS=(5000 15000)
read -r -a VARIANTS <<<"${VARIANTS:-true false true-nothp}"
RAMP=${RAMP:-1000}
TASKS=${TASKS:-300}
TASK_GAP_MS=${TASK_GAP_MS:-20}
INGEST_AGENTS=${INGEST_AGENTS:-2000}
PARALLEL_POSTS=${PARALLEL_POSTS:-64}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-180}
DD_MB=${DD_MB:-1024}
PERF=${PERF:-0}
OUT=${OUT:-$(mktemp -d /tmp/packhunt-foundation.XXXXXX)}
PW=pw
INGEST_ARTIFACTS='["Linux.Sys.Pslist","Linux.Network.Netstat","Generic.Files.Glob","Linux.Sys.Users"]'
LATENCY_N=$(printf '%s\n' "${COUNTS[@]}" | sort -n | tail -1)
CLK_TCK=$(getconf CLK_TCK)

for tool in curl jq ss dd awk shuf sha256sum; do
    command -v "$tool" >/dev/null || { echo "foundation.sh: needs $tool" >&2; exit 1; }
done
[[ ${PERF:-0} != 1 ]] || command -v perf >/dev/null || { echo "foundation.sh: PERF=1 needs perf" >&2; exit 1; }
# BIN_DIR: where packhunt and loadgen come from (default: this tree's release build). A
# SOURCE_COMMIT file two levels up (a `git archive` export) names the commit they were built from.
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
if [[ ! -x $BIN_DIR/packhunt || ! -x $BIN_DIR/loadgen ]]; then
    [[ $BIN_DIR == "$ROOT/target/release" ]] || { echo "foundation.sh: no binaries in $BIN_DIR" >&2; exit 1; }
    (cd "$ROOT" && cargo build --release --workspace)
fi
mkdir -p "$OUT/bin"
# Snapshot the binaries: a concurrent `cargo build/test --release` may relink them mid-run.
cp "$BIN_DIR/packhunt" "$BIN_DIR/loadgen" "$OUT/bin/"
BUILT=$(date -r "$BIN_DIR/packhunt" '+%F %T')
PACKHUNT=$OUT/bin/packhunt
LOADGEN=$OUT/bin/loadgen

log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$OUT/run.log" >&2; }
now_ms() { date +%s%3N; }
SUMMARY=$OUT/summary.tsv
: >"$SUMMARY"
VARIANT=""
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "${VARIANT:-all}" "$3" >>"$SUMMARY"; }   # step figure variant value
ms_to_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

# ---------------------------------------------------------------- processes ----------
FE_PID="" LG_PID="" GUI_PORT=""
cleanup() {
    if [[ -n ${PERF_PID:-} ]]; then kill -INT "$PERF_PID" 2>/dev/null || true; fi
    if [[ -n $LG_PID ]]; then kill -INT "$LG_PID" 2>/dev/null || true; sleep 2; kill -KILL "$LG_PID" 2>/dev/null || true; fi
    if [[ -n $FE_PID ]]; then kill -TERM "$FE_PID" 2>/dev/null || true; sleep 2; kill -KILL "$FE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

free_port() {   # below the ephemeral range (32768-60999), so agents' source ports never collide
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ -z $(ss -Htan "( sport = :$p )") ]] && { echo "$p"; return; }
    done
}

deploy() {   # deploy DIR: a fresh deployment (CA, certs, admin user) on free loopback ports
    local dir=$1 fport
    fport=$(free_port)
    GUI_PORT=$(free_port)
    while [[ $GUI_PORT == "$fport" ]]; do GUI_PORT=$(free_port); done
    "$PACKHUNT" config generate --out "$dir" --admin-password "$PW" \
        --frontend-port "$fport" --gui-port "$GUI_PORT" >"$dir.generate.log" 2>&1
    # The generated agent port binds 0.0.0.0; this benchmark stays on loopback.
    sed -i 's/^bind_address = "0.0.0.0"/bind_address = "127.0.0.1"/' "$dir/server.config.toml"
    sed -i "s/^fsync_documents = .*/fsync_documents = ${VARIANT%%-*}/" "$dir/server.config.toml"
}

start_frontend() {
    local dir=$1 i
    # -nothp: mimalloc's allow_thp option off, so it calls prctl(PR_SET_THP_DISABLE) at start.
    local thp=1
    [[ $VARIANT == *-nothp ]] && thp=0
    MIMALLOC_ALLOW_THP=$thp "$PACKHUNT" frontend --config "$dir/server.config.toml" >"$dir/frontend.out" 2>"$dir/frontend.err" &
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

start_loadgen() {   # start_loadgen DIR N DURATION_S
    local dir=$1 n=$2 d=$3
    timeout --signal=INT --kill-after=30 $((d + 120)) \
        "$LOADGEN" --config "$dir/client.config.toml" --clients "$n" --duration-s "$d" \
        --ramp-per-second "$RAMP" --report "$dir/loadgen.json" 2>"$dir/loadgen.err" &
    LG_PID=$!
}

stop_loadgen() {   # SIGINT (forwarded by timeout): loadgen stops its agents, writes the report
    local i
    [[ -z $LG_PID ]] && return
    kill -INT "$LG_PID" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LG_PID" 2>/dev/null || true
    wait "$LG_PID" 2>/dev/null || true
    LG_PID=""
}

loadgen_pid() { pgrep -P "$LG_PID" -x loadgen | head -1 || true; }   # the child of `timeout`

wait_identities() {   # until loadgen has made its keys and starts ramping (or exits)
    local dir=$1 i
    for ((i = 0; i < 6000; i++)); do
        grep -q 'identities ready' "$dir/loadgen.err" 2>/dev/null && return
        kill -0 "$LG_PID" 2>/dev/null || return
        sleep 0.1
    done
}

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
nonzero() {   # nonzero FILE PREFIX -> the labelled counters of PREFIX that are not 0
    grep "^$2{" "$1" | awk '$2 != 0 { printf "%s %s ", $1, $2 }' | sed "s/$2//g"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rep() { jq -r "$1" "$2"; }

proc_ticks() {   # utime + stime of a process (0 if it is gone)
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# snap FILE: frontend threads (tid:comm run_ns runq_wait_ns), then process and box counters
snap() {
    local t lg
    lg=$(loadgen_pid)
    {
        for t in /proc/"$FE_PID"/task/*; do
            printf 'T %s:%s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" "$(cut -d' ' -f1-2 "$t/schedstat")"
        done
        echo "IDS $FE_PID ${lg:-0}"
        echo "FE $(proc_ticks "$FE_PID")"
        echo "LG $(proc_ticks "$lg")"
        head -1 /proc/stat   # cpu user nice system idle iowait irq softirq steal
        awk '/^TcpExt:/ { if (!h) { split($0, k); h = 1 } else for (i = 2; i <= NF; i++) v[k[i]] = $i }
             END { print "NET", v["ListenOverflows"], v["ListenDrops"], v["TCPSynRetrans"] }' /proc/net/netstat
        # every process: P pid:comm ticks (to name whatever else shares the box)
        awk '{ o = index($0, "("); c = $0; sub(/^.*\) /, "", c); split(c, f, " ")
               comm = substr($0, o + 1, length($0) - length(c) - o - 2); gsub(/ /, "_", comm)
               print "P", $1 ":" comm, f[12] + f[13] }' /proc/[0-9]*/stat 2>/dev/null || true
        echo "MS $(now_ms)"
    } >"$1"
}
# window STEP LABEL BEFORE AFTER: CPU-seconds per second between two snaps
window() {
    local step=$1 label=$2 a=$3 b=$4
    record "$step" "$label: CPU-s/s frontend / loadgen / box busy / box iowait (2 cores = 2.0)" "$(
        awk -v t="$CLK_TCK" '
            FNR == NR { v0[$1] = $0 } FNR != NR { v1[$1] = $0 }
            END {
                split(v0["MS"], m0); split(v1["MS"], m1); w = (m1[2] - m0[2]) / 1000
                split(v0["FE"], f0); split(v1["FE"], f1); split(v0["LG"], l0); split(v1["LG"], l1)
                split(v0["cpu"], c0); split(v1["cpu"], c1)
                busy = (c1[2] + c1[3] + c1[4] + c1[7] + c1[8]) - (c0[2] + c0[3] + c0[4] + c0[7] + c0[8])
                printf "%.2f / %.2f / %.2f / %.2f (over %.1f s; steal %.2f)", (f1[2] - f0[2]) / t / w, (l1[2] - l0[2]) / t / w,
                    busy / t / w, (c1[6] - c0[6]) / t / w, w, (c1[9] - c0[9]) / t / w
            }' "$a" "$b")"
    record "$step" "$label: box-wide TCP listen overflows / drops / SYN retransmits" "$(
        awk 'FNR == NR && $1 == "NET" { split($0, a) } FNR != NR && $1 == "NET" { split($0, b) }
             END { printf "%d / %d / %d", b[2] - a[2], b[3] - a[3], b[4] - a[4] }' "$a" "$b")"
    record "$step" "$label: other processes CPU-s/s (top 3; rest = exited/short-lived)" "$(
        awk -v t="$CLK_TCK" '
            $1 == "IDS" { fe = $2; lg = $3 }
            $1 == "MS" { ms[FNR == NR] = $2 }
            $1 == "cpu" { b = $2 + $3 + $4 + $7 + $8; if (FNR == NR) b0 = b; else b1 = b }
            $1 == "P" { split($2, id, ":"); if (FNR == NR) p0[$2] = $3; else if ($2 in p0) { d[$2] = $3 - p0[$2]; if (id[1] != fe && id[1] != lg) o[$2] = d[$2] } }
            END {
                w = (ms[0] - ms[1]) / 1000; for (k in d) sum += d[k]
                n = 0; for (k in o) { n++; key[n] = k }
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (o[key[j]] > o[key[i]]) { x = key[i]; key[i] = key[j]; key[j] = x }
                for (i = 1; i <= n && i <= 3; i++) { k = key[i]; sub(/^[0-9]+:/, "", k); printf "%s %.2f; ", k, o[key[i]] / t / w }
                printf "rest %.2f", ((b1 - b0) - sum) / t / w
            }' "$a" "$b")"
    record "$step" "$label: frontend threads CPU-s/s (run-queue wait s/s)" "$(
        # glommio's blocking-pool thread inherits its executor's name: the later tid is "+pool"
        awk '$1 == "MS" { ms[FNR == NR] = $2 }
             $1 == "T" && FNR == NR { r0[$2] = $3; w0[$2] = $4 }
             $1 == "T" && FNR != NR && ($2 in r0) { r1[$2] = $3; w1[$2] = $4 }
             END { w = (ms[0] - ms[1]) / 1000
                   for (k in r1) { split(k, id, ":"); print id[1], id[2], (r1[k] - r0[k]) / 1e9 / w, (w1[k] - w0[k]) / 1e9 / w } }' "$a" "$b" |
            sort -n | awk '{ name = $2; if (seen[name]++) name = name "+pool"
                             if ($3 >= 0.01 || $4 >= 0.01) printf "%s %.2f (%.2f); ", name, $3, $4 }')"
}

# perf_start DIR NAME / perf_stop STEP LABEL: profile the frontend between the two (PERF=1)
PERF_PID="" PERF_DATA=""
perf_start() {
    [[ $PERF == 1 ]] || return 0
    PERF_DATA=$1/$2.perf.data
    perf record -q -F 499 -g -p "$FE_PID" -o "$PERF_DATA" -- sleep 900 >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
}
perf_stop() {
    local step=$1 label=$2 rep_file i
    [[ $PERF == 1 && -n $PERF_PID ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$PERF_PID" 2>/dev/null || break; sleep 0.1; done
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    rep_file=${PERF_DATA%.perf.data}.perf.txt
    {
        echo "## self time by symbol"
        perf report -i "$PERF_DATA" --no-children --sort symbol -g none --stdio 2>/dev/null | grep '%' | head -25 || true
        echo "## with callees (frame-pointer call graphs: Rust frames are partly missing)"
        perf report -i "$PERF_DATA" --children --sort symbol -g none --stdio 2>/dev/null | grep '%' | head -80 || true
    } >"$rep_file"
    record "$step" "$label perf: self % kernel / TLS crypto / page zeroing / ext4 inode alloc" "$(
        perf report -i "$PERF_DATA" --no-children --sort symbol -g none --stdio 2>/dev/null | grep '%' | awk '
            { p = $1 + 0 }
            $2 == "[k]" { k += p }
            $3 ~ /^ring_core|^ring::|nistz256|^fe4_|^fiat_|x25519|sha512|sha256|aes|gcm|chacha/ { c += p }
            $3 == "clear_page_erms" { z += p }
            $3 ~ /^(find_inode_bit|recently_deleted|find_get_block_common)$/ { e += p }
            END { printf "%.0f / %.0f / %.0f / %.0f", k, c, z, e }')"
    record "$step" "$label perf: incl. callees % ensure_dir / write_atomic / fsync / mkdir / open" "$(
        perf report -i "$PERF_DATA" --children --sort symbol -g none --stdio 2>/dev/null | grep '%' | awk '
            { p = $1 + 0; s = $4 }
            s == "packhunt::datastore::atomic::ensure_dir" { a = p } s == "packhunt::datastore::atomic::write_atomic" { b = p }
            s == "do_fsync" { f = p } s == "do_mkdirat" { m = p } s == "do_sys_openat2" { o = p }
            END { printf "%.0f / %.0f / %.0f / %.0f / %.0f", a, b, f, m, o }')"
}

# wait_connected N -> seconds (API view, 0.5 s polls) until N agents are connected, or "miss"
wait_connected() {
    local n=$1 start c
    start=$(now_ms)
    while :; do
        c=$(connected_clients)
        if ((c >= n)); then ms_to_s "$start" "$(now_ms)"; echo; return 0; fi
        if (($(now_ms) - start > CONNECT_TIMEOUT * 1000)) || ! kill -0 "$LG_PID" 2>/dev/null; then
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
    echo "dd: $line" >>"$OUT/run.log"
    # "... copied, 2.1 s, 511 MB/s" -> bytes / seconds, whatever unit dd picked
    echo "$line" | awk -F', ' '{ split($1, b, " "); split($(NF-1), s, " "); printf "%.1f\n", b[1] / s[1] / 1e6 }'
}

# ---------------------------------------------------------------- steps --------------
# task_latency_step DIR STEP BATCH: TASKS collections to random connected agents, TASK_GAP_MS
# apart; server-side create -> finished per flow from its status.json on disk.
task_latency_step() {
    local dir=$1 step=$2 batch=$3 gap f0 e0 f_now e_now i c ok pids=() tdir
    tdir=$dir/tasks-$batch
    mkdir -p "$tdir"
    log "task latency ($batch): $TASKS collections (Generic.Client.Info), ${TASK_GAP_MS} ms apart, with $(connected_clients) connected"
    local t_list
    t_list=$(curl -sk --max-time 60 -u "admin:$PW" -o "$tdir/clients.json" -w '%{time_total}' "https://127.0.0.1:$GUI_PORT/api/v1/clients?limit=20000" || echo '?')
    record "$step" "$batch: GET clients?limit=20000: items returned / total / time (s)" "$(rep '.items | length' "$tdir/clients.json") / $(rep '.total' "$tdir/clients.json") / $t_list"
    rep '.items[] | select(.connected) | .client_id' "$tdir/clients.json" | shuf -n "$TASKS" >"$tdir/targets.txt"
    f0=$(metric 'packhunt_flow_transitions_total{state="finished"}')
    e0=$(metric 'packhunt_flow_transitions_total{state="error"}')
    gap=$(awk -v g="$TASK_GAP_MS" 'BEGIN { printf "%.3f", g / 1000 }')
    i=0
    while read -r c; do
        curl -sk --max-time 60 -u "admin:$PW" -o "$tdir/$i.json" -w '%{http_code} %{time_total}\n' \
            -X POST -H 'content-type: application/json' -d '{"artifacts":["Generic.Client.Info"]}' \
            "https://127.0.0.1:$GUI_PORT/api/v1/clients/$c/collections" >"$tdir/$i.code" 2>&1 &
        pids+=($!)
        i=$((i + 1))
        sleep "$gap"
    done <"$tdir/targets.txt"
    for p in "${pids[@]}"; do wait "$p" || true; done
    ok=$(cat "$tdir"/*.code | grep -c '^200 ' || true)
    record "$step" "$batch: POSTs answered 200 / sent" "$ok / $i"
    record "$step" "$batch: POST round trip (curl, incl. TLS setup) p50 / max (ms)" "$(cat "$tdir"/*.code | awk '{ print $2 * 1000 }' | sort -n |
        awk '{ v[NR] = $1 } END { printf "%.0f / %.0f", v[int((NR + 1) / 2)], v[NR] }')"
    for ((i = 0; i < 1200; i++)); do
        f_now=$(metric 'packhunt_flow_transitions_total{state="finished"}')
        e_now=$(metric 'packhunt_flow_transitions_total{state="error"}')
        ((f_now - f0 + e_now - e0 >= ok)) && break
        sleep 0.1
    done
    record "$step" "$batch: flows finished / error" "$((f_now - f0)) / $((e_now - e0))"
    i=0
    while read -r c; do
        f=$(jq -r '.flow_id // empty' "$tdir/$i.json" 2>/dev/null || true)
        [[ -n $f ]] && jq -r '(.finish_time_ms // empty) - .create_time_ms' \
            "$dir/datastore/clients/$c/collections/$f/status.json" 2>/dev/null || true
        i=$((i + 1))
    done <"$tdir/targets.txt" >"$tdir/create-to-finish.ms"
    record "$step" "$batch: server create -> finished, status.json p50 / p99 / max (ms)" "$(sort -n "$tdir/create-to-finish.ms" |
        awk '{ v[NR] = $1 } END { if (NR) printf "%d / %d / %d (n=%d)", v[int(NR * 0.5 + 0.5)], v[int(NR * 0.99 + 0.5)], v[NR], NR; else print "none" }')"
}

connect_step() {
    local n=$1 dir=$OUT/$VARIANT_DIR/connect-$n step="connect@$1" base conn t_api t_all d c lgpid lg_rss r
    mkdir -p "$OUT/$VARIANT_DIR"
    deploy "$dir"
    start_frontend "$dir"
    sleep 2
    base=$(status_kib "$FE_PID" VmRSS)
    log "N=$n: frontend baseline RSS $base KiB; loadavg $(loadavg)"
    d=$((n / RAMP + 120))
    [[ $n == "$LATENCY_N" ]] && d=$((d + 420))
    start_loadgen "$dir" "$n" "$d"
    wait_identities "$dir"
    perf_start "$dir" ramp
    snap "$dir/ramp.before"
    t_api=$(wait_connected "$n")
    t_all=$(now_ms)
    snap "$dir/ramp.after"
    perf_stop "$step" ramp
    window "$step" "ramp" "$dir/ramp.before" "$dir/ramp.after"
    sleep 2   # let the last sessions settle before sampling
    conn=$(status_kib "$FE_PID" VmRSS)
    lgpid=$(loadgen_pid)
    lg_rss=$([[ -n $lgpid ]] && status_kib "$lgpid" VmRSS || echo 0)
    c=$(connected_clients)
    log "N=$n: $c connected (API) after $t_api s; frontend RSS $conn KiB; loadgen RSS $lg_rss KiB; loadavg $(loadavg)"
    record "$step" "connected (API) when RSS sampled" "$c / $n"
    record "$step" "time to connect all, API poll from ramp start (s)" "$t_api"
    record "$step" "frontend RSS baseline -> all connected (KiB)" "$base -> $conn"
    record "$step" "frontend VmHWM / RssAnon / AnonHugePages (KiB)" "$(status_kib "$FE_PID" VmHWM) / $(status_kib "$FE_PID" RssAnon) / $(awk '$1 == "AnonHugePages:" { print $2 }' "/proc/$FE_PID/smaps_rollup")"
    record "$step" "frontend RSS per connected agent (KiB)" "$(awk -v a="$conn" -v b="$base" -v n="$c" 'BEGIN { printf "%.1f", n ? (a - b) / n : 0 }')"
    record "$step" "loadgen RSS per agent (KiB)" "$(awk -v a="$lg_rss" -v n="$n" 'BEGIN { printf "%.1f", a / n }')"
    record "$step" "loadavg when RSS sampled" "$(loadavg)"
    # batch1 right away; then wait until the API lists every agent (listing needs its
    # info.json, which may lag the connection); then batch2. loadgen's task_latency
    # histogram covers both batches, the status.json timings each batch.
    local t_conn listed i newest
    t_conn=$(now_ms)
    if [[ $n == "$LATENCY_N" && $TASKS -gt 0 ]]; then
        task_latency_step "$dir" "tasks@$n" batch1
    fi
    for ((i = 0; i < 180; i++)); do
        listed=$({ api '/api/v1/clients?limit=1' || true; } | jq -r '.total // 0' 2>/dev/null || echo 0)
        ((${listed:-0} >= n)) && break
        sleep 1
    done
    newest=$(find "$dir/datastore/clients" -name info.json -printf '%T@\n' 2>/dev/null | sort -n | tail -1)
    record "$step" "info.json files / newest written, s after all connected (mtime)" "$(find "$dir/datastore/clients" -name info.json 2>/dev/null | wc -l) / $(awk -v m="$newest" -v t="$t_all" 'BEGIN { printf "%.1f", m - t / 1000 }')"
    if [[ $n == "$LATENCY_N" && $TASKS -gt 0 ]]; then
        task_latency_step "$dir" "tasks@$n" batch2
    fi
    stop_loadgen
    api /metrics >"$dir/metrics.txt" || true
    stop_frontend
    r=$dir/loadgen.json
    if [[ -s $r ]]; then
        record "$step" "loadgen: identities ready in" "$(grep -o 'ready in [0-9.]*s' "$dir/loadgen.err" | cut -d' ' -f3)"
        record "$step" "loadgen time_to_connect_all_s (1 s ticks)" "$(rep '.time_to_connect_all_s // "never" | if type == "number" then (. * 10 | round / 10) else . end' "$r")"
        record "$step" "connect_time p50 / p99 / max (ms)" "$(rep '[.connect_time.p50_us, .connect_time.p99_us, .connect_time.max_us] | map(. / 1000 | floor) | join(" / ")' "$r")"
        record "$step" "ever_connected / connected_peak / reconnects" "$(rep '[.ever_connected, .connected_peak, .reconnects] | join(" / ")' "$r")"
        record "$step" "loadgen errors (last_error)" "$(rep '"\(.errors) (\(.last_error // "none"))"' "$r")"
        if [[ $n == "$LATENCY_N" && $TASKS -gt 0 ]]; then
            record "tasks@$n" "tasks_received (both batches)" "$(rep .tasks_received "$r")"
            record "tasks@$n" "loadgen task latency p50 / p99 / max (ms; both batches)" "$(rep '[.task_latency.p50_us, .task_latency.p99_us, .task_latency.max_us] | map(. / 100 | floor / 10) | join(" / ")' "$r")"
        fi
    else
        record "$step" "loadgen report" "missing (see $dir/loadgen.err)"
    fi
    record "$step" "frontend connection refusals" "$(nonzero "$dir/metrics.txt" packhunt_connection_refusals_total)"
    record "$step" "frontend session conflicts" "$(awk '$1 == "packhunt_session_conflicts_total" { print $2 }' "$dir/metrics.txt")"
    record "$step" "frontend stderr WARN / ERROR lines" "$(grep -c ' WARN' "$dir/frontend.err" || true) / $(grep -c ' ERROR' "$dir/frontend.err" || true)"
}

ingest_step() {
    local n=$INGEST_AGENTS dir=$OUT/$VARIANT_DIR/ingest step="ingest@$INGEST_AGENTS" t_api dd1 dd2
    local b0 b1 f0 e0 fin err t0 t_posted t_done posted ok last_finish wall mbs i c
    mkdir -p "$OUT/$VARIANT_DIR"
    deploy "$dir"
    start_frontend "$dir"
    start_loadgen "$dir" "$n" 900
    wait_identities "$dir"
    t_api=$(wait_connected "$n")
    record "$step" "connected before scheduling (API)" "$(connected_clients) / $n (after $t_api s)"
    sleep 2
    log "ingest: dd before ($DD_MB MiB) on $(df --output=source,fstype "$dir/datastore" | tail -1 | tr -s ' ')"
    dd1=$(dd_rate "$dir/datastore")
    api '/api/v1/clients?limit=20000' | jq -r '.items[] | select(.connected) | .client_id' >"$dir/targets.txt"
    printf '{"artifacts":%s}' "$INGEST_ARTIFACTS" >"$dir/body.json"
    mkdir -p "$dir/posts"
    {
        echo "silent"; echo "insecure"; echo "user = \"admin:$PW\""
        echo "header = \"content-type: application/json\""; echo "data = \"@$dir/body.json\""
        echo "max-time = 120"; echo "write-out = \"%{http_code}\\n\""
        i=0
        while read -r c; do
            echo "url = \"https://127.0.0.1:$GUI_PORT/api/v1/clients/$c/collections\""
            echo "output = \"$dir/posts/$i.json\""
            i=$((i + 1))
        done <"$dir/targets.txt"
    } >"$dir/posts.curl"
    posted=$(wc -l <"$dir/targets.txt")
    local fd_before; fd_before=$(find "/proc/$FE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    b0=$(metric packhunt_result_bytes_written_total)
    f0=$(metric 'packhunt_flow_transitions_total{state="finished"}')
    e0=$(metric 'packhunt_flow_transitions_total{state="error"}')
    log "ingest: scheduling $posted collections ($PARALLEL_POSTS concurrent POSTs); loadavg $(loadavg)"
    perf_start "$dir" ingest
    snap "$dir/ingest.before"
    t0=$(now_ms)
    curl --parallel --parallel-max "$PARALLEL_POSTS" -K "$dir/posts.curl" >"$dir/posts.codes" 2>"$dir/posts.err" || true
    t_posted=$(now_ms)
    ok=$(grep -c '^200$' "$dir/posts.codes" || true)
    local fd_peak=0 fd
    while :; do
        fd=$(find "/proc/$FE_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        ((fd > fd_peak)) && fd_peak=$fd
        fin=$(($(metric 'packhunt_flow_transitions_total{state="finished"}') - f0))
        err=$(($(metric 'packhunt_flow_transitions_total{state="error"}') - e0))
        t_done=$(now_ms)
        ((fin + err >= ok)) && break
        ((t_done - t0 > 600000)) && { log "ingest: only $fin finished + $err error of $ok after 600 s"; break; }
        kill -0 "$FE_PID" 2>/dev/null || { log "ingest: frontend died"; break; }
        sleep 0.1
    done
    snap "$dir/ingest.after"
    perf_stop "$step" ingest
    b1=$(metric packhunt_result_bytes_written_total)
    api /metrics >"$dir/metrics.txt"
    # The precise end: the latest finish_time_ms the frontend wrote into a status.json.
    last_finish=$(find "$dir/datastore/clients" -path '*/collections/*/status.json' -print0 |
        xargs -0 cat | jq -s 'map(.finish_time_ms // 0) | max')
    log "ingest: dd after"
    dd2=$(dd_rate "$dir/datastore")
    stop_loadgen
    stop_frontend
    wall=$(ms_to_s "$t0" "$last_finish")
    mbs=$(awk -v d="$((b1 - b0))" -v w="$wall" 'BEGIN { printf "%.1f", d / 1e6 / w }')
    record "$step" "collections POSTed / answered 200" "$posted / $ok"
    record "$step" "flows finished / error" "$fin / $err"
    record "$step" "POST phase (s) / collections scheduled per s" "$(ms_to_s "$t0" "$t_posted") / $(awk -v n="$ok" -v a="$t0" -v b="$t_posted" 'BEGIN { printf "%.0f", n / ((b - a) / 1000) }')"
    record "$step" "first POST -> last finish_time_ms (s) [poll saw it at]" "$wall [$(ms_to_s "$t0" "$t_done")]"
    record "$step" "result bytes written (MB) / rows" "$(awk -v d="$((b1 - b0))" 'BEGIN { printf "%.1f", d / 1e6 }') / $(awk '$1 == "packhunt_rows_written_total" { print $2 }' "$dir/metrics.txt")"
    record "$step" "ingest MB/s" "$mbs"
    record "$step" "frontend open fds before / peak (0.1 s polls)" "$fd_before / $fd_peak"
    record "$step" "dd append MB/s before / after" "$dd1 / $dd2"
    record "$step" "ingest / dd (mean of before and after)" "$(awk -v i="$mbs" -v a="$dd1" -v b="$dd2" 'BEGIN { printf "%.3f", i / ((a + b) / 2) }')"
    window "$step" "ingest" "$dir/ingest.before" "$dir/ingest.after"
    record "$step" "upload rejections" "$(nonzero "$dir/metrics.txt" packhunt_upload_rejections_total)"
    record "$step" "loadgen errors (last_error)" "$(rep '"\(.errors) (\(.last_error // "none"))"' "$dir/loadgen.json" 2>/dev/null || echo 'no report')"
    record "$step" "frontend stderr WARN / ERROR lines" "$(grep -c ' WARN' "$dir/frontend.err" || true) / $(grep -c ' ERROR' "$dir/frontend.err" || true)"
}

if [[ -f $BIN_DIR/../../SOURCE_COMMIT ]]; then
    COMMIT="$(cut -c1-7 "$BIN_DIR/../../SOURCE_COMMIT") (clean export in ${BIN_DIR%/target/release})"
else
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    # Uncommitted source changes are part of what was measured (the binary is built from the tree).
    DIRTY=$(git -C "$ROOT" status --porcelain -- src loadgen proto build.rs Cargo.toml Cargo.lock 2>/dev/null | awk '{ print $2 }' | paste -sd' ' || true)
    [[ -n $DIRTY ]] && COMMIT="$COMMIT + uncommitted $DIRTY (diff sha256 $(git -C "$ROOT" diff -- src loadgen proto | sha256sum | cut -c1-12))"
fi
log "results under $OUT; HEAD $COMMIT; $(nproc) cores; loadavg $(loadavg); variants: ${VARIANTS[*]}"
log "ulimit -n $(ulimit -n), ulimit -l $(ulimit -l) KiB; somaxconn $(cat /proc/sys/net/core/somaxconn); tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog); ip_local_port_range $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range)"
record run "source / binaries built / packhunt sha256" "$COMMIT / $BUILT / $(sha256sum "$PACKHUNT" | cut -c1-12)"
record run "loadgen ramp per s / started" "$RAMP / $(date '+%F %T')"
record run "box: kernel / cores / memory / THP mode" "$(uname -r) / $(nproc) / $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) / $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')"
for VARIANT in "${VARIANTS[@]}"; do
    VARIANT_DIR=variant-$VARIANT
    log "=== variant $VARIANT: datastore.fsync_documents = ${VARIANT%%-*}$([[ $VARIANT == *-nothp ]] && echo ', frontend without THP') ==="
    for n in "${COUNTS[@]}"; do connect_step "$n"; done
    if ((INGEST_AGENTS > 0)); then ingest_step; fi
done
VARIANT=""
record run "finished" "$(date '+%F %T')"

echo
echo "== packhunt foundation figures ($OUT) =="
# One row per figure, one column per variant.
awk -F'\t' -v vs="all ${VARIANTS[*]}" '
    BEGIN { nv = split(vs, v, " ") }
    { key = $1 "\t" $2; if (!(key in seen)) { seen[key] = 1; order[++n] = key } val[key, $3] = $4 }
    END {
        printf "%-14s %-66s", "step", "figure"
        for (j = 2; j <= nv; j++) printf " | %-46s", "fsync_documents=" v[j]
        printf "\n"
        for (i = 1; i <= n; i++) {
            split(order[i], k, "\t")
            if ((order[i], "all") in val) { printf "%-14s %-66s %s\n", k[1], k[2], val[order[i], "all"]; continue }
            printf "%-14s %-66s", k[1], k[2]
            for (j = 2; j <= nv; j++) printf " | %-46s", val[order[i], v[j]]
            printf "\n"
        }
    }' "$SUMMARY" | tee "$OUT/summary.txt"
