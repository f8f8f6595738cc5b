#!/usr/bin/env bash
# Apache Kafka 4.x in KRaft mode for dev and tests: one combined
# broker+controller, or a cluster of N nodes on loopback (each a broker and a
# controller voter; one run dir, node K in RUN_DIR/node-K).
#
#   scripts/kafka.sh start [--port N] [--fresh]   fetch jars (cached), format, start, wait
#   scripts/kafka.sh start --nodes 3 [--fresh]    a 3-node cluster; nodes already running are
#                                                  kept, a stopped node restarts on its ports
#   scripts/kafka.sh stop                          stop the broker(s) of this run dir
#   scripts/kafka.sh status                        print bootstrap and exit 0 when running
#
# A cluster's brokers keep default.replication.factor=1 and min.insync.replicas=1
# on purpose: scenetrigger decides the replication of the topics it creates
# (agents/replication.py), not the broker. Kafka's own internal topics (offsets,
# transactions) are replicated min(3, N) with min.isr N-1 (at least 1).
#
# Env:
#   SCENETRIGGER_KAFKA_VERSION   Kafka release (default 4.1.1)
#   SCENETRIGGER_KAFKA_CACHE     jar cache (default ~/.cache/scenetrigger/kafka-<version>)
#   SCENETRIGGER_KAFKA_RUN_DIR   config, data, logs, pid, bootstrap file
#                                (default ${TMPDIR:-/tmp}/scenetrigger-kafka-$UID)
#   SCENETRIGGER_KAFKA_PORT      broker port (default: a free loopback port; one node only)
#   SCENETRIGGER_KAFKA_NODES     nodes of a cluster started by `start` (default: the count of
#                                the cluster already in the run dir, else 1)
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
NODES="${SCENETRIGGER_KAFKA_NODES:-}"

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

running_pid() {
    # The broker pid kept in DIR (default: the run dir), when it is alive.
    local pid dir="${1:-$RUN_DIR}"
    [[ -f "$dir/kafka.pid" ]] || return 1
    pid="$(cat "$dir/kafka.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

free_ports() {
    # N distinct free loopback ports (all bound at once, so none repeats).
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()' "$1"
}

new_cluster_id() {
    # A Kafka cluster id is 16 random bytes in URL-safe base64 without padding
    # (what StorageTool random-uuid prints, minus a JVM start).
    python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s)
        break'
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
        local cluster_id
        cluster_id="$(new_cluster_id)"
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

# ---- a cluster of N nodes (RUN_DIR/nodes holds N; node K lives in RUN_DIR/node-K) ----

write_node_config() {
    local k="$1" n="$2" port="$3" cport="$4" voters="$5" dir="$RUN_DIR/node-$1"
    local rf=$((n < 3 ? n : 3))
    local isr=$((rf > 1 ? rf - 1 : 1))
    mkdir -p "$dir"
    echo "$port" >"$dir/port"
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$k
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.voters=$voters
log.dirs=$dir/data
auto.create.topics.enable=true
num.partitions=4
# Left at 1 on purpose: the project replicates its own topics (see the header).
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# A killed node is fenced (its partitions get new leaders) after 6 s, not 9.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
log.retention.hours=24
log.segment.bytes=104857600
num.network.threads=2
num.io.threads=4
PROPS
}

cluster_bootstrap() {
    local k hosts=()
    for k in $(seq 1 "$1"); do
        hosts+=("127.0.0.1:$(cat "$RUN_DIR/node-$k/port")")
    done
    (IFS=,; echo "${hosts[*]}")
}

show_cluster_tails() {
    local k
    for k in $(seq 1 "$1"); do
        echo "===== node $k =====" >&2
        RUN_DIR="$RUN_DIR/node-$k" show_log_tail
    done
}

cmd_start_cluster() {
    local n="$1" t0 k dir pid rc ports voters="" cluster_id bootstrap pids=() fmt=()
    t0=$(date +%s.%N)
    [[ -z "$PORT" ]] || die "--port is for one node; a cluster's nodes take free ports"
    if [[ -f "$RUN_DIR/nodes" && "$(cat "$RUN_DIR/nodes")" != "$n" && "$FRESH" != 1 ]]; then
        die "$RUN_DIR holds a cluster of $(cat "$RUN_DIR/nodes") nodes: stop it and start with --fresh"
    fi
    if [[ -f "$RUN_DIR/kafka.pid" ]] && running_pid >/dev/null; then
        die "a single broker runs in $RUN_DIR: stop it first"
    fi
    fetch_jars
    mkdir -p "$RUN_DIR"
    if [[ "$FRESH" == 1 ]]; then
        if [[ -f "$RUN_DIR/nodes" ]]; then cmd_stop_cluster >/dev/null 2>&1 || true; fi
        rm -rf "$RUN_DIR"/node-* "$RUN_DIR/nodes" "$RUN_DIR/bootstrap"
    fi
    java_cmd
    if [[ ! -f "$RUN_DIR/nodes" ]]; then
        read -r -a ports <<<"$(free_ports $((2 * n)))"
        for k in $(seq 1 "$n"); do
            voters+="${voters:+,}$k@127.0.0.1:${ports[$((n + k - 1))]}"
        done
        for k in $(seq 1 "$n"); do
            write_node_config "$k" "$n" "${ports[$((k - 1))]}" "${ports[$((n + k - 1))]}" "$voters"
        done
        cluster_id="$(new_cluster_id)"
        # Every node formatted with the same cluster id, in parallel (a JVM each).
        for k in $(seq 1 "$n"); do
            "${JAVA[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format \
                -t "$cluster_id" -c "$RUN_DIR/node-$k/server.properties" \
                >"$RUN_DIR/node-$k/format.log" 2>&1 &
            fmt+=($!)
        done
        rc=0
        for pid in "${fmt[@]}"; do wait "$pid" || rc=1; done
        if [[ "$rc" != 0 ]]; then
            show_cluster_tails "$n"
            die "storage format failed"
        fi
        echo "$n" >"$RUN_DIR/nodes"
    fi
    for k in $(seq 1 "$n"); do
        dir="$RUN_DIR/node-$k"
        if pid="$(running_pid "$dir")"; then
            pids+=("$pid")
            continue
        fi
        rm -rf "$dir/logs"
        mkdir -p "$dir/logs"
        RUN_DIR="$dir" java_cmd  # kafka.logs.dir: the node's own
        setsid "${JAVA[@]}" kafka.Kafka "$dir/server.properties" \
            >"$dir/stdout.log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$dir/kafka.pid"
        pids+=("$pid")
    done
    bootstrap="$(cluster_bootstrap "$n")"
    rc=0
    "$PYTHON" "$HERE/kafka/wait_ready.py" "$bootstrap" "$TIMEOUT" \
        "$(IFS=,; echo "${pids[*]}")" "$n" || rc=$?
    if [[ "$rc" != 0 ]]; then
        [[ "$rc" == 2 ]] && log "a node exited during startup" || log "cluster not ready after ${TIMEOUT}s"
        show_cluster_tails "$n"
        cmd_stop_cluster >/dev/null 2>&1 || true
        exit 1
    fi
    echo "$bootstrap" >"$RUN_DIR/bootstrap"
    log "$n nodes ready in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")s (kafka $VERSION, pids ${pids[*]}, run dir $RUN_DIR)"
    echo "$bootstrap"
}

