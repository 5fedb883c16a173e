#!/usr/bin/env bash
# Make sure a local Docker engine is running and answering on its unix socket.
#
#   scripts/docker-engine.sh
#
# - If `docker info` already answers, exit 0 at once (idempotent; safe to call repeatedly).
# - Otherwise install Debian's docker.io if dockerd (or the docker CLI) is missing,
#   start dockerd in the background, detached from this shell (setsid + nohup, so it
#   outlives the script and the CI step that ran it), and wait until `docker info` answers.
# - If a dockerd is already starting up, wait for it instead of launching a second one.
#
# Needs root. Environment knobs:
#   SANDPORT_DOCKERD_LOG       dockerd log file   (default /var/log/sandport-dockerd.log)
#   SANDPORT_DOCKERD_TIMEOUT   seconds to wait    (default 60)
#   SANDPORT_DOCKERD_ARGS      extra dockerd args (default none; word-split)
set -euo pipefail

LOG=${SANDPORT_DOCKERD_LOG:-/var/log/sandport-dockerd.log}
TIMEOUT=${SANDPORT_DOCKERD_TIMEOUT:-60}
PIDFILE=/var/run/docker.pid

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

engine_up() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 15 docker info >/dev/null 2>&1
}

dockerd_pid() {
    # Print the pid of a live dockerd, if any (pidfile first, then the process table).
    local pid
    if [[ -r $PIDFILE ]]; then
        pid=$(<"$PIDFILE")
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
            && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
            echo "$pid"; return 0
        fi
    fi
    pgrep -x dockerd 2>/dev/null | head -n1
}

LOG_OFFSET=0   # bytes of $LOG written before this script started dockerd
show_log() {
    if [[ -f $LOG ]]; then
        say "last 50 lines of $LOG (this start only):"
        tail -c +"$(( LOG_OFFSET + 1 ))" "$LOG" | tail -n 50 >&2 || true
    else
        say "(no log file at $LOG)"
    fi
}

if engine_up; then
    say "engine already answering"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "not running as root and no Docker engine answers; run this script as root"

# 1. Install the engine if needed.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    say "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
fi

# 2. cgroups: a normal Debian boot mounts them; a bare container/VM init may not.
if ! grep -qE '^[^ ]+ /sys/fs/cgroup[/ ]' /proc/mounts; then
    say "no cgroup filesystem mounted; mounting cgroup2 on /sys/fs/cgroup"
    mount -t cgroup2 none /sys/fs/cgroup || say "warning: could not mount cgroup2 (dockerd may fail)"
fi

# 3. Start dockerd unless one is already on its way up.
pid=$(dockerd_pid || true)
if [[ -n $pid ]]; then
    say "dockerd already running (pid $pid); waiting for it to answer"
    LOG_OFFSET=0
else
    mkdir -p "$(dirname "$LOG")"
    LOG_OFFSET=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    {
        echo
        echo "=== sandport: starting dockerd at $(date -Is) ==="
    } >>"$LOG"
    # shellcheck disable=SC2086  # SANDPORT_DOCKERD_ARGS is meant to be word-split
    setsid nohup dockerd ${SANDPORT_DOCKERD_ARGS:-} </dev/null >>"$LOG" 2>&1 &
    pid=$!
    disown "$pid" 2>/dev/null || true
    say "started dockerd (pid $pid), log: $LOG"
fi

# 4. Wait until it answers.
start=$SECONDS
while (( SECONDS - start < TIMEOUT )); do
    if engine_up; then
        say "engine answering after $(( SECONDS - start ))s ($(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        show_log
        die "dockerd (pid $pid) exited before the engine answered; see $LOG"
    fi
    sleep 0.5
done

show_log
die "Docker engine did not answer \`docker info\` within ${TIMEOUT}s (dockerd pid $pid still running); see $LOG"
