# benches/p3_mount.sh — sourced by benches/targets.sh: P3 with the datastore on an sshfs
# mount over loopback (benches/sshfs.sh), against that mount's own append rate in the same
# run.
#
#   bash benches/targets.sh p3-mount [N]     (N=1000 agents x UPLOAD_BYTES=2 MiB)
#
# Per repeat: a fresh deployment whose datastore folder is an sshfs mount of a fresh export
# (the packhunt mount options of benches/sshfs.sh), P3's own ingest round (p3_ingest in
# targets.sh: the upload scenario, ingest MB/s = result bytes ÷ first create → last finish),
# then dd's append + fdatasync on the mount (DD_MB, 1024) and, for scale, on the export's
# local folder behind it. Knobs as P3: P3_FSYNC (true), P3_CONCURRENCY (empty = the
# frontend's default; 256 measures ingest itself), INGEST_TIMEOUT (900), SSHFS_OPTS.

# shellcheck source=benches/sshfs.sh
source "$ROOT/benches/sshfs.sh"

P3M_MOUNTS=()

p3m_cleanup() {
    local m
    lib_cleanup
    for m in "${P3M_MOUNTS[@]}"; do [[ -z $m ]] || sshfs_down "$m" || true; done
}

# deploy DIR for this target: the generated deployment, then its datastore folder becomes
# an sshfs mount (so p3_ingest, which measures "$dir/datastore", runs unchanged on it).
eval "$(declare -f deploy | sed '1s/^deploy /p3m_local_deploy /')"
deploy() {
    p3m_local_deploy "$1"
    local rc=0
    sshfs_up "$1/datastore" || rc=$?
    ((rc == 0)) || { log "p3-mount: cannot mount sshfs on $1/datastore (rc $rc)"; exit 2; }
    P3M_MOUNTS+=("$1/datastore")
    log "p3-mount: datastore on $(df --output=source,fstype "$1/datastore" | tail -1 | tr -s ' ')"
}

run_p3_mount() {
    local n=${1:-${N:-1000}} r mnt
    UPLOAD_BYTES=${UPLOAD_BYTES:-2097152}
    P3_FSYNC=${P3_FSYNC:-true}
    INGEST_TIMEOUT=${INGEST_TIMEOUT:-900}
    DD_MB=${DD_MB:-1024}
    P3_CONCURRENCY=${P3_CONCURRENCY-}
    trap p3m_cleanup EXIT
    log "p3-mount: $n agents x $UPLOAD_BYTES bytes on an sshfs mount (${SSHFS_OPTS:-$SSHFS_DEFAULT_OPTS}) vs dd ${DD_MB} MiB append+fdatasync on the same mount, alternating; datastore.fsync_documents = $P3_FSYNC; limits.concurrency = ${P3_CONCURRENCY:-default}"
    for ((r = 1; r <= REPEATS; r++)); do
        p3_ingest "$n" "$r"
        mnt=$P3_DIR/datastore
        # The mount is fresh per repeat, so its processes' CPU so far is this ingest round's.
        record "mount CPU-s (sshfs + ssh + sshd), whole ingest round" ingest "$(sshfs_cpu_s "$mnt")"
        record "ingest MB/s (result bytes, first create -> last finish)" mount-dd "$(dd_rate "$mnt" "$DD_MB")"
        record "ingest MB/s (result bytes, first create -> last finish)" local-dd "$(dd_rate "$(sshfs_backing "$mnt")" "$DD_MB")"
        sshfs_down "$mnt"
        P3M_MOUNTS=("${P3M_MOUNTS[@]/$mnt/}")
    done
    ratio "ingest / dd on the mount" "ingest MB/s (result bytes, first create -> last finish)" ingest "ingest MB/s (result bytes, first create -> last finish)" mount-dd
    ratio "dd on the mount / dd on the local folder behind it" "ingest MB/s (result bytes, first create -> last finish)" mount-dd "ingest MB/s (result bytes, first create -> last finish)" local-dd
    print_table "p3-mount: result ingest on an sshfs mount vs the mount's own append, $n agents ($OUT)"
}
