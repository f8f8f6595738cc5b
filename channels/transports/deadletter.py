"""The delivery dead-letter: a Redis stream of deliveries that failed for good.

Each entry holds the message (JSON), the channel name, the last error, the
attempts, whether a retry may help, the HTTP/SMTP status and the time.
``scenetrigger redrive`` reads it back, re-sends, and deletes what succeeds.

A record that never became a message (undecodable, or its delivery raised
something that is not an infrastructure fault) is kept too, as a *record*
entry (:meth:`DeadLetterStore.add_record`: where it came from, the reason and
the raw bytes, capped); redrive lists and skips those. The stream must live in
a Redis that persists (AOF: docs/guarantees.md), or a restart erases it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from channels.base import DeliveryResult, Message
from channels.transports.wire import MessageDecodeError, message_from_json, message_to_json
from config.clock import wall_ms

DEFAULT_STREAM = "scenetrigger:deadletter"
RECORD_RAW_LIMIT = 64 * 1024  # bytes of a dead record kept


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    channel: str
    message: Message | None  # None: the stored message could not be decoded
    error: str
    attempts: int
    retryable: bool
    status: int | None
    failed_ms: int
    redrives: int = 0
    raw: bytes = b""
    kind: str = "message"  # or "record": a record that never became a message
    source: str = ""  # a record's origin (topic/partition/offset)


@dataclass(slots=True)
class DeadLetterStore:
    redis: aioredis.Redis
    stream: str = DEFAULT_STREAM
    max_entries: int = 1_000_000
    clock_ms: Callable[[], int] = field(default=wall_ms)

    async def add(self, message: Message, channel: str, result: DeliveryResult,
                  redrives: int = 0) -> str:
        fields: dict[str, str | bytes | int] = {
            "channel": channel,
            "message": message_to_json(message),
            "error": result.error or "",
            "attempts": result.attempts,
            "retryable": int(result.retryable),
            "status": "" if result.status is None else result.status,
            "failed_ms": self.clock_ms(),
            "redrives": redrives,
        }
        entry_id = await self.redis.xadd(self.stream, fields,  # type: ignore[arg-type]
                                         maxlen=self.max_entries, approximate=True)
        return _text(entry_id)

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str:
        """Keep a record that could not be delivered (not a message: nothing
        to re-send as it is); ``reason`` is a stable code, ``detail`` says why."""
        fields: dict[str, str | bytes | int] = {
            "kind": "record",
            "channel": "",
            "source": source[:500],
            # Text (a Redis client decoding responses must read it back): UTF-8
            # as it is, anything else as base64.
            **_raw_text((raw or b"")[:RECORD_RAW_LIMIT]),
            "error": f"{reason}: {detail}"[:2_000],
            "reason": reason,
            "attempts": 0,
            "retryable": 0,
            "status": "",
            "failed_ms": self.clock_ms(),
            "redrives": 0,
        }
        entry_id = await self.redis.xadd(self.stream, fields,  # type: ignore[arg-type]
                                         maxlen=self.max_entries, approximate=True)
        return _text(entry_id)

    async def count(self) -> int:
        return int(await self.redis.xlen(self.stream))

    async def last_id(self) -> str | None:
        newest = await self.redis.xrevrange(self.stream, count=1)
        return _text(newest[0][0] or b"") if newest else None

    async def entries(self, channel: str | None = None, limit: int | None = None,
                      batch: int = 500, until: str = "+") -> AsyncIterator[DeadLetter]:
        """Oldest first up to entry ``until``, optionally one channel's, at most ``limit``."""
        start = "-"
        seen = 0
        while limit is None or seen < limit:
            chunk = await self.redis.xrange(self.stream, min=start, max=until, count=batch)
            if not chunk:
                return
            for entry_id, fields in chunk:
                letter = _decode(_text(entry_id or b""), fields or {})
                if channel is not None and letter.channel != channel:
                    continue
                yield letter
                seen += 1
                if limit is not None and seen >= limit:
                    return
            start = "(" + _text(chunk[-1][0] or b"")
            if len(chunk) < batch:
                return

    async def remove(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(await self.redis.xdel(self.stream, *entry_ids))


@dataclass(slots=True)
class RedriveReport:
    matched: int = 0
    sent_ok: int = 0
    failed: int = 0
    skipped: int = 0  # undecodable, or a channel no longer configured
    failures: list[str] = field(default_factory=list)

    def render(self, dry_run: bool) -> str:
        if dry_run:
            return f"dry run: {self.matched} dead letter(s) would be re-sent, " \
                   f"{self.skipped} skipped"
        return (f"re-sent {self.matched - self.skipped}: {self.sent_ok} ok (removed), "
                f"{self.failed} failed (kept), {self.skipped} skipped")


Send = Callable[[Message, str], Awaitable[DeliveryResult]]


async def redrive(store: DeadLetterStore, send: Send, known: Callable[[str], bool], *,
                  channel: str | None = None, limit: int | None = None, dry_run: bool = False,
                  concurrency: int = 16,
                  on_entry: Callable[[DeadLetter, str], None] | None = None) -> RedriveReport:
    """Re-send dead letters (oldest first) through ``send``; remove those that
    succeed. A failure replaces its entry with one carrying the new error and
    ``redrives + 1``. Entries added while this runs are left for the next run."""
    report = RedriveReport()
    until = await store.last_id()
    if until is None:
        return report
    gate = asyncio.Semaphore(max(1, concurrency))
    pending: set[asyncio.Task[None]] = set()

    async def one(letter: DeadLetter, message: Message) -> None:
        async with gate:
            result = await send(message, letter.channel)
            if result.ok:
                report.sent_ok += 1
                await store.remove([letter.entry_id])
                verdict = "ok"
            else:
                report.failed += 1
                report.failures.append(f"{letter.entry_id} {letter.channel}: {result.error}")
                await store.add(message, letter.channel, result, letter.redrives + 1)
                await store.remove([letter.entry_id])
                verdict = f"failed: {result.error}"
        if on_entry is not None:
            on_entry(letter, verdict)

    async for letter in store.entries(channel, limit, until=until):
        report.matched += 1
        if letter.message is None or not known(letter.channel):
            report.skipped += 1
            if on_entry is not None:
                reason = ("a record, not a message" if letter.kind == "record" else
                          "undecodable" if letter.message is None else "unknown channel")
                on_entry(letter, f"skipped: {reason}")
            continue
        if dry_run:
            if on_entry is not None:
                on_entry(letter, "would re-send")
            continue
        task = asyncio.create_task(one(letter, letter.message))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if len(pending) >= 4 * concurrency:  # bound memory on a huge dead-letter
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.gather(*pending)
    return report


def _decode(entry_id: str, raw: dict[bytes | str, bytes | str]) -> DeadLetter:
    fields = {_text(k): v for k, v in raw.items()}
    body = fields.get("message", b"")
    body_bytes = body.encode() if isinstance(body, str) else body
    if _text(fields.get("encoding", b"")) == "base64":
        body_bytes = base64.b64decode(body_bytes)
    kind = _text(fields.get("kind", b"message")) or "message"
    try:
        message: Message | None = (None if kind == "record"
                                   else message_from_json(body_bytes))
    except MessageDecodeError:
        message = None
    status = _text(fields.get("status", b""))
    return DeadLetter(
        entry_id=entry_id,
        channel=_text(fields.get("channel", b"")),
        message=message,
        error=_text(fields.get("error", b"")),
        attempts=_int(fields.get("attempts")),
        retryable=_int(fields.get("retryable")) == 1,
        status=int(status) if status.isdigit() else None,
        failed_ms=_int(fields.get("failed_ms")),
        redrives=_int(fields.get("redrives")),
        raw=body_bytes,
        kind=kind,
        source=_text(fields.get("source", b"")),
    )


def _raw_text(raw: bytes) -> dict[str, str]:
    try:
        return {"message": raw.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"message": base64.b64encode(raw).decode(), "encoding": "base64"}


def _int(value: bytes | str | None) -> int:
    text = _text(value or b"0")
    return int(text) if text.lstrip("-").isdigit() else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