cmd_stop_cluster() {
    local k pid stopped=()
    # All at once: a controller quorum that loses its majority first would make
    # the last nodes wait for it until their shutdown timeout.
    for k in $(seq 1 "$(cat "$RUN_DIR/nodes")"); do
        if pid="$(running_pid "$RUN_DIR/node-$k")"; then
            kill -TERM "$pid"
            stopped+=("$pid")
        fi
        rm -f "$RUN_DIR/node-$k/kafka.pid"
    done
    for pid in "${stopped[@]}"; do
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop in 30s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$RUN_DIR/bootstrap"
    if [[ ${#stopped[@]} == 0 ]]; then
        log "not running"
    else
        log "stopped (pids ${stopped[*]})"
    fi
}

cmd_status_cluster() {
    local k pid n up=0 line=()
    n="$(cat "$RUN_DIR/nodes")"
    for k in $(seq 1 "$n"); do
        if pid="$(running_pid "$RUN_DIR/node-$k")"; then
            up=$((up + 1))
            line+=("node$k=$pid")
        else
            line+=("node$k=down")
        fi
    done
    if [[ "$up" == 0 ]]; then
        echo "not running (run dir $RUN_DIR, $n nodes)"
        return 3
    fi
    echo "$(cat "$RUN_DIR/bootstrap" 2>/dev/null || cluster_bootstrap "$n") ${line[*]} run_dir=$RUN_DIR"
    [[ "$up" == "$n" ]] || return 4
}

action="${1:-}"
shift || true
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#--port=}"; shift ;;
        --fresh) FRESH=1; shift ;;
        --nodes) NODES="$2"; shift 2 ;;
        --nodes=*) NODES="${1#--nodes=}"; shift ;;
        *) die "unknown argument: $1" ;;
    esac
done
if [[ -z "$NODES" ]]; then
    NODES="$(cat "$RUN_DIR/nodes" 2>/dev/null || echo 1)"
fi
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a whole number >= 1, not $NODES"
clustered=0
[[ "$NODES" -gt 1 || -f "$RUN_DIR/nodes" ]] && clustered=1
case "$action" in
    start) if [[ "$clustered" == 1 ]]; then cmd_start_cluster "$NODES"; else cmd_start; fi ;;
    stop) if [[ -f "$RUN_DIR/nodes" ]]; then cmd_stop_cluster; else cmd_stop; fi ;;
    status) if [[ -f "$RUN_DIR/nodes" ]]; then cmd_status_cluster; else cmd_status; fi ;;
    *) echo "usage: $0 start [--port N] [--nodes N] [--fresh] | stop | status" >&2; exit 2 ;;
esac
