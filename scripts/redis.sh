#!/usr/bin/env bash
# redis-server (Debian package) on a free loopback port, for dev.
# Tests start their own through tests/services.py.
#
#   scripts/redis.sh start [--port N] | start --cluster | stop | status
#
# --cluster: a Redis Cluster of 3 masters and 3 replicas on free loopback
# ports (6 x redis-server --cluster-enabled yes, redis-cli --cluster create),
# ready when every node says cluster_state:ok and sees 3 replicas; prints one node's redis:// URL,
# which every --redis-url accepts (the processes find out it is a cluster).
#
# Env: SCENETRIGGER_REDIS_RUN_DIR (default ${TMPDIR:-/tmp}/scenetrigger-redis-$UID),
#      SCENETRIGGER_REDIS_PORT (default: a free loopback port).
set -euo pipefail

RUN_DIR="${SCENETRIGGER_REDIS_RUN_DIR:-${TMPDIR:-/tmp}/scenetrigger-redis-$(id -u)}"
PORT="${SCENETRIGGER_REDIS_PORT:-}"
CLUSTER=0

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

cluster_port() {  # a free port <= 55535 whose bus port (+10000) is free too
    python3 - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    if port <= 55535:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        finally:
            b.close()
        a.close(); print(port); break
    a.close()
PY
}

cmd_start_cluster() {
    if [[ -f "$RUN_DIR/url" ]] && running_pid >/dev/null; then
        log "already running"
        cat "$RUN_DIR/url"
        return 0
    fi
    ensure_installed
    command -v redis-cli >/dev/null || { log "redis-cli missing: apt-get install -y redis-tools"; exit 1; }
    rm -rf "$RUN_DIR/cluster"
    local ports=() n port
    for n in 0 1 2 3 4 5; do
        port="$(cluster_port)"
        mkdir -p "$RUN_DIR/cluster/node-$n"
        redis-server --bind 127.0.0.1 --port "$port" --dir "$RUN_DIR/cluster/node-$n" \
            --save "" --appendonly no --cluster-enabled yes \
            --cluster-config-file "$RUN_DIR/cluster/node-$n/nodes.conf" \
            --cluster-node-timeout 2000 --daemonize yes \
            --pidfile "$RUN_DIR/cluster/node-$n/redis.pid" \
            --logfile "$RUN_DIR/cluster/node-$n/redis.log"
        ports+=("$port")
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 1 50); do
            redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") \
        --cluster-replicas 1 --cluster-yes >"$RUN_DIR/cluster/create.log" 2>&1 || {
        log "redis-cli --cluster create failed"; cat "$RUN_DIR/cluster/create.log" >&2; exit 1; }
    for _ in $(seq 1 300); do
        local ok=1
        for port in "${ports[@]}"; do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok" || ok=0
            # ... and every node sees the three replicas (a replica is a master
            # in the others' views until its role change has spread)
            [[ "$(redis-cli -p "$port" cluster nodes 2>/dev/null | grep -c slave)" == 3 ]] || ok=0
        done
        if [[ "$ok" == 1 ]]; then
            cat "$RUN_DIR/cluster/node-0/redis.pid" >"$RUN_DIR/redis.pid"
            echo "redis://127.0.0.1:${ports[0]}/0" | tee "$RUN_DIR/url"
            return 0
        fi
        sleep 0.2
    done
    log "the cluster did not reach cluster_state:ok"
    exit 1
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
    local pids=("$pid") file
    for file in "$RUN_DIR"/cluster/node-*/redis.pid; do  # a cluster's other nodes
        [[ -f "$file" ]] && pids+=("$(cat "$file")")
    done
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -f "$RUN_DIR/url"
    rm -rf "$RUN_DIR/cluster"
    log "stopped (pid $pid)"
}

action="${1:-}"
shift || true
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --cluster) CLUSTER=1; shift ;;
        *) log "unknown argument: $1"; exit 2 ;;
    esac
done
case "$action" in
    start) if [[ "$CLUSTER" == 1 ]]; then cmd_start_cluster; else cmd_start; fi ;;
    stop) cmd_stop ;;
    status) if pid="$(running_pid)"; then echo "$(cat "$RUN_DIR/url") pid=$pid"; else echo "not running"; exit 3; fi ;;
    *) echo "usage: $0 start [--port N] | start --cluster | stop | status" >&2; exit 2 ;;
esac
