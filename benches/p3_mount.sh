# benches/p3_mount.sh — sourced by benches/targets.sh: P3 on an sshfs mount.
run_p3_mount() {
    log "p3-mount: not built yet"
    exit 2
}
