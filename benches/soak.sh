# benches/soak.sh — sourced by benches/targets.sh: the soak with faults.
#
#   bash benches/targets.sh soak [MINUTES]          30 minutes, 15,000 agents (the full soak)
#   SOAK_AGENTS=1500 bash benches/targets.sh soak 3 the short form (CI: about 4 minutes)
#
# A master and two minions share one datastore: by default an sshfs mount over loopback
# (benches/sshfs.sh; each frontend mounts the same export on a mount of its own, as
# frontends on three hosts mount one NFS export), SOAK_MOUNT=local puts it in a local
# folder instead (SOAK_MOUNT=auto, the default, takes sshfs when benches/sshfs.sh and its
# tools are there and says so when it falls back to local). Three loadgen fleets, all with
# --record, over the three frontends (the generated client config lists all three):
#   soakt-  60% of the agents, tasking: Generic.Client.Info on random agents at
#           SOAK_TASK_RATE/s through the master, and the GUI/API probe (SOAK_PROBE_RATE/s)
#   soake-  33%, events: Generic.Client.Stats at SOAK_EPS per agent per second
#   soakf-   7%, files: one SOAK_FILE_BYTES file each at the start, and again for
#           SOAK_FILE_BATCH of them just before each minion kill (uploads in flight)
# and SOAK_HUNTS hunts (SOAK_HUNT_ARTIFACT, Generic.Client.Info by default, over every
# connected agent) spread over the run, each stopped after a quarter of it.
#
# The rates are set for this box (2 cores shared with other work, sshfs over loopback): at
# SOAK_EPS=0.2 the events fleet alone sent ~1,000 one-row event uploads a second, more
# small-file operations than the mounts could serve, and hunts then recruited ~2 agents/s.
#
# Faults, over MINUTES once every agent is connected: every SOAK_KILL_EVERY_S (default a
# sixth of the run: 300 s in 30 minutes, 30 s in 3) a random minion is killed with SIGKILL
# (half a period in, 3 s after a file batch was scheduled) and started again
# SOAK_RESTART_DELAY_S later; the master is restarted once, half-way (SIGTERM, wait up
# to SOAK_MASTER_STOP_S for it to exit, start again). The last SOAK_SETTLE_S seconds of
# every fleet schedule nothing new and make no new events (loadgen --settle-s), then the
# fleets stop by themselves, the frontends are stopped (SIGTERM) and
#   loadgen verify --record RECORD --datastore EXPORT
# checks every row (once), upload (byte-identical), flow (final) and event against what
# the agents recorded. The target fails (exit 1) when verify does.
#
# Sampled every SOAK_SAMPLE_S: RSS and open files of each frontend (samples.tsv). Drift is
# the RSS slope (KiB/min) over each frontend's longest steady stretch: no restart, past
# SOAK_WARMUP_S, open files (≈ agents held) within 3 %; kills move agents between
# frontends, and RSS follows the agents. The tasking fleet's loadgen reports task delivery
# and probe latency per SOAK_WINDOW_S window (latency_windows). Output: the table
# ($OUT/table.md), a text plot of the series ($OUT/soak/plot.txt; gnuplot's dumb terminal
# when gnuplot is installed, else awk), the verdict ($OUT/soak/verify.json), everything
# else under $OUT/soak. KEEP_DATA=1 keeps the datastore.

soak_minion_config() { echo "$SOAK_DIR/minion-${1//[^A-Za-z0-9.-]/_}.config.toml"; }

