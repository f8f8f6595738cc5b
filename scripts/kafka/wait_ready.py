"""Wait until a Kafka broker answers a real metadata request (used by scripts/kafka.sh).

Usage: wait_ready.py BOOTSTRAP TIMEOUT_S PID[,PID...] [BROKERS]
Exits 0 when the broker lists topics and the cluster reports BROKERS nodes
(default 1), 1 on timeout, 2 when a broker process PID died meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _probe(bootstrap: str, brokers: int) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.client import AIOKafkaClient

    # Each node answers a metadata request itself (a node just restarted is
    # still listed by the others until the controller fences it).
    for host in bootstrap.split(","):
        client = AIOKafkaClient(bootstrap_servers=host, request_timeout_ms=3000)
        try:
            await client.bootstrap()
        except Exception:  # not up yet
            return False
        finally:
            with contextlib.suppress(Exception):
                await client.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        cluster = await admin.describe_cluster()
        return len(cluster.get("brokers") or ()) >= brokers
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        # closing a half-started client may raise too
        with contextlib.suppress(Exception):
            await admin.close()


async def _main(bootstrap: str, timeout_s: float, pids: list[int], brokers: int) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not all(_alive(pid) for pid in pids):
            return 2
        if await _probe(bootstrap, brokers):
            return 0
        await asyncio.sleep(0.3)
    return 1


def main() -> int:
    bootstrap, timeout_s = sys.argv[1], float(sys.argv[2])
    pids = [int(p) for p in sys.argv[3].split(",")]
    brokers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    # aiokafka logs every refused connection while the broker boots; the caller
    # prints the broker log itself when startup fails.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_main(bootstrap, timeout_s, pids, brokers))


if __name__ == "__main__":
    sys.exit(main())
