"""Webhook channel: POST the message as JSON, signed with HMAC-SHA256.

Signature (verify with :func:`verify_signature`): the sender puts the Unix
time in ms in ``X-Scenetrigger-Timestamp`` and
``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>`` in
``X-Scenetrigger-Signature``. Signing the timestamp lets a receiver reject
replays of an old body.

Retries (exponential backoff, full jitter) on 5xx, 408, timeouts and
connection errors; 429 waits for ``Retry-After`` (bounded); any other 4xx
fails at once. ``send`` never raises for a delivery failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime

import aiohttp

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message
from channels.transports.retry import Attempt, RetryPolicy, Sleep, run_attempts
from channels.transports.send_batcher import Batcher
from channels.transports.wire import message_to_json
from config.channel_models import WebhookModel
from config.clock import wall_ms

SIGNATURE_HEADER = "X-Scenetrigger-Signature"
TIMESTAMP_HEADER = "X-Scenetrigger-Timestamp"


def sign(secret: bytes, timestamp_ms: int, body: bytes) -> str:
    # hmac.digest: one C call, the fastest form for a one-shot MAC.
    return "sha256=" + hmac.digest(secret, b"%d.%b" % (timestamp_ms, body), hashlib.sha256).hex()


def verify_signature(secret: bytes, timestamp: str | None, signature: str | None, body: bytes,
                     *, now_ms: int | None = None, tolerance_ms: int = 300_000) -> bool:
    """Receiver side: the signature matches and the timestamp is recent."""
    if timestamp is None or signature is None or not (timestamp.isascii()
                                                      and timestamp.isdigit()):
        return False
    stamp = int(timestamp)
    now = now_ms if now_ms is not None else wall_ms()
    if abs(now - stamp) > tolerance_ms:
        return False
    # bytes: a non-ASCII header must compare unequal, not raise TypeError
    return hmac.compare_digest(sign(secret, stamp, body).encode(), signature.encode())


def retry_after_ms(value: str | None, now_s: float | None = None) -> int | None:
    """``Retry-After`` as ms: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text) * 1000
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = now_s if now_s is not None else time.time()
    return max(0, int((when.timestamp() - now) * 1000))


def classify_status(status: int, headers: Mapping[str, str]) -> Attempt:
    """What an HTTP status means for a delivery (shared with the provider adapters)."""
    if 200 <= status < 300:
        return Attempt(True, status=status)
    error = f"HTTP {status}"
    if status == 429:
        return Attempt(False, error, True, status, retry_after_ms(headers.get("Retry-After")))
    if status >= 500 or status == 408:
        return Attempt(False, error, True, status)
    return Attempt(False, error, False, status)


def exception_attempt(exc: BaseException, timeout_ms: int) -> Attempt:
    """A transport exception as an attempt: timeouts and connection errors retry."""
    if isinstance(exc, asyncio.TimeoutError):
        return Attempt(False, f"timeout after {timeout_ms} ms", True)
    if isinstance(exc, aiohttp.InvalidURL):
        return Attempt(False, f"invalid URL: {exc}", False)
    return Attempt(False, f"{type(exc).__name__}: {exc}", True)


def pooled_session(session: aiohttp.ClientSession | None, max_connections: int,
                   timeout_ms: int) -> aiohttp.ClientSession:
    """``session`` while it is open, else a new pooled one. HTTP channels make
    theirs on first use, inside the running loop, and reuse it until closed."""
    if session is not None and not session.closed:
        return session
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections),
                                 timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000))


@dataclass(slots=True)
class WebhookChannel:
    """One webhook endpoint. The aiohttp session is created on first use (in
    the running loop) and reused for every delivery until :meth:`close`.

    With ``batch_max > 1`` concurrent sends are grouped: a batch leaves when
    it holds ``batch_max`` messages or ``batch_linger_ms`` after its first
    one, as ``{"messages": [...]}`` with ``X-Scenetrigger-Batch: <n>``; every
    message of a batch gets the batch's result. Receivers must opt in."""

    name: str
    url: str
    secret: bytes = field(repr=False)  # a repr may reach a log
    timeout_ms: int = 5_000
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    signature_header: str = SIGNATURE_HEADER
    timestamp_header: str = TIMESTAMP_HEADER
    max_connections: int = 100
    batch_max: int = 1
    batch_linger_ms: int = 5
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)  # once: seeding is slow
    clock_ms: Callable[[], int] = field(default=wall_ms)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _batcher: Batcher[Message, DeliveryResult] | None = field(default=None, init=False,
                                                               repr=False)

    retries_internally = True

    def _client(self) -> aiohttp.ClientSession:
        self._session = pooled_session(self._session, self.max_connections, self.timeout_ms)
        return self._session

    async def send(self, message: Message) -> DeliveryResult:
        if self.batch_max <= 1:
            return await self._post(message_to_json(message), message, 1)
        if self._batcher is None:
            self._batcher = Batcher(self._post_batch, self.batch_max, self.batch_linger_ms,
                                    self._batch_failed)
        return await self._batcher.submit(message)

    async def _post_batch(self, batch: list[Message]) -> list[DeliveryResult]:
        body = b'{"messages":[' + b",".join(message_to_json(m) for m in batch) + b"]}"
        result = await self._post(body, batch[0], len(batch))
        return [replace(result, message_id=message.message_id) for message in batch]

    def _batch_failed(self, message: Message, exc: BaseException) -> DeliveryResult:
        return DeliveryResult(False, self.name, message.message_id, 1,
                              f"batch failed: {exc!r}", False)

    async def _post(self, body: bytes, first: Message, count: int) -> DeliveryResult:
        session = self._client()
        # Idempotency-Key: the same on every retry and redelivery of this
        # message (or batch), so a receiver can drop a repeat (at-least-once).
        extra = ({"X-Scenetrigger-Message-Id": first.message_id,
                  "Idempotency-Key": first.message_id} if count == 1 else
                 {"X-Scenetrigger-Batch": str(count),
                  "Idempotency-Key": hashlib.blake2b(body, digest_size=16).hexdigest()})

        async def attempt() -> Attempt:
            stamp = self.clock_ms()  # fresh per attempt: receivers check recency
            headers = {
                **self.headers,
                "Content-Type": "application/json",
                self.timestamp_header: str(stamp),
                self.signature_header: sign(self.secret, stamp, body),
                **extra,
            }
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    await response.read()  # drain so the connection is reused
                    return classify_status(response.status, response.headers)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return exception_attempt(exc, self.timeout_ms)

        return await run_attempts(first, self.name, attempt, self.policy,
                                  sleep=self.sleep, rng=self.rng)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(name: str, model: WebhookModel, context: BuildContext) -> WebhookChannel:
    """A ``type: webhook`` channel (its signing secret from the environment)."""
    secret = context.secret("secret_env", model.secret_env) or ""
    return WebhookChannel(
        name=name, url=model.url, secret=secret.encode(), timeout_ms=model.timeout,
        policy=RetryPolicy.of(model.retry), headers=dict(model.headers),
        signature_header=model.signature_header, timestamp_header=model.timestamp_header,
        max_connections=model.max_connections, batch_max=model.batch_max,
        batch_linger_ms=model.batch_linger,
    )


# A webhook (a CRM, a message bus) needs no address of the user.
KIND = ChannelKind("webhook", WebhookModel, build)