# soak_mounts: SOAK_EXPORT (what verify reads) and each frontend's datastore location.
soak_mounts() {
    local mode=$SOAK_MOUNT lib=${SOAK_SSHFS_LIB:-$ROOT/benches/sshfs.sh} k missing
    if [[ $mode == auto ]]; then
        mode=local
        if [[ -f $lib ]]; then
            # shellcheck source=/dev/null
            source "$lib"
            missing=$(sshfs_missing)
            if [[ -z $missing ]]; then mode=sshfs; else log "soak: sshfs missing $(echo $missing): datastore on a local folder"; fi
        else
            log "soak: no $lib (benches/sshfs.sh): datastore on a local folder"
        fi
    fi
    SOAK_EXPORT=$SOAK_DIR/export
    mkdir -p "$SOAK_EXPORT"
    SOAK_MOUNTED=()
    if [[ $mode == local ]]; then
        set_key_in "$SOAK_DIR/server.config.toml" datastore location "\"$SOAK_EXPORT\""
        for k in "${MINION_NODES[@]}"; do set_key_in "$(soak_minion_config "$k")" datastore location "\"$SOAK_EXPORT\""; done
        SOAK_MOUNT_USED=local
        return
    fi
    # shellcheck source=/dev/null
    source "$lib"
    sshfs_up "$SOAK_DIR/mnt-master" "$SOAK_EXPORT" || { log "soak: sshfs_up failed (SOAK_MOUNT=local runs without it)"; exit 1; }
    SOAK_MOUNTED+=("$SOAK_DIR/mnt-master")
    set_key_in "$SOAK_DIR/server.config.toml" datastore location "\"$SOAK_DIR/mnt-master\""
    for k in "${!MINION_NODES[@]}"; do
        sshfs_up "$SOAK_DIR/mnt-minion$((k + 1))" "$SOAK_EXPORT" || { log "soak: sshfs_up failed"; exit 1; }
        SOAK_MOUNTED+=("$SOAK_DIR/mnt-minion$((k + 1))")
        set_key_in "$(soak_minion_config "${MINION_NODES[k]}")" datastore location "\"$SOAK_DIR/mnt-minion$((k + 1))\""
    done
    SOAK_MOUNT_USED=sshfs
}

soak_unmount() {
    local m
    for m in "${SOAK_MOUNTED[@]}"; do sshfs_down "$m" || true; done
    SOAK_MOUNTED=()
    return 0
}

soak_t() { echo $((($(now_ms) - SOAK_T0_MS) / 1000)); }
soak_event() { printf '%s\t%s\t%s\n' "$(soak_t)" "$1" "$2" >>"$SOAK_DIR/events.tsv"; log "soak t=$(soak_t)s: $1 $2"; }

# Frontend pids live in files so the sampler follows restarts.
soak_pid_of() { cat "$SOAK_DIR/pid.$1" 2>/dev/null || true; }

soak_start_master() {
    start_frontend "$SOAK_DIR"
    echo "$FE_PID" >"$SOAK_DIR/pid.master"
}

soak_start_minion() {   # soak_start_minion K (1-based)
    local k=$1
    start_minion "$SOAK_DIR" "${MINION_NODES[k - 1]}"
    echo "$FE_PID" >"$SOAK_DIR/pid.minion$k"
}

soak_sampler() {   # every SOAK_SAMPLE_S: t_s role pid rss_kib open_files
    local role pid rss fds
    while :; do
        for role in master minion1 minion2; do
            pid=$(soak_pid_of "$role")
            [[ -n $pid && -d /proc/$pid ]] || continue
            rss=$(status_kib "$pid" VmRSS 2>/dev/null || echo 0)
            fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
            [[ -n $rss ]] && printf '%s\t%s\t%s\t%s\t%s\n' "$(soak_t)" "$role" "$pid" "$rss" "$fds" >>"$SOAK_DIR/samples.tsv"
        done
        sleep "$SOAK_SAMPLE_S"
    done
}

# soak_keep_logs PREFIX PID: a restarted frontend writes PREFIX.out/.err anew; keep the
# last life's as PREFIX-PID.out/.err.
soak_keep_logs() {
    local f
    for f in out err; do [[ -f $1.$f ]] && mv "$1.$f" "$1-$2.$f"; done
    return 0
}

