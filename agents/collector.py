"""HTTP collector: ``POST /events`` (a JSON array or NDJSON) -> the events topic.

Each event is validated like every other input (``triggers.events``); valid
ones go to the events topic, many per record on the partition of their
``user_id`` key (:class:`KafkaPublisher`), rejects to the dead-letter
topic with their reason. The answer is 202 with the counts when anything was
accepted, 400 with the reasons when nothing was. ``/metrics`` and ``/healthz``
are served by the same app. Kafka is behind :class:`Publisher`.

Limits (issue 11, docs/guarantees.md): the body is split into events in
bounded memory and stops at the event limit (:mod:`agents.intake`); each
event is checked against the producer's record size before anything is
sent; the body must arrive within ``read_timeout_s``; at most
``max_concurrent`` requests are read at once (each may hold a body of
``max_body_bytes``). When Kafka stores only part of a request the answer
(503) lists exactly which items were stored and which were not; a retry with
the same ``Idempotency-Key`` header and body sends only those not stored
(the keys of the last ``idempotency_keys`` requests are remembered, in this
process only).

Identity (docs/security.md, "Identity"): an ``identify`` event is the shop
backend's statement, and the collector's token is public (every browser
holds it). A request whose bearer token is the backend's
(``identify_token``, ``$SCENETRIGGER_IDENTIFY_TOKEN``) may carry identify
events; any other request may carry only identify events signed with that
token (``identify_sig``, :func:`config.tokens.identify_signature`). A
request with any other identify is refused whole with 403 (nothing is
stored) and counted in ``scenetrigger_collector_identify_refused``; so is
one, without the backend's token, holding a fact only the product, a
provider or the directory states (``agents.identity_gate.SYSTEM_TYPES``:
a delivery, an open, a share, a consent change, date attributes, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from agents.errors import AgentError
from agents.identity_gate import identify_refused, system_type_refused
from agents.intake import (
    RAW_LIMIT,
    Attempt,
    IdempotencyConflict,
    IdempotencyLedger,
    Rejection,
    TooManyEvents,
    parse_items,
)
from agents.producer import MAX_RECORD_BYTES, ProduceTopics, checked_event_value, event_key
from agents.record_batching import BatchLimits, RecordBatcher
from agents.topics import dead_letter_value
from config.clock import wall_ms
from config.tokens import bearer, token_matches
from triggers.errors import EventRejected
from triggers.events import (
    DEFAULT_MAX_LINE_BYTES,
    REASON_TOO_LARGE,
)
from triggers.host import DEFAULT_MAX_FUTURE_MS, check_future

Message = tuple[str, bytes | None, bytes]  # topic, key, value

REASON_EMPTY = "empty"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "text/plain")


class PublishError(AgentError):
    """Kafka did not store all of a request's messages; ``stored`` holds the
    positions (in the list given to ``publish``) of those it did store."""

    def __init__(self, detail: str, stored: frozenset[int] = frozenset()) -> None:
        super().__init__(detail)
        self.stored = stored


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None:
        """Store every message or raise :class:`PublishError`."""


class KafkaPublisher:
    """Publishes with one aiokafka producer, waiting for this request's acks
    only. Keyed messages (events) are batched: many per record on the
    partition their key hashes to, shared with concurrent requests within
    ``batching`` (:mod:`agents.record_batching`); the rest are sent alone."""

    def __init__(self, producer: Any, batching: BatchLimits | None = None) -> None:
        self._producer = producer
        self._batching = batching or BatchLimits()
        self._batchers: dict[str, RecordBatcher] = {}
        self._creating = asyncio.Lock()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # the requests waiting got the error already
            for batcher in self._batchers.values():
                await batcher.flush()
        await self._producer.stop()

    async def publish(self, messages: Sequence[Message]) -> None:
        # One future per message (a batch's future is shared by its events):
        # what Kafka stored is told apart from what it did not.
        futures: list[asyncio.Future[Any]] = []
        first: BaseException | None = None
        batchers: set[RecordBatcher] = set()
        try:
            for topic, key, value in messages:
                if key is None:
                    futures.append(await self._producer.send(topic, value=value))
                else:
                    batcher = self._batchers.get(topic) or await self._batcher(topic)
                    futures.append(await batcher.add(key, value))
                    batchers.add(batcher)
            # The request is all in: its records go when the loop turns, not
            # after the linger (requests taken in the same turn share them).
            for batcher in batchers:
                batcher.seal_soon()
        except Exception as exc:  # aiokafka raises KafkaError and OSError subclasses
            first = exc
        unique = {id(f): f for f in futures}
        results = dict(zip(unique, await asyncio.gather(*unique.values(),
                                                        return_exceptions=True), strict=True))
        stored = frozenset(i for i, f in enumerate(futures)
                           if not isinstance(results[id(f)], BaseException))
        failed = next((r for r in results.values() if isinstance(r, BaseException)), first)
        if failed is not None or len(stored) < len(messages):
            raise PublishError(f"{type(failed).__name__}: {failed}", stored)

    async def _batcher(self, topic: str) -> RecordBatcher:
        async with self._creating:  # one batcher per topic, even for concurrent first requests
            found = self._batchers.get(topic)
            if found is not None:
                return found
            partitions = await self._producer.partitions_for(topic)
        producer = self._producer

        def send(partition: int, key: bytes | None, value: bytes) -> Awaitable[Any]:
            return producer.send(topic, value=value, key=key, partition=partition)  # type: ignore[no-any-return]

        batcher = self._batchers[topic] = RecordBatcher(send, len(partitions), self._batching)
        return batcher


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    topics: ProduceTopics = field(default_factory=ProduceTopics)
    max_body_bytes: int = 8 * 1024 * 1024
    max_events: int = 10_000
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_errors_listed: int = 100
    # When set, POST /events needs "Authorization: Bearer <token>"; the
    # command refuses to start without one unless --no-auth is given.
    token: str | None = None
    # The shop backend's token: its requests may carry identify events (and
    # it signs the ones browsers relay). Never the same as ``token``.
    identify_token: str | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    read_timeout_s: float = 30.0
    max_concurrent: int = 32
    idempotency_keys: int = 10_000
    max_future_ms: int | None = DEFAULT_MAX_FUTURE_MS  # event time ahead of the clock
    clock: Callable[[], int] = wall_ms


@dataclass(frozen=True, slots=True)
class CollectorMetrics:
    registry: CollectorRegistry
    events: Counter
    requests: Counter
    request_seconds: Histogram
    identify_refused: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> CollectorMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            events=Counter("scenetrigger_collector_events",
                           "Events received by the HTTP collector, by result and reason",
                           ["result", "reason"], registry=reg),
            requests=Counter("scenetrigger_collector_requests",
                             "POST /events requests, by HTTP status", ["status"], registry=reg),
            request_seconds=Histogram("scenetrigger_collector_request_seconds",
                                      "POST /events handling time, Kafka acks included",
                                      registry=reg),
            identify_refused=Counter("scenetrigger_collector_identify_refused",
                                     "identify and system-type events refused (no backend "
                                     "token, no valid signature): their requests were "
                                     "answered 403",
                                     registry=reg),
        )


def create_collector_app(
    publisher: Publisher,
    settings: CollectorSettings | None = None,
    metrics: CollectorMetrics | None = None,
) -> web.Application:
    """The aiohttp app; starts and stops ``publisher`` with the app."""
    conf = settings or CollectorSettings()
    meter = metrics or CollectorMetrics.create()
    # One byte over the limit so our own 413 (with a JSON body) answers first.
    app = web.Application(client_max_size=conf.max_body_bytes + 1)
    state = {"ready": False}
    busy = [0]  # requests being read and handled now
    ledger = IdempotencyLedger(conf.idempotency_keys)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await publisher.start()
        state["ready"] = True
        yield
        state["ready"] = False
        await publisher.stop()

    app.cleanup_ctx.append(lifecycle)

    def answer(status: int, payload: dict[str, Any]) -> web.Response:
        meter.requests.labels(str(status)).inc()
        return web.Response(status=status, body=orjson.dumps(payload),
                            content_type="application/json")

    async def post_events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            return await _handle(request)
        finally:
            meter.request_seconds.observe(time.perf_counter() - started)

    async def _handle(request: web.Request) -> web.Response:
        given = bearer(request.headers.get("Authorization", ""))
        backend = token_matches(given, conf.identify_token)
        if conf.token is not None and not backend and not token_matches(given, conf.token):
            return answer(401, {"error": "unauthorized"})
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _good_key(key):
            return answer(400, {"error": "bad_idempotency_key", "detail": "at most "
                                f"{IdempotencyLedger.MAX_KEY_CHARS} printable ASCII characters"})
        if request.content_length is not None and request.content_length > conf.max_body_bytes:
            return _too_large(request.content_length)
        if busy[0] >= conf.max_concurrent:  # each may hold max_body_bytes: bound the sum
            meter.requests.labels("503").inc()
            return web.Response(status=503, headers={"Retry-After": "1"},
                                body=orjson.dumps({"error": "busy"}),
                                content_type="application/json")
        busy[0] += 1
        try:
            return await _take(request, key, backend)
        finally:
            busy[0] -= 1

    async def _take(request: web.Request, key: str | None, backend: bool) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), conf.read_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return _too_large(None)
        except TimeoutError:
            return answer(408, {"error": "timeout", "detail": "the body did not arrive within "
                                f"{conf.read_timeout_s:g} s"})
        if len(body) > conf.max_body_bytes:
            return _too_large(len(body))
        if not body.strip():
            return answer(400, {"accepted": 0, "rejected": 0, "errors": [
                {"index": 0, "reason": REASON_EMPTY, "detail": "the body has no events"}]})
        ndjson = request.content_type in NDJSON_TYPES
        try:
            items = parse_items(body, ndjson, conf.max_line_bytes, conf.max_events)
        except TooManyEvents:
            return answer(413, {"error": REASON_TOO_LARGE, "detail": f"more than "
                                f"{conf.max_events} events, the limit is {conf.max_events}"})
        refused = [(index, why) for index, item in items if not isinstance(item, Rejection)
                   and (why := identify_refused(item, conf.identify_token, backend)
                        or system_type_refused(item, backend)) is not None]
        if refused:  # nothing of the request is stored: the client learns which items
            meter.identify_refused.inc(len(refused))
            return answer(403, {"error": "forbidden", "reason": refused[0][1].reason,
                                "detail": refused[0][1].detail,
                                "items": [index for index, _ in refused]})
        digest = IdempotencyLedger.digest(body)
        try:
            prior = ledger.get(key, digest) if key is not None else None
        except IdempotencyConflict:
            return answer(422, {"error": "idempotency_key_reused",
                                "detail": "this Idempotency-Key came with another body"})
        if prior is not None and prior.answer is not None:
            return answer(prior.answer[0], {**prior.answer[1], "replayed": True})
        messages: list[Message] = []
        indices: list[int] = []  # each message's item index, as the client counts it
        reasons: list[str | None] = []  # None: an event; else why it was rejected
        rejections: list[Rejection] = []
        now_ms = conf.clock()
        for index, item in items:
            if not isinstance(item, Rejection):
                try:
                    check_future(item.ts, now_ms, conf.max_future_ms)  # year 9999: dead-lettered
                    messages.append((conf.topics.events, event_key(item),
                                     checked_event_value(item, conf.max_record_bytes)))
                    indices.append(index)
                    reasons.append(None)
                    continue
                except EventRejected as exc:  # refused alone, before anything is sent
                    item = Rejection(index, exc.reason, exc.detail,
                                     orjson.dumps(item.fields)[:RAW_LIMIT])
            rejections.append(item)
            messages.append((conf.topics.dead_letters, None, dead_letter_value(
                item.reason, item.detail, "collector", item.raw, where=item.index)))
            indices.append(index)
            reasons.append(item.reason)
        done = prior.stored if prior is not None else frozenset()
        todo = [pos for pos in range(len(messages)) if pos not in done]
        try:
            await publisher.publish([messages[pos] for pos in todo])
            now = frozenset(todo)
            failure = None
        except PublishError as exc:
            now = frozenset(todo[i] for i in exc.stored if i < len(todo))
            failure = str(exc)
        stored = done | now
        for pos in now:
            reason = reasons[pos]
            meter.events.labels("accepted" if reason is None else "rejected", reason or "").inc()
        if failure is not None:
            if key is not None:
                ledger.put(key, Attempt(digest, stored, None))
            return answer(503, {
                "error": "kafka_unavailable", "detail": failure,
                "stored": len(stored),
                "not_stored": [indices[p] for p in range(len(messages)) if p not in stored],
                "retry": "send the same body with the same Idempotency-Key: only what was "
                         "not stored is sent again" if key is not None else
                         "send again only the items listed in not_stored (or use an "
                         "Idempotency-Key header)"})
        accepted = len(messages) - len(rejections)
        payload: dict[str, Any] = {
            "accepted": accepted,
            "rejected": len(rejections),
            "errors": [r.to_dict() for r in rejections[: conf.max_errors_listed]],
        }
        if len(rejections) > conf.max_errors_listed:
            payload["errors_truncated"] = True
        status = 202 if accepted else 400
        if key is not None:
            ledger.put(key, Attempt(digest, stored, (status, payload)))
        return answer(status, payload)

    def _too_large(size: int | None) -> web.Response:
        got = "" if size is None else f"{size} bytes, "
        return answer(413, {"error": REASON_TOO_LARGE,
                            "detail": f"body is {got}the limit is {conf.max_body_bytes} bytes"})

    async def healthz(_request: web.Request) -> web.Response:
        ready = state["ready"]
        return web.Response(status=200 if ready else 503,
                            body=orjson.dumps({"status": "ok" if ready else "starting"}),
                            content_type="application/json")

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(meter.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_post("/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    return app


def _good_key(key: str) -> bool:
    return 0 < len(key) <= IdempotencyLedger.MAX_KEY_CHARS and key.isascii() and key.isprintable()

