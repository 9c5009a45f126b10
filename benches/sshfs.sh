# benches/sshfs.sh — a real network filesystem for the datastore: sshfs over loopback
# (sourced, not run; needs nothing from lib.sh).
#
#   sshfs_up DIR [BACKING]   start a private sshd on a free 127.0.0.1 port (throwaway host and
#                            user keys under a temp dir), export BACKING (default: a fresh
#                            folder in that temp dir) and mount it on DIR with sshfs
#   sshfs_down DIR           unmount DIR (lazily if busy), stop its sshd, remove the temp dir
#                            (and the backing folder if sshfs_up made it)
#   sshfs_backing DIR        the folder on the "server" side behind the mount on DIR
#   sshfs_cpu_s DIR          CPU seconds the mount on DIR has cost so far (sshfs, ssh, sshd)
#
# Unmount the extra mounts of a BACKING before the one that made it (its sshfs_down removes
# the folder).
#
# Several mounts of one BACKING (sshfs_up A; sshfs_up B "$(sshfs_backing A)") are what
# several frontends on different hosts see of one NFS export: each mount has its own
# caches, so they show whether one frontend sees what another wrote.
#
# Mount options (SSHFS_OPTS overrides the packhunt ones; docs/operating.md, "The datastore
# on a network filesystem", says why each):
#   dir_cache=no                no sshfs cache of names and attributes: a minion's new
#                               result rows and status.json are seen at once by the master
#   attr_timeout=0,entry_timeout=0,negative_timeout=0
#                               no kernel cache of attributes or names either (the NFS
#                               equivalent is actimeo=0 / lookupcache=positive)
#   reconnect,ServerAliveInterval=5,ServerAliveCountMax=6
#                               a broken ssh session is re-established; a dead server is
#                               noticed in 30 s (a soft-ish mount: NFS should be hard)
#   max_conns=4                 parallel sftp sessions, so one frontend's fsync does not
#                               stall every other file operation behind it
#   Compression=no, Ciphers=aes128-gcm@openssh.com
#                               loopback: CPU is the limit, not the wire
# Not used: workaround=rename (unlink + rename: not atomic; sshfs uses the server's
# posix-rename@openssh.com extension instead), writeback_cache (breaks O_APPEND).
#
# SSHFS_SFTP_FLAGS adds flags to the server's internal-sftp, e.g. "-P posix-rename" (names as
# `sftp-server -Q requests` lists them) for a server without atomic rename over a file.
#
# Needs: /usr/sbin/sshd, sshfs, fusermount (or fusermount3), ssh-keygen, /dev/fuse, root
# (sshd's privilege separation). sshfs_up returns 2 (and says why) when one is missing, so a
# caller can skip rather than fail.

SSHFS_DEFAULT_OPTS=dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0,reconnect,ServerAliveInterval=5,ServerAliveCountMax=6,max_conns=4,Compression=no,Ciphers=aes128-gcm@openssh.com

sshfs_log() { printf '[%s] sshfs: %s\n' "$(date +%T)" "$*" >&2; }

sshfs_missing() {   # -> prints what is missing to run sshfs_up here (nothing: all there)
    local t
    [[ -x /usr/sbin/sshd ]] || echo "/usr/sbin/sshd"
    for t in sshfs ssh-keygen ss; do command -v "$t" >/dev/null || echo "$t"; done
    command -v fusermount >/dev/null || command -v fusermount3 >/dev/null || echo "fusermount"
    [[ -c /dev/fuse ]] || echo "/dev/fuse"
    [[ $(id -u) == 0 ]] || echo "root"
}

sshfs_free_port() {   # a free 127.0.0.1 port below the ephemeral range
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ -z $(ss -Htan "( sport = :$p )") ]] && { echo "$p"; return; }
    done
}

sshfs_state_of() { echo "${SSHFS_STATE_ROOT:-/tmp}/packhunt-sshfs.$(realpath -m "$1" | sha256sum | cut -c1-12)"; }

sshfs_backing() { cat "$(sshfs_state_of "$1")/backing"; }