soak_kill_minion() {
    local k=$((1 + RANDOM % ${#MINION_NODES[@]})) pid
    pid=$(soak_pid_of "minion$k")
    soak_event kill "minion$k pid $pid (SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep "$SOAK_RESTART_DELAY_S"
    soak_keep_logs "$SOAK_DIR/minion-${MINION_NODES[k - 1]##*:}" "$pid"
    soak_start_minion "$k"
    soak_event restart "minion$k pid $(soak_pid_of "minion$k")"
    SOAK_KILLS=$((SOAK_KILLS + 1))
}

soak_restart_master() {
    local pid i t0
    pid=$(soak_pid_of master)
    soak_event stop "master pid $pid (SIGTERM)"
    t0=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < SOAK_MASTER_STOP_S * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        soak_event kill "master did not exit within $SOAK_MASTER_STOP_S s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        SOAK_MASTER_EXIT=killed
    fi
    wait "$pid" 2>/dev/null && SOAK_MASTER_EXIT=${SOAK_MASTER_EXIT:-0} || SOAK_MASTER_EXIT=${SOAK_MASTER_EXIT:-$?}
    SOAK_MASTER_STOP=$(ms_to_s "$t0" "$(now_ms)")
    soak_keep_logs "$SOAK_DIR/frontend" "$pid"
    soak_start_master
    soak_event restart "master pid $(soak_pid_of master) (stopped in $SOAK_MASTER_STOP s, exit $SOAK_MASTER_EXIT)"
    wait_frontends_up 3 120 || true
}

soak_file_batch() {   # a files collection for SOAK_FILE_BATCH random files-fleet agents
    local body n
    body=$(jq -cn --argjson b "$SOAK_FILE_BYTES" '{artifacts: ["Generic.Collectors.File"],
        parameters: {"Generic.Collectors.File": {globs: ["/var/log/loadgen-synthetic.bin"],
        max_file_bytes: $b, max_total_bytes: $b}}, max_upload_bytes: $b}')
    api "/api/v1/clients?search=soakf-&connected=true&limit=10000" | jq -r '.items[].client_id' 2>/dev/null |
        shuf -n "$SOAK_FILE_BATCH" >"$SOAK_DIR/file-batch.ids" || true
    n=$(wc -l <"$SOAK_DIR/file-batch.ids")
    # shellcheck disable=SC2016
    xargs -P 8 -I{} curl -sk --max-time 60 -o /dev/null -w '%{http_code}\n' -u "admin:$PW" -X POST \
        -H 'content-type: application/json' --data "$body" "https://127.0.0.1:$GUI_PORT/api/v1/clients/{}/collections" \
        <"$SOAK_DIR/file-batch.ids" >"$SOAK_DIR/file-batch.codes" 2>/dev/null || true
    soak_event files "$n collections of $SOAK_FILE_BYTES bytes ($(grep -c '^200$' "$SOAK_DIR/file-batch.codes" || true) accepted)"
    SOAK_FILE_FLOWS=$((SOAK_FILE_FLOWS + n))
}

soak_hunt_start() {
    local id
    id=$(api_post /api/v1/hunts "{\"artifacts\":[\"$SOAK_HUNT_ARTIFACT\"],\"condition\":{\"labels\":[],\"os\":\"\"},\"expires_ms\":0}" | jq -r '.hunt_id // empty')
    [[ -n $id ]] || { soak_event hunt "create failed"; return; }
    api_post "/api/v1/hunts/$id/start" >/dev/null || true
    echo "$id" >>"$SOAK_DIR/hunts.ids"
    soak_event hunt "$id started"
}

soak_hunt_stop() {   # soak_hunt_stop ID
    api_post "/api/v1/hunts/$1/stop" >/dev/null || true
    api "/api/v1/hunts/$1" >"$SOAK_DIR/hunt-$1.json" || true
    soak_event hunt "$1 stopped: $(jq -r '"\(.scheduled // "?") scheduled, \(.completed // "?") completed, \(.errors // "?") errors"' "$SOAK_DIR/hunt-$1.json" 2>/dev/null)"
}

# soak_schedule D P: the fault plan, one "t_s action [arg]" per line, sorted.
soak_schedule() {
    local d=$1 p=$2 t h
    for ((t = p / 2; t < d - SOAK_RESTART_DELAY_S - 5; t += p)); do
        echo "$((t > 3 ? t - 3 : 0)) files"
        echo "$t kill"
    done
    echo "$((d / 2 + p / 4)) master"
    for ((h = 0; h < SOAK_HUNTS; h++)); do
        # 0.1, .., 0.7 of the run; each stopped a quarter of the run later
        t=$((d / 10 + h * d * 6 / (10 * (SOAK_HUNTS > 1 ? SOAK_HUNTS - 1 : 1))))
        echo "$t hunt_start"
        echo "$((t + d / 4)) hunt_stop $h"
    done
}

# soak_drift ROLE END_S: "rss0_kib rss1_kib rss_kib_per_min files0 files1 minutes" over the
# longest steady stretch of ROLE before END_S: one life (no restart), past its first
# SOAK_WARMUP_S, with its open files (≈ its agents) within 3 % of the stretch's first
# sample. RSS and files follow the agents a frontend holds, and kills move agents between
# frontends; growth at a steady agent count is the drift that matters (a leak).
soak_drift() {
    awk -F'\t' -v r="$1" -v end="$2" -v w="$SOAK_WARMUP_S" '
        $2 != r || $1 > end || $1 !~ /^[0-9]+$/ { next }
        $3 != pid { pid = $3; born = $1 }
        $1 - born < w { next }
        {
            if (!open || $3 != spid || ($5 - f0) > 0.03 * f0 || (f0 - $5) > 0.03 * f0) {
                open = 1; spid = $3; t0 = $1; r0 = $4; f0 = $5
            }
            if ($1 - t0 > best) { best = $1 - t0; bt0 = t0; br0 = r0; bf0 = f0; bt1 = $1; br1 = $4; bf1 = $5 }
        }
        END {
            if (best <= 0) { print "- - - - - 0"; exit }
            m = (bt1 - bt0) / 60
            printf "%d %d %.1f %d %d %.1f\n", br0, br1, (br1 - br0) / m, bf0, bf1, m
        }' "$SOAK_DIR/samples.tsv"
}

# soak_ascii_plot TITLE FILE(x y per line) MARKS(t_s:letter ...) [log]: a small text chart;
# with `log` the y axis is logarithmic (latencies: one restart's minute would flatten the rest).
soak_ascii_plot() {
    local title=$1 file=$2 marks=${3:-} scale=${4:-lin}
    awk -v title="$title" -v marks="$marks" -v W=72 -v H=12 -v scale="$scale" '
        function shown(v) { return scale == "log" ? 10 ^ v : v }
        { if (scale == "log") $2 = log($2 < 1 ? 1 : $2) / log(10)
          x[NR] = $1; y[NR] = $2; if (NR == 1 || $1 < xmin) xmin = $1; if (NR == 1 || $1 > xmax) xmax = $1
          if (NR == 1 || $2 > ymax) ymax = $2; if (NR == 1 || $2 < ymin) ymin = $2 }
        END {
            print title
            if (!NR) { print "  (no data)"; exit }
            if (ymin > 0 && scale != "log") ymin = 0
            if (ymax == ymin) ymax = ymin + 1
            if (xmax == xmin) xmax = xmin + 1
            for (r = 0; r < H; r++) for (c = 0; c < W; c++) g[r, c] = " "
            for (i = 1; i <= NR; i++) {
                c = int((x[i] - xmin) / (xmax - xmin) * (W - 1) + 0.5)
                r = int((y[i] - ymin) / (ymax - ymin) * (H - 1) + 0.5)
                g[r, c] = "*"
            }
            for (r = H - 1; r >= 0; r--) {
                label = (r == H - 1) ? sprintf("%10.1f", shown(ymax)) : (r == 0 ? sprintf("%10.1f", shown(ymin)) : "          ")
                if (scale == "log" && r == int((H - 1) / 2)) label = sprintf("%10.1f", shown(ymin + (ymax - ymin) * r / (H - 1)))
                line = label " |"
                for (c = 0; c < W; c++) line = line g[r, c]
                print line
            }
            axis = "           +"; for (c = 0; c < W; c++) axis = axis "-"; print axis
            ev = "            "; for (c = 0; c < W; c++) e[c] = " "
            n = split(marks, m, " ")
            for (i = 1; i <= n; i++) { split(m[i], tm, ":"); c = int((tm[1] / 60 - xmin) / (xmax - xmin) * (W - 1) + 0.5)
                                       if (c >= 0 && c < W) e[c] = tm[2] }
            for (c = 0; c < W; c++) ev = ev e[c]
            print ev
            printf "            %-36s%36s\n", sprintf("%.1f min", xmin), sprintf("%.1f min", xmax)
        }' "$file"
}

soak_plot() {   # the series, one chart each, into $SOAK_DIR/plot.txt
    local rp=$SOAK_DIR/tasking.json marks role f
    marks=$(awk -F'\t' '$2 == "kill" { printf "%s:K ", $1 } $2 == "stop" { printf "%s:M ", $1 }' "$SOAK_DIR/events.tsv")
    jq -r --argjson t0 "$SOAK_LG_OFFSET_S" '.latency_windows[]? | select(.tasks > 0 and .t_s >= $t0) | "\((.t_s - $t0) / 60) \(.task_p99_us / 1000)"' "$rp" >"$SOAK_DIR/series-task-p99.txt" 2>/dev/null || true
    jq -r --argjson t0 "$SOAK_LG_OFFSET_S" '.latency_windows[]? | select(.api_requests > 0 and .t_s >= $t0) | "\((.t_s - $t0) / 60) \(.api_p99_us / 1000)"' "$rp" >"$SOAK_DIR/series-api-p99.txt" 2>/dev/null || true
    for role in master minion1 minion2; do
        awk -F'\t' -v r="$role" '$2 == r { print $1 / 60, $4 / 1024 }' "$SOAK_DIR/samples.tsv" >"$SOAK_DIR/series-rss-$role.txt"
        awk -F'\t' -v r="$role" '$2 == r { print $1 / 60, $5 }' "$SOAK_DIR/samples.tsv" >"$SOAK_DIR/series-fds-$role.txt"
    done
    {
        echo "Series over the soak (x: minutes since every agent was connected; K = a minion killed, M = the master restarted)"
        echo
        for f in task-p99:"task delivery p99 per ${SOAK_WINDOW_S} s window (ms, log scale)" api-p99:"GUI/API probe p99 per ${SOAK_WINDOW_S} s window (ms, log scale)" \
            rss-master:"master RSS (MiB)" rss-minion1:"minion 1 RSS (MiB)" rss-minion2:"minion 2 RSS (MiB)" \
            fds-master:"master open files" fds-minion1:"minion 1 open files" fds-minion2:"minion 2 open files"; do
            if command -v gnuplot >/dev/null; then
                gnuplot -e "set terminal dumb 84 18; set title '${f#*:}'; set xlabel 'min'; plot '$SOAK_DIR/series-${f%%:*}.txt' using 1:2 with points pt '*' notitle" 2>/dev/null ||
                    soak_ascii_plot "${f#*:}" "$SOAK_DIR/series-${f%%:*}.txt" "$marks"
            else
                soak_ascii_plot "${f#*:}" "$SOAK_DIR/series-${f%%:*}.txt" "$marks" "$([[ $f == *p99* ]] && echo log || echo lin)"
            fi
            echo
        done
    } >"$SOAK_DIR/plot.txt"
}

soak_wait_connected() {   # soak_wait_connected ERRFILE N TIMEOUT_S
    LG_ERR=$1 wait_progress connected "$2" "$3"
}

run_soak() {
    local minutes=${1:-30} n d p t act arg lg_s k verify_rc=0 plan_line pids=() r start_ms
    n=${SOAK_AGENTS:-15000}
    SOAK_MOUNT=${SOAK_MOUNT:-auto}
    SOAK_TASK_RATE=${SOAK_TASK_RATE:-10}
    SOAK_PROBE_RATE=${SOAK_PROBE_RATE:-5}
    SOAK_EPS=${SOAK_EPS:-0.02}
    SOAK_HUNT_ARTIFACT=${SOAK_HUNT_ARTIFACT:-Generic.Client.Info}
    SOAK_FILE_BYTES=${SOAK_FILE_BYTES:-500000}
    SOAK_HUNTS=${SOAK_HUNTS:-3}
    SOAK_RESTART_DELAY_S=${SOAK_RESTART_DELAY_S:-5}
    SOAK_MASTER_STOP_S=${SOAK_MASTER_STOP_S:-60}
    d=$((minutes * 60))
    p=${SOAK_KILL_EVERY_S:-$((d / 6))}
    SOAK_SAMPLE_S=${SOAK_SAMPLE_S:-$(((d / 180) > 1 ? d / 180 : 1))}
    SOAK_WINDOW_S=${SOAK_WINDOW_S:-$(((d / 60) > 10 ? d / 60 : 10))}
    SOAK_WARMUP_S=${SOAK_WARMUP_S:-$(((d / 30) > 10 ? d / 30 : 10))}
    SOAK_SETTLE_S=${SOAK_SETTLE_S:-$(((d / 30) > 20 ? d / 30 : 20))}
    SOAK_KILLS=0 SOAK_FILE_FLOWS=0 SOAK_MASTER_STOP=- SOAK_MASTER_EXIT=""
    local nt=$((n * 60 / 100)) ne=$((n * 33 / 100)) nf
    nf=$((n - nt - ne))
    SOAK_FILE_BATCH=${SOAK_FILE_BATCH:-$(((nf / 5) > 1 ? nf / 5 : 1))}
    ((nt <= 19000 && ne <= 19000 && nf <= 19000)) || { log "soak: a fleet above 19,000 agents per process"; exit 1; }
    SOAK_DIR=$OUT/soak
    mkdir -p "$SOAK_DIR"
    SOAK_MOUNTED=()
    # However the run ends: lib.sh's cleanup (fleets, frontends), then the mounts.
    trap 'lib_cleanup; soak_unmount' EXIT
    : >"$SOAK_DIR/events.tsv"
    printf 't_s\trole\tpid\trss_kib\topen_files\n' >"$SOAK_DIR/samples.tsv"
    log "soak: $minutes min, $n agents (tasking $nt, events $ne at $SOAK_EPS/s each, files $nf x $SOAK_FILE_BYTES B) over a master + 2 minions; $SOAK_TASK_RATE tasks/s, $SOAK_HUNTS hunts, a minion SIGKILLed every $p s, the master restarted once; settle $SOAK_SETTLE_S s"

    deploy_cluster "$SOAK_DIR" 2
    # The gRPC API's generated port is fixed (8890): another deployment on the box may hold it.
    set_key_in "$SOAK_DIR/server.config.toml" api port "$(free_port)"
    soak_mounts
    log "soak: datastore on $SOAK_MOUNT_USED, export $SOAK_EXPORT ($(df --output=fstype "$SOAK_EXPORT" | tail -1 | tr -d ' '))"
    soak_start_master
    soak_start_minion 1
    soak_start_minion 2
    wait_frontends_up 3 120 || { log "soak: frontends not up"; exit 1; }

    # Every fleet runs until well past the faults; they stop by themselves (settle first).
    lg_s=$((2 * n / RAMP + 30 + d + SOAK_SETTLE_S))
    local common=(--duration-s "$lg_s" --settle-s "$SOAK_SETTLE_S" --ramp-per-second "$RAMP" --source-ips 3
        --record "$SOAK_DIR/record" --window-s "$SOAK_WINDOW_S" --api-url "https://127.0.0.1:$GUI_PORT/" --api-password "$PW")
    start_ms=$(now_ms)
    LOADGEN_CPUS="" start_loadgen "$SOAK_DIR" tasking $((lg_s + 300)) --clients "$nt" --hostname-prefix soakt- \
        --scenario tasking --task-rate-per-second "$SOAK_TASK_RATE" --connect-wait-s 30 --probe-rate-per-second "$SOAK_PROBE_RATE" \
        --probe-path /api/v1/frontends --probe-path "/api/v1/clients?search=soakt-1&limit=50" "${common[@]}"
    pids+=("$LG_PID")
    LOADGEN_CPUS="" start_loadgen "$SOAK_DIR" events $((lg_s + 300)) --clients "$ne" --hostname-prefix soake- \
        --scenario events --events-per-second-per-agent "$SOAK_EPS" --event-artifact Generic.Client.Stats \
        --probe-rate-per-second 0 "${common[@]}"
    pids+=("$LG_PID")
    LOADGEN_CPUS="" start_loadgen "$SOAK_DIR" files $((lg_s + 300)) --clients "$nf" --hostname-prefix soakf- \
        --scenario files --file-bytes-per-agent "$SOAK_FILE_BYTES" --connect-wait-s 30 --probe-rate-per-second 0 "${common[@]}"
    pids+=("$LG_PID")
    for f in tasking events files; do
        LG_PID=${pids[0]}
        [[ $f == events ]] && LG_PID=${pids[1]}
        [[ $f == files ]] && LG_PID=${pids[2]}
        k=$nt
        [[ $f == events ]] && k=$ne
        [[ $f == files ]] && k=$nf
        soak_wait_connected "$SOAK_DIR/$f.err" "$k" "$CONNECT_TIMEOUT" || log "soak: $f fleet not all connected"
    done
    SOAK_T0_MS=$(now_ms)
    # The loadgens' seconds (their latency windows) start before the faults' clock.
    SOAK_LG_OFFSET_S=$(((SOAK_T0_MS - start_ms) / 1000))
    soak_event connected "$n agents ($(ms_to_s "$start_ms" "$SOAK_T0_MS") s after the fleets started)"
    soak_sampler &
    ALL_LG_PIDS+=("$!")
    SOAK_SAMPLER=$!

    soak_schedule "$d" "$p" | sort -n >"$SOAK_DIR/plan.txt"
    log "soak: plan (s: action) $(tr '\n' ';' <"$SOAK_DIR/plan.txt")"
    local hunt_ids=()
    while read -r plan_line; do
        read -r t act arg <<<"$plan_line"
        while (($(soak_t) < t)); do sleep 1; done
        case $act in
            files) soak_file_batch ;;
            kill) soak_kill_minion ;;
            master) soak_restart_master ;;
            hunt_start) soak_hunt_start; hunt_ids+=("$(tail -1 "$SOAK_DIR/hunts.ids" 2>/dev/null)") ;;
            hunt_stop) [[ -n ${hunt_ids[arg]:-} ]] && soak_hunt_stop "${hunt_ids[arg]}" ;;
        esac
    done <"$SOAK_DIR/plan.txt"
    while (($(soak_t) < d)); do sleep 1; done
    soak_event faults-over "waiting for the fleets to settle and stop"
    for k in 0 1 2; do
        LG_PID=${pids[k]}
        wait_loadgen_exit $((lg_s + 120)) || { log "soak: a loadgen did not stop by itself"; stop_loadgen; }
    done
    soak_event fleets-stopped ""
    kill "$SOAK_SAMPLER" 2>/dev/null || true
    api /api/v1/frontends >"$SOAK_DIR/frontends.json" 2>/dev/null || true
    metrics_to "$SOAK_DIR/metrics-master.txt"
    for k in 1 2; do metrics_at "${MINION_METRICS_PORTS[k - 1]}" "$SOAK_DIR/metrics-minion$k.txt"; done
    for r in minion2 minion1 master; do FE_PID=$(soak_pid_of "$r"); stop_frontend; done

    "$LOADGEN" verify --record "$SOAK_DIR/record" --datastore "$SOAK_EXPORT" --report "$SOAK_DIR/verify.json" \
        >"$SOAK_DIR/verify.out" 2>&1 || verify_rc=$?
    head -1 "$SOAK_DIR/verify.out" | tee -a "$OUT/run.log"
    soak_unmount
    soak_plot
    soak_record "$minutes" "$n" "$verify_rc" "$d"
    print_table "soak: $minutes min, $n agents over a master + 2 minions, datastore on $SOAK_MOUNT_USED, $SOAK_KILLS minion kills + 1 master restart ($OUT)"
    echo
    cat "$SOAK_DIR/plot.txt"
    if [[ ${KEEP_DATA:-0} != 1 ]]; then rm -rf "$SOAK_EXPORT" "$SOAK_DIR/record" "$SOAK_DIR/datastore"; fi
    if ((verify_rc != 0)); then
        log "soak: verify FAILED (exit $verify_rc): $SOAK_DIR/verify.out"
        exit 1
    fi
}

