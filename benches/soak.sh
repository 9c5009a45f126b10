# benches/soak.sh — sourced by benches/targets.sh: the soak with faults.
run_soak() {
    log "soak: not built yet"
    exit 2
}