sshfs_up() {   # sshfs_up DIR [BACKING]
    local dir=$1 backing=${2:-} st missing port i
    missing=$(sshfs_missing)
    [[ -z $missing ]] || { sshfs_log "cannot mount $dir, missing: $(echo $missing)"; return 2; }
    st=$(sshfs_state_of "$dir")
    [[ ! -e $st ]] || { sshfs_log "$dir: already up (state $st); sshfs_down it first"; return 1; }
    mkdir -p "$st" "$dir"
    chmod 700 "$st"
    if [[ -z $backing ]]; then
        backing=$st/export
        mkdir -p "$backing"
        : >"$st/backing.owned"
    fi
    backing=$(realpath "$backing")
    echo "$backing" >"$st/backing"
    ssh-keygen -q -t ed25519 -N '' -f "$st/host_key" </dev/null >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$st/user_key" </dev/null >/dev/null
    cp "$st/user_key.pub" "$st/authorized_keys"
    # sshd refuses to start without its privilege separation folder (Debian's unit makes it).
    [[ -d /run/sshd ]] || mkdir -p -m 0755 /run/sshd
    port=$(sshfs_free_port)
    cat >"$st/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $st/host_key
PidFile $st/sshd.pid
AuthorizedKeysFile $st/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
AllowUsers $(id -un)
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxStartups 64
Subsystem sftp internal-sftp ${SSHFS_SFTP_FLAGS:-}
EOF
    /usr/sbin/sshd -D -e -f "$st/sshd_config" 2>"$st/sshd.log" &
    echo $! >"$st/sshd.pid.own"
    for ((i = 0; i < 100; i++)); do
        [[ -n $(ss -Htln "( sport = :$port )") ]] && break
        kill -0 "$(cat "$st/sshd.pid.own")" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $(ss -Htln "( sport = :$port )") ]]; then
        sshfs_log "sshd did not start on 127.0.0.1:$port: $(tail -3 "$st/sshd.log" | tr '\n' ' ')"
        sshfs_down "$dir"
        return 1
    fi
    echo "$port" >"$st/port"
    if ! sshfs "$(id -un)@127.0.0.1:$backing" "$dir" -p "$port" \
        -o "IdentityFile=$st/user_key,IdentitiesOnly=yes,UserKnownHostsFile=/dev/null,StrictHostKeyChecking=no,BatchMode=yes,LogLevel=ERROR" \
        -o "${SSHFS_OPTS:-$SSHFS_DEFAULT_OPTS}" 2>"$st/sshfs.log"; then
        sshfs_log "sshfs mount of $dir failed: $(tail -3 "$st/sshfs.log" | tr '\n' ' ')"
        sshfs_down "$dir"
        return 1
    fi
    echo "$dir" >"$st/mountpoint"
    sshfs_log "$dir = sshfs 127.0.0.1:$port:$backing (state $st)"
}

sshfs_cpu_s() {   # sshfs_cpu_s DIR -> CPU seconds (user + system) the mount on DIR has cost so far:
    # its sshfs process and ssh clients, and its sshd with every session process under it
    local dir=$1 st pids=() queue=() p kids ticks=0
    st=$(sshfs_state_of "$dir")
    mapfile -t pids < <(pgrep -f "^sshfs .* $(realpath -m "$dir") -p " || true)
    [[ -f $st/sshd.pid.own ]] && pids+=("$(cat "$st/sshd.pid.own")")
    queue=("${pids[@]}")
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        mapfile -t kids < <(pgrep -P "$p" || true)
        pids+=("${kids[@]}")
        queue+=("${kids[@]}")
    done
    for p in "${pids[@]}"; do
        # utime + stime are fields 14 and 15 of /proc/PID/stat (after the parenthesised name)
        ticks=$((ticks + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f\n", t / hz }'
}

sshfs_down() {   # sshfs_down DIR: safe to call twice or after a failed sshfs_up
    local dir=$1 st pid um
    st=$(sshfs_state_of "$dir")
    um=fusermount
    command -v fusermount >/dev/null || um=fusermount3
    if grep -qs " $(realpath -m "$dir") fuse.sshfs " /proc/mounts; then
        "$um" -u "$dir" 2>/dev/null || "$um" -uz "$dir" 2>/dev/null || true
    fi
    [[ -d $st ]] || return 0
    if [[ -f $st/sshd.pid.own ]]; then
        pid=$(cat "$st/sshd.pid.own")
        # the listener and any session children it forked (sshfs's sftp connections)
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [[ -f $st/backing.owned ]]; then
        rm -rf "$st"
    else
        rm -rf "${st:?}/"*key* "$st"/sshd* "$st"/port "$st"/sshfs.log "$st"/backing "$st"/mountpoint
        rmdir "$st" 2>/dev/null || true
    fi
}