soak_record() {   # soak_record MINUTES N VERIFY_RC FAULTS_S: the table
    local v=$SOAK_DIR/verify.json t=$SOAK_DIR/tasking.json role drift fdrift
    rec() { record "$1" soak "$2"; }
    vj() { jq -r "$1" "$v" 2>/dev/null || echo '?'; }
    rec "verify" "$( (($3 == 0)) && echo OK || echo "FAILED(exit_$3)")"
    rec "rows expected / found" "$(vj '"\(.rows_expected)/\(.rows_found)"')"
    rec "rows lost" "$(vj .rows_lost)"
    rec "rows duplicated" "$(vj .rows_duplicated)"
    rec "uploads checked byte-identical / expected" "$(vj '"\(.uploads_checked)/\(.uploads_expected)"')"
    rec "uploads mismatched or missing" "$(vj .uploads_mismatched)"
    rec "flows total / not final" "$(vj '"\(.flows_total)/\(.flows_not_final)"')"
    rec "flows finished / error / cancelled" "$(vj '"\(.flows_finished)/\(.flows_error)/\(.flows_cancelled)"')"
    rec "events acknowledged / found" "$(vj '"\(.events_expected)/\(.events_found)"')"
    rec "events lost / duplicated" "$(vj '"\(.events_lost)/\(.events_duplicated)"')"
    rec "events dropped by agents (buffer) / unacked at exit" "$(vj '"\(.events_dropped_by_agents)/\(.events_unacked_at_exit)"')"
    rec "minions killed (SIGKILL) + restarted" "$SOAK_KILLS"
    rec "master restart: stop time (s) / exit status" "$SOAK_MASTER_STOP/${SOAK_MASTER_EXIT:-?}"
    rec "file collections scheduled before kills" "$SOAK_FILE_FLOWS"
    rec "hunts run" "$(wc -l <"$SOAK_DIR/hunts.ids" 2>/dev/null || echo 0)"
    rec "tasks received / scheduled (tasking fleet)" "$(rep '"\(.tasks_received)/\(.collections_scheduled)"' "$t" 2>/dev/null || echo '?')"
    rec "task delivery p50 / p99 / max over the run (ms)" "$(rep '"\(.task_latency.p50_us / 1000)/\(.task_latency.p99_us / 1000)/\(.task_latency.max_us / 1000)"' "$t" 2>/dev/null || echo '?')"
    rec "task delivery p99, worst ${SOAK_WINDOW_S} s window (ms)" "$(rep '[.latency_windows[]? | select(.tasks > 0) | .task_p99_us] | max / 1000' "$t" 2>/dev/null || echo '?')"
    rec "GUI/API probe p50 / p99 / max over the run (ms)" "$(rep '"\(.api_latency.p50_us / 1000)/\(.api_latency.p99_us / 1000)/\(.api_latency.max_us / 1000)"' "$t" 2>/dev/null || echo '?')"
    rec "GUI/API probe p99, worst ${SOAK_WINDOW_S} s window (ms)" "$(rep '[.latency_windows[]? | select(.api_requests > 0) | .api_p99_us] | max / 1000' "$t" 2>/dev/null || echo '?')"
    rec "GUI/API probe errors (master away)" "$(rep .api_errors "$t" 2>/dev/null || echo '?')"
    rec "agent reconnects (all fleets)" "$(cat "$SOAK_DIR"/{tasking,events,files}.json 2>/dev/null | jq -s 'map(.reconnects) | add' 2>/dev/null || echo '?')"
    rec "agent errors (all fleets)" "$(cat "$SOAK_DIR"/{tasking,events,files}.json 2>/dev/null | jq -s 'map(.errors) | add' 2>/dev/null || echo '?')"
    for role in master minion1 minion2; do
        read -r a b drift f0 f1 life <<<"$(soak_drift "$role" "$4")"
        rec "$role: longest steady stretch (min; open files start -> end)" "$life ($f0 -> $f1)"
        rec "$role: RSS over it (MiB, start -> end)" "$(calc "${a/-/0} / 1024" 1) -> $(calc "${b/-/0} / 1024" 1)"
        rec "$role: RSS drift over it (KiB/min)" "$drift"
    done
}
