"""HTTP collector: ``POST /events`` (a JSON array or NDJSON) -> the events topic.

Each event is validated like every other input (``triggers.events``); valid
ones go to the events topic, many per record on the partition of their
``user_id`` key (:class:`KafkaPublisher`), rejects to the dead-letter
topic with their reason. The answer is 202 with the counts when anything was
accepted, 400 with the reasons when nothing was. ``/metrics`` and ``/healthz``
are served by the same app. Kafka is behind :class:`Publisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
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

from agents.batching import BatchLimits, RecordBatcher
from agents.producer import ProduceTopics, event_key, event_value
from agents.topics import dead_letter_value
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import (
    DEFAULT_MAX_LINE_BYTES,
    REASON_INVALID_JSON,
    REASON_TOO_LARGE,
    Event,
    decode_event_line,
    event_from_mapping,
    json_rejection,
)

Message = tuple[str, bytes | None, bytes]  # topic, key, value

REASON_EMPTY = "empty"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "text/plain")


class PublishError(SceneTriggerError):
    """Kafka did not store a request's messages."""


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None:
        """Store every message or raise :class:`PublishError`."""


class KafkaPublisher:
    """Publishes with one aiokafka producer, waiting for this request's acks
    only. Keyed messages (events) are batched: many per record on the
    partition their key hashes to, shared with concurrent requests within
    ``batching`` (:mod:`agents.batching`); the rest are sent alone."""

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
        try:
            futures: dict[int, asyncio.Future[Any]] = {}
            for topic, key, value in messages:
                if key is None:
                    future = await self._producer.send(topic, value=value)
                else:
                    batcher = self._batchers.get(topic) or await self._batcher(topic)
                    future = await batcher.add(key, value)
                futures[id(future)] = future  # a batch's future once
            await asyncio.gather(*futures.values())
        except Exception as exc:  # aiokafka raises KafkaError and OSError subclasses
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc

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
    # When set, POST /events needs "Authorization: Bearer <token>".
    token: str | None = None


@dataclass(frozen=True, slots=True)
class CollectorMetrics:
    registry: CollectorRegistry
    events: Counter
    requests: Counter
    request_seconds: Histogram

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
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str
    detail: str
    raw: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "detail": self.detail}


def parse_body(
    body: bytes, ndjson: bool, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[Event | Rejection]:
    """Split a body into events and rejections, in order. A body whose first
    non-blank byte is ``[`` is a JSON array unless the content type says NDJSON;
    anything else is NDJSON (one event object per line; blank lines skipped)."""
    if not ndjson and body.lstrip()[:1] == b"[":
        return _parse_array(body)
    out: list[Event | Rejection] = []
    for index, raw in enumerate(body.split(b"\n")):
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            out.append(decode_event_line(line, max_line_bytes))
        except EventRejected as exc:
            out.append(Rejection(index, exc.reason, exc.detail, line))
    return out


def _parse_array(body: bytes) -> list[Event | Rejection]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        rejected = json_rejection(body, exc)
        return [Rejection(0, rejected.reason, rejected.detail, body)]
    if not isinstance(items, list):  # "[" that parsed as something else cannot happen
        return [Rejection(0, REASON_INVALID_JSON, "expected a JSON array", body)]
    out: list[Event | Rejection] = []
    for index, item in enumerate(items):
        try:
            out.append(event_from_mapping(item))
        except EventRejected as exc:
            out.append(Rejection(index, exc.reason, exc.detail, orjson.dumps(item)))
    return out


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
        if conf.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {conf.token}".encode()):
                return answer(401, {"error": "unauthorized"})
        if request.content_length is not None and request.content_length > conf.max_body_bytes:
            return _too_large(request.content_length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(None)
        if len(body) > conf.max_body_bytes:
            return _too_large(len(body))
        if not body.strip():
            return answer(400, {"accepted": 0, "rejected": 0, "errors": [
                {"index": 0, "reason": REASON_EMPTY, "detail": "the body has no events"}]})
        ndjson = request.content_type in NDJSON_TYPES
        items = parse_body(body, ndjson, conf.max_line_bytes)
        if len(items) > conf.max_events:
            return answer(413, {"error": REASON_TOO_LARGE,
                                "detail": f"{len(items)} events, the limit is {conf.max_events}"})
        messages: list[Message] = []
        rejections: list[Rejection] = []
        for item in items:
            if isinstance(item, Rejection):
                rejections.append(item)
                messages.append((conf.topics.dead_letters, None, dead_letter_value(
                    item.reason, item.detail, "collector", item.raw, where=item.index)))
            else:
                messages.append((conf.topics.events, event_key(item), event_value(item)))
        try:
            await publisher.publish(messages)
        except PublishError as exc:
            return answer(503, {"error": "kafka_unavailable", "detail": str(exc)})
        accepted = len(items) - len(rejections)
        if accepted:
            meter.events.labels("accepted", "").inc(accepted)
        for rej in rejections:
            meter.events.labels("rejected", rej.reason).inc()
        payload: dict[str, Any] = {
            "accepted": accepted,
            "rejected": len(rejections),
            "errors": [r.to_dict() for r in rejections[: conf.max_errors_listed]],
        }
        if len(rejections) > conf.max_errors_listed:
            payload["errors_truncated"] = True
        return answer(202 if accepted else 400, payload)

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
