#!/usr/bin/env bash
# Apache Kafka 4.x in KRaft mode (one combined broker+controller) for dev and tests.
#
#   scripts/kafka.sh start [--port N] [--fresh]   fetch jars (cached), format, start, wait
#   scripts/kafka.sh stop                          stop the broker of this run dir
#   scripts/kafka.sh status                        print bootstrap and exit 0 when running
#
# Env:
#   SCENETRIGGER_KAFKA_VERSION   Kafka release (default 4.1.1)
#   SCENETRIGGER_KAFKA_CACHE     jar cache (default ~/.cache/scenetrigger/kafka-<version>)
#   SCENETRIGGER_KAFKA_RUN_DIR   config, data, logs, pid, bootstrap file
#                                (default ${TMPDIR:-/tmp}/scenetrigger-kafka-$UID)
#   SCENETRIGGER_KAFKA_PORT      broker port (default: a free loopback port)
#   SCENETRIGGER_KAFKA_HEAP      JVM heap options (default -Xms256m -Xmx512m)
#   SCENETRIGGER_KAFKA_TIMEOUT   seconds to wait for readiness (default 90)
#   SCENETRIGGER_PYTHON          python with aiokafka for the readiness probe
#                                (default .venv/bin/python of the repo)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VERSION="${SCENETRIGGER_KAFKA_VERSION:-4.1.1}"
CACHE="${SCENETRIGGER_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scenetrigger/kafka-$VERSION}"
RUN_DIR="${SCENETRIGGER_KAFKA_RUN_DIR:-${TMPDIR:-/tmp}/scenetrigger-kafka-$(id -u)}"
PORT="${SCENETRIGGER_KAFKA_PORT:-}"
HEAP="${SCENETRIGGER_KAFKA_HEAP:--Xms256m -Xmx512m}"
TIMEOUT="${SCENETRIGGER_KAFKA_TIMEOUT:-90}"
PYTHON="${SCENETRIGGER_PYTHON:-$REPO/.venv/bin/python}"
FRESH=0

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

