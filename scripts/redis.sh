#!/usr/bin/env bash
# redis-server (Debian package) on a free loopback port, for dev.
# Tests start their own through tests/services.py.
#
#   scripts/redis.sh start [--port N] | stop | status
#
# Env: SCENETRIGGER_REDIS_RUN_DIR (default ${TMPDIR:-/tmp}/scenetrigger-redis-$UID),
#      SCENETRIGGER_REDIS_PORT (default: a free loopback port).
set -euo pipefail

RUN_DIR="${SCENETRIGGER_REDIS_RUN_DIR:-${TMPDIR:-/tmp}/scenetrigger-redis-$(id -u)}"
PORT="${SCENETRIGGER_REDIS_PORT:-}"

log() { echo "redis.sh: $*" >&2; }

ensure_installed() {
    command -v redis-server >/dev/null && return 0
    if [[ "$(id -u)" != 0 ]]; then
        log "redis-server missing; run: sudo apt-get install -y redis-server"
        exit 1
    fi
    log "installing redis-server (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

running_pid() {
    [[ -f "$RUN_DIR/redis.pid" ]] || return 1
    local pid
    pid="$(cat "$RUN_DIR/redis.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid)"
        cat "$RUN_DIR/url"
        return 0
    fi
    ensure_installed
    mkdir -p "$RUN_DIR"
    PORT="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
    # The append-only file (as docs/guarantees.md requires of deliver's Redis): the
    # dead letters, dedupe leases and deferred messages survive a restart. In the run dir.
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$RUN_DIR" --save "" --appendonly yes \
        --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then
            echo "redis://127.0.0.1:$PORT/0" | tee "$RUN_DIR/url"
            return 0
        fi
        sleep 0.1
    done
    log "redis-server did not answer PING"
    tail -n 40 "$RUN_DIR/redis.log" >&2 || true
    exit 1
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RUN_DIR/url"
    log "stopped (pid $pid)"
}

action="${1:-}"
shift || true
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        *) log "unknown argument: $1"; exit 2 ;;
    esac
done
case "$action" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) if pid="$(running_pid)"; then echo "$(cat "$RUN_DIR/url") pid=$pid"; else echo "not running"; exit 3; fi ;;
    *) echo "usage: $0 start [--port N] | stop | status" >&2; exit 2 ;;
esac
