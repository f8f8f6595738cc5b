"""Wait until a Kafka broker answers a real metadata request (used by scripts/kafka.sh).

Usage: wait_ready.py BOOTSTRAP TIMEOUT_S PID
Exits 0 when the broker lists topics and reports itself as a cluster node,
1 on timeout, 2 when the broker process PID died meanwhile.
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


async def _probe(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # any failure means "not ready yet"
        return False
    finally:
        # closing a half-started client may raise too
        with contextlib.suppress(Exception):
            await admin.close()


async def _main(bootstrap: str, timeout_s: float, pid: int) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return 2
        if await _probe(bootstrap):
            return 0
        await asyncio.sleep(0.3)
    return 1


def main() -> int:
    bootstrap, timeout_s, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    # aiokafka logs every refused connection while the broker boots; the caller
    # prints the broker log itself when startup fails.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_main(bootstrap, timeout_s, pid))


if __name__ == "__main__":
    sys.exit(main())