running_pid() {
    local pid
    [[ -f "$RUN_DIR/kafka.pid" ]] || return 1
    pid="$(cat "$RUN_DIR/kafka.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

fetch_jars() {
    if [[ -f "$CACHE/.complete" ]]; then
        return 0
    fi
    command -v java >/dev/null || die "java not found (apt-get install -y openjdk-17-jre-headless)"
    command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
    log "fetching kafka_2.13 $VERSION jars into $CACHE (first run only)"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/libs.part"
    if ! mvn -B -q -f "$HERE/kafka/pom.xml" -Dkafka.version="$VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$CACHE/libs.part" >"$CACHE/mvn.log" 2>&1; then
        tail -n 40 "$CACHE/mvn.log" >&2
        die "maven could not fetch kafka_2.13 $VERSION"
    fi
    rm -rf "$CACHE/libs"
    mv "$CACHE/libs.part" "$CACHE/libs"
    touch "$CACHE/.complete"
}

write_config() {
    local port="$1" cport="$2"
    cat >"$RUN_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$RUN_DIR/data
auto.create.topics.enable=true
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=104857600
num.network.threads=2
num.io.threads=4
PROPS
}

java_cmd() {
    # Sets JAVA (an array, so the 'libs/*' classpath is passed to java unexpanded).
    # kafka.logs.dir feeds log4j2.properties.
    local -a heap
    read -r -a heap <<<"$HEAP"
    JAVA=(java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true
        "-Dkafka.logs.dir=$RUN_DIR/logs"
        "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties"
        -cp "$CACHE/libs/*")
}

show_log_tail() {
    # The first errors say why (a stack trace's tail usually does not).
    if grep -qE "ERROR|FATAL" "$RUN_DIR/logs/server.log" 2>/dev/null; then
        echo "----- first errors in $RUN_DIR/logs/server.log -----" >&2
        grep -m 5 -E "ERROR|FATAL" "$RUN_DIR/logs/server.log" | cut -c1-400 >&2
    fi
    for f in "$RUN_DIR/stdout.log" "$RUN_DIR/logs/server.log" "$RUN_DIR/format.log"; do
        if [[ -s "$f" ]]; then
            echo "----- tail of $f -----" >&2
            tail -n 60 "$f" >&2
        fi
    done
}

cmd_start() {
    local t0 pid port cport rc
    t0=$(date +%s.%N)
    if pid="$(running_pid)"; then
        log "already running (pid $pid)"
        cat "$RUN_DIR/bootstrap"
        return 0
    fi
    fetch_jars
    mkdir -p "$RUN_DIR"
    if [[ "$FRESH" == 1 ]]; then
        rm -rf "$RUN_DIR/data"
    fi
    rm -rf "$RUN_DIR/logs" "$RUN_DIR/bootstrap"
    mkdir -p "$RUN_DIR/logs"
    port="${PORT:-$(free_port)}"
    cport="$(free_port)"
    while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
    write_config "$port" "$cport"
    java_cmd
    if [[ ! -f "$RUN_DIR/data/meta.properties" ]]; then
        # A Kafka cluster id is 16 random bytes in URL-safe base64 without padding
        # (what StorageTool random-uuid prints, minus a JVM start).
        local cluster_id
        cluster_id="$(python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s)
        break')"
        # A short-lived tool: the client JIT alone starts faster.
        if ! "${JAVA[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool \
            format --standalone -t "$cluster_id" -c "$RUN_DIR/server.properties" \
            >"$RUN_DIR/format.log" 2>&1; then
            show_log_tail
            die "storage format failed"
        fi
    fi
    # setsid: the broker outlives this script and is not hit by the caller's Ctrl-C.
    setsid "${JAVA[@]}" kafka.Kafka "$RUN_DIR/server.properties" \
        >"$RUN_DIR/stdout.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$RUN_DIR/kafka.pid"
    local bootstrap="127.0.0.1:$port"
    if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import aiokafka' 2>/dev/null; then
        rc=0
        "$PYTHON" "$HERE/kafka/wait_ready.py" "$bootstrap" "$TIMEOUT" "$pid" || rc=$?
    else
        # No aiokafka: fall back to the broker's own "started" log line.
        rc=1
        for _ in $(seq 1 $((TIMEOUT * 5))); do
            kill -0 "$pid" 2>/dev/null || { rc=2; break; }
            if grep -q "Kafka Server started" "$RUN_DIR/logs/server.log" 2>/dev/null; then
                rc=0; break
            fi
            sleep 0.2
        done
    fi
    if [[ "$rc" != 0 ]]; then
        [[ "$rc" == 2 ]] && log "broker process exited during startup" || log "broker not ready after ${TIMEOUT}s"
        show_log_tail
        cmd_stop >/dev/null 2>&1 || true
        exit 1
    fi
    echo "$bootstrap" >"$RUN_DIR/bootstrap"
    log "ready in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")s (kafka $VERSION, pid $pid, run dir $RUN_DIR)"
    echo "$bootstrap"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        rm -f "$RUN_DIR/kafka.pid" "$RUN_DIR/bootstrap"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker did not stop in 30s, killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN_DIR/kafka.pid" "$RUN_DIR/bootstrap"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "$(cat "$RUN_DIR/bootstrap" 2>/dev/null || echo starting) pid=$pid run_dir=$RUN_DIR"
        return 0
    fi
    echo "not running (run dir $RUN_DIR)"
    return 3
}

action="${1:-}"
shift || true
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#--port=}"; shift ;;
        --fresh) FRESH=1; shift ;;
        *) die "unknown argument: $1" ;;
    esac
done
case "$action" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start [--port N] [--fresh] | stop | status" >&2; exit 2 ;;
esac
