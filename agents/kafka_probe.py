"""Is ``--broker`` a Kafka broker? One ApiVersions request per bootstrap
address, answered within seconds, before a client starts.

aiokafka fails fast on a closed port but waits its request timeout (40 s) when
something else listens there (an HTTP server, Redis): it sends a request and
waits for an answer that never comes. The probe asks the same question with a
short deadline and fails as a closed port does, with
:class:`aiokafka.errors.KafkaConnectionError` (one line from the CLI).
"""

from __future__ import annotations

import asyncio
import struct

PROBE_TIMEOUT_S = 2.0  # a broker answers in milliseconds; the CLI must fail in under 5 s
API_VERSIONS = 18  # the request every Kafka client sends first; v0 has no body
CORRELATION_ID = 0x5C_E7E7  # no newline byte: a line-reading server waits for one
MAX_RESPONSE = 1 << 20  # an ApiVersions answer is a few hundred bytes; "HTTP" reads as ~1.2 GB


def _request(client_id: bytes = b"scenetrigger-probe") -> bytes:
    body = struct.pack(">hhih", API_VERSIONS, 0, CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _address(part: str) -> tuple[str, int]:
    host, _, port = part.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


async def _ask(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` answers as Kafka; else why not."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(_request())
            await writer.drain()
            size, correlation = struct.unpack(">ii", await reader.readexactly(8))
    except TimeoutError:
        return f"no Kafka answer within {timeout_s:g} s (another service on that port?)"
    except asyncio.IncompleteReadError:
        return "closed the connection without a Kafka answer (another service on that port?)"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        if writer is not None:
            writer.close()
    if correlation != CORRELATION_ID or not 4 <= size <= MAX_RESPONSE:
        return "answered, but not as Kafka (another service on that port?)"
    return None


async def probe_kafka(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Return when one of the bootstrap addresses (``h:p,h2:p2``) answers as
    Kafka; else raise ``KafkaConnectionError`` naming each and why."""
    from aiokafka.errors import KafkaConnectionError

    addresses = [_address(p) for p in bootstrap.split(",") if p.strip()]
    said = await asyncio.gather(*(_ask(h, p, timeout_s) for h, p in addresses))
    if any(why is None for why in said):
        return
    reasons = "; ".join(f"{h}:{p} {why}" for (h, p), why in zip(addresses, said, strict=True))
    raise KafkaConnectionError(f"Unable to bootstrap from {addresses}: {reasons}")
