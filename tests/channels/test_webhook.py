"""Webhook channel: signing, retry classification, backoff; and against a
real aiohttp receiver on loopback (integration)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import socket

import aiohttp
import orjson
import pytest

from channels.transports.retry import Attempt, RetryPolicy, run_attempts
from channels.transports.webhook import (
    WebhookChannel,
    classify_status,
    exception_attempt,
    pooled_session,
    retry_after_ms,
    sign,
    verify_signature,
)
from channels.transports.wire import message_from_json
from tests.channels.receivers import HANG, Receiver, message, running_receiver

SECRET = b"test-secret"


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def webhook(url: str, sleep: FakeSleep | None = None, **kw: object) -> WebhookChannel:
    policy = kw.pop("policy", RetryPolicy(max_attempts=3, base_backoff_ms=10, max_backoff_ms=50))
    return WebhookChannel("crm", url, SECRET, policy=policy,  # type: ignore[arg-type]
                          sleep=sleep or FakeSleep(), rng=random.Random(7), **kw)  # type: ignore[arg-type]


# -- unit ---------------------------------------------------------------------

def test_signature_matches_the_documented_formula_computed_independently() -> None:
    # docs/channels.md: X-Scenetrigger-Signature = "sha256=" + hex HMAC-SHA256(secret,
    # "<timestamp>." + raw body). Computed here with hmac/hashlib, never through sign().
    body = b'{"scene":"cart_abandonment","user_id":"u1"}'
    stamp = 1_700_000_000_123
    expected = "sha256=" + hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, stamp, body) == expected
    assert verify_signature(SECRET, str(stamp), expected, body, now_ms=stamp)
    colon = "sha256=" + hmac.new(SECRET, f"{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    assert not verify_signature(SECRET, str(stamp), colon, body, now_ms=stamp)


def test_signature_round_trip_and_tamper() -> None:
    body = b'{"a":1}'
    signature = sign(SECRET, 1_000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, "1000", signature, body, now_ms=1_000)
    assert not verify_signature(SECRET, "1000", signature, body + b" ", now_ms=1_000)
    assert not verify_signature(b"other", "1000", signature, body, now_ms=1_000)
    assert not verify_signature(SECRET, "1001", signature, body, now_ms=1_000)
    assert not verify_signature(SECRET, "1000", signature, body, now_ms=1_000 + 301_000)
    assert not verify_signature(SECRET, None, signature, body)
    assert not verify_signature(SECRET, "1000", "sha256=\u00e9", body, now_ms=1_000)
    assert not verify_signature(SECRET, "\u0661000", signature, body, now_ms=1_000)


@pytest.mark.parametrize(("status", "ok", "retryable"), [
    (200, True, False), (204, True, False), (400, False, False), (401, False, False),
    (404, False, False), (408, False, True), (429, False, True), (500, False, True),
    (503, False, True),
])
def test_classify_status(status: int, ok: bool, retryable: bool) -> None:
    got = classify_status(status, {})
    assert (got.ok, got.retryable, got.status) == (ok, retryable, status)


def test_retry_after_parsing() -> None:
    assert retry_after_ms("7") == 7_000
    assert retry_after_ms(None) is None
    assert retry_after_ms("soon") is None
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10_000
    assert classify_status(429, {"Retry-After": "2"}).retry_after_ms == 2_000


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, base_backoff_ms=100, max_backoff_ms=1_000)
    rng = random.Random(1)
    for retry in range(1, 9):
        ceiling = min(1_000, 100 * 2 ** (retry - 1))
        draws = [policy.backoff_ms(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling // 2  # it does spread over the range


async def test_run_attempts_stops_on_success_permanent_failure_or_budget() -> None:
    msg = message()
    outcomes = [Attempt(False, "HTTP 503", True), Attempt(False, "HTTP 503", True), Attempt(True)]
    sleep = FakeSleep()

    async def scripted() -> Attempt:
        return outcomes.pop(0)

    result = await run_attempts(msg, "crm", scripted, RetryPolicy(max_attempts=5), sleep=sleep,
                                rng=random.Random(11))  # seeded: full jitter may draw 0 ms (no wait)
    assert (result.ok, result.attempts, len(sleep.waits)) == (True, 3, 2)

    calls = 0

    async def permanent() -> Attempt:
        nonlocal calls
        calls += 1
        return Attempt(False, "HTTP 400", False, 400)

    result = await run_attempts(msg, "crm", permanent, RetryPolicy(max_attempts=5), sleep=sleep,
                                rng=random.Random(12))
    assert (result.ok, result.attempts, result.retryable, calls) == (False, 1, False, 1)

    async def always_busy() -> Attempt:
        return Attempt(False, "HTTP 503", True, 503)

    result = await run_attempts(msg, "crm", always_busy, RetryPolicy(max_attempts=4), sleep=sleep,
                                rng=random.Random(13))
    assert (result.ok, result.attempts, result.retryable, result.error) == \
        (False, 4, True, "HTTP 503")


async def test_retry_after_is_honoured_up_to_its_bound() -> None:
    msg = message()
    sleep = FakeSleep()
    outcomes = [Attempt(False, "HTTP 429", True, 429, 2_000), Attempt(True)]

    async def scripted() -> Attempt:
        return outcomes.pop(0)

    policy = RetryPolicy(max_attempts=3, retry_after_max_ms=5_000)
    result = await run_attempts(msg, "crm", scripted, policy, sleep=sleep, rng=random.Random(14))
    assert result.ok and sleep.waits == [2.0]

    async def far() -> Attempt:
        return Attempt(False, "HTTP 429", True, 429, 3_600_000)

    result = await run_attempts(msg, "crm", far, policy, sleep=sleep, rng=random.Random(15))
    assert (result.ok, result.attempts, result.retryable) == (False, 1, True)
    assert "exceeds the bound" in (result.error or "")


# -- integration: a real receiver on loopback ----------------------------------

@pytest.mark.integration
async def test_500_twice_then_200_is_one_delivery_in_three_signed_attempts() -> None:
    sleep = FakeSleep()
    async with running_receiver(Receiver(SECRET, script=[500, 500, 200])) as rx:
        channel = webhook(rx.url, sleep)
        msg = message(data={"sku": "p1", "nested": {"price": 9.5}})
        result = await channel.send(msg)
        await channel.close()
    assert (result.ok, result.attempts, result.status, result.error) == (True, 3, 200, None)
    assert len(rx.requests) == 3
    assert all(r.signature_ok for r in rx.requests)  # each attempt freshly signed
    assert len(sleep.waits) == 2 and all(0 <= w <= 0.05 for w in sleep.waits)
    last = rx.requests[-1]
    assert last.headers["Content-Type"] == "application/json"
    assert last.headers["X-Scenetrigger-Message-Id"] == "m-1"
    assert message_from_json(last.body) == msg
    assert orjson.loads(last.body)["data"] == {"sku": "p1", "nested": {"price": 9.5}}


@pytest.mark.integration
async def test_4xx_is_not_retried() -> None:
    async with running_receiver(Receiver(SECRET, default=422)) as rx:
        channel = webhook(rx.url)
        result = await channel.send(message())
        await channel.close()
    assert (result.ok, result.attempts, result.retryable, result.status) == (False, 1, False, 422)
    assert len(rx.requests) == 1


@pytest.mark.integration
async def test_429_waits_for_retry_after_then_delivers() -> None:
    sleep = FakeSleep()
    script = [(429, {"Retry-After": "1"}, b"slow down"), 200]
    async with running_receiver(Receiver(SECRET, script=script)) as rx:
        channel = webhook(rx.url, sleep)
        result = await channel.send(message())
        await channel.close()
    assert (result.ok, result.attempts) == (True, 2)
    assert sleep.waits == [1.0]


@pytest.mark.integration
async def test_timeouts_exhaust_the_attempts() -> None:
    async with running_receiver(Receiver(SECRET, default=HANG)) as rx:
        channel = webhook(rx.url, timeout_ms=150)
        result = await channel.send(message())
        await channel.close()
    assert (result.ok, result.attempts, result.retryable) == (False, 3, True)
    assert result.error == "timeout after 150 ms"
    assert len(rx.requests) == 3


@pytest.mark.integration
async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = webhook(f"http://127.0.0.1:{port}/hook")
    result = await channel.send(message())
    await channel.close()
    assert (result.ok, result.attempts, result.retryable) == (False, 3, True)
    assert "Connect" in (result.error or "")


@pytest.mark.integration
async def test_wrong_secret_is_detected_by_the_receiver() -> None:
    async with running_receiver(Receiver(b"receiver-secret")) as rx:
        channel = webhook(rx.url)
        await channel.send(message())
        await channel.close()
    assert len(rx.requests) == 1 and not rx.requests[0].signature_ok


@pytest.mark.integration
async def test_batches_group_concurrent_sends_and_share_the_result() -> None:
    sleep = FakeSleep()
    async with running_receiver(Receiver(SECRET, script=[500, 200])) as rx:
        channel = webhook(rx.url, sleep, batch_max=3, batch_linger_ms=1_000)
        results = await asyncio.gather(*(channel.send(message(n)) for n in range(3)))
        # A lone message leaves after the linger time, not when the batch fills.
        lone = await channel.send(message(9))
        await channel.close()
    assert [(r.ok, r.attempts, r.message_id) for r in results] == \
        [(True, 2, "m-0"), (True, 2, "m-1"), (True, 2, "m-2")]
    assert (lone.ok, lone.attempts) == (True, 1)
    assert len(rx.requests) == 3 and all(r.signature_ok for r in rx.requests)
    first = rx.requests[0]
    assert first.headers["X-Scenetrigger-Batch"] == "3"
    ids = [m["message_id"] for m in orjson.loads(first.body)["messages"]]
    assert ids == ["m-0", "m-1", "m-2"]
    assert [m["message_id"] for m in orjson.loads(rx.requests[2].body)["messages"]] == ["m-9"]


@pytest.mark.integration
async def test_close_flushes_a_waiting_batch() -> None:
    async with running_receiver(Receiver(SECRET)) as rx:
        channel = webhook(rx.url, batch_max=10, batch_linger_ms=60_000)
        pending = asyncio.ensure_future(channel.send(message()))
        await asyncio.sleep(0)
        await channel.close()
        result = await pending
    assert result.ok and len(rx.requests) == 1


# -- the contract's edges (each test kills mutants `make mutate` found alive) --------


def test_the_recency_window_is_five_minutes_inclusive() -> None:
    body = b"{}"
    stamp = 1_700_000_000_000
    sig = "sha256=" + hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, str(stamp), sig, body, now_ms=stamp + 300_000)
    assert verify_signature(SECRET, str(stamp), sig, body, now_ms=stamp - 300_000)
    assert not verify_signature(SECRET, str(stamp), sig, body, now_ms=stamp + 300_001)
    assert not verify_signature(SECRET, str(stamp), sig, body, now_ms=stamp - 300_001)


def test_only_2xx_is_delivered_and_the_error_names_the_status() -> None:
    assert classify_status(299, {}).ok
    for status in (300, 301, 304, 199):
        attempt = classify_status(status, {})
        assert (attempt.ok, attempt.error, attempt.retryable) == (False, f"HTTP {status}", False)
    assert classify_status(503, {}).error == "HTTP 503"


def test_a_retry_after_date_in_the_past_waits_nothing() -> None:
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412500.0) == 0


async def test_an_invalid_url_fails_for_good_without_retrying() -> None:
    channel = webhook("http://[::1", FakeSleep())
    result = await channel.send(message())
    await channel.close()
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert result.error is not None and result.error.startswith("invalid URL: ")


@pytest.mark.integration
async def test_idempotency_keys_and_custom_headers_reach_the_receiver() -> None:
    async with running_receiver(Receiver(SECRET)) as rx:
        single = webhook(rx.url, headers={"X-Shop": "s1"})
        assert (await single.send(message())).ok
        await single.close()
        batched = webhook(rx.url, batch_max=2, batch_linger_ms=1_000, headers={"X-Shop": "s1"})
        results = await asyncio.gather(batched.send(message(1)), batched.send(message(2)))
        await batched.close()
    assert all(r.ok for r in results)
    one, two = rx.requests
    assert one.headers["Idempotency-Key"] == "m-1" and one.headers["X-Shop"] == "s1"
    assert two.headers["X-Scenetrigger-Batch"] == "2" and two.headers["X-Shop"] == "s1"
    # A batch's key is the body's BLAKE2b-128 (docs/channels.md): the same batch
    # re-sent has the same key.
    assert two.headers["Idempotency-Key"] == hashlib.blake2b(two.body, digest_size=16).hexdigest()
    assert [m["message_id"] for m in orjson.loads(two.body)["messages"]] == ["m-1", "m-2"]
    assert all(r.signature_ok for r in rx.requests)


def test_a_missing_or_malformed_signature_or_timestamp_is_refused_without_raising() -> None:
    body = b"{}"
    sig = "sha256=" + hmac.new(SECRET, b"1000." + body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, "1000", sig, body, now_ms=1_000)  # the good one passes
    assert not verify_signature(SECRET, "1000", None, body, now_ms=1_000)
    for stamp in ("", "10a0", "-1000", " 1000", "1e3"):
        assert not verify_signature(SECRET, stamp, sig, body, now_ms=1_000), stamp


def test_the_channel_defaults_are_the_configs() -> None:
    # docs/channels.md: timeout 5s, batch_max 1, batch_linger 5ms; the pool of
    # config/channel_models.py (100); the documented header names.
    channel = WebhookChannel("crm", "http://127.0.0.1:9/hook", SECRET)
    assert (channel.timeout_ms, channel.max_connections, channel.batch_max,
            channel.batch_linger_ms) == (5_000, 100, 1, 5)
    assert (channel.signature_header, channel.timestamp_header) == (
        "X-Scenetrigger-Signature", "X-Scenetrigger-Timestamp")
    p = channel.policy  # docs/channels.md: retry {3, 100ms, 5s, retry_after_max 30s}
    assert (p.max_attempts, p.base_backoff_ms, p.max_backoff_ms, p.retry_after_max_ms) == (
        3, 100, 5_000, 30_000)
    # It retries itself: the delivery pipeline must not retry on top of it.
    assert WebhookChannel.retries_internally is True


def test_the_repr_shows_no_secret_and_the_session_is_not_a_parameter() -> None:
    channel = WebhookChannel("crm", "http://127.0.0.1:9/hook", SECRET)
    shown = repr(channel)
    assert "test-secret" not in shown and "_session" not in shown and "_batcher" not in shown
    assert shown.startswith("WebhookChannel(name='crm', url='http://127.0.0.1:9/hook'")
    for private in ("_session", "_batcher"):
        with pytest.raises(TypeError):
            WebhookChannel("crm", "http://127.0.0.1:9/hook", SECRET, **{private: None})  # type: ignore[arg-type]


async def test_the_pool_takes_its_limit_and_timeout_and_is_reused_until_closed() -> None:
    session = pooled_session(None, 7, 1_500)
    try:
        assert isinstance(session.connector, aiohttp.TCPConnector)
        assert (session.connector.limit, session.timeout.total) == (7, 1.5)
        assert pooled_session(session, 9, 10) is session  # open: the same one
    finally:
        await session.close()
    fresh = pooled_session(session, 9, 250)  # closed: a new one
    try:
        assert fresh is not session and not fresh.closed
        assert (fresh.connector.limit, fresh.timeout.total) == (9, 0.25)  # type: ignore[union-attr]
    finally:
        await fresh.close()


async def test_a_batch_that_cannot_be_encoded_fails_each_message_for_good() -> None:
    channel = webhook("http://127.0.0.1:9/hook", batch_max=2, batch_linger_ms=0)
    results = await asyncio.gather(channel.send(message(1, data={1: "a non-string key"})),
                                   channel.send(message(2)))
    await channel.close()
    assert [(r.ok, r.channel, r.message_id, r.attempts, r.retryable) for r in results] == [
        (False, "crm", "m-1", 1, False), (False, "crm", "m-2", 1, False)]
    assert all((r.error or "").startswith("batch failed: TypeError(") for r in results)


@pytest.mark.integration
async def test_close_closes_the_session_and_a_later_send_opens_a_new_one() -> None:
    async with running_receiver(Receiver(SECRET)) as rx:
        channel = webhook(rx.url)
        assert (await channel.send(message(1))).ok
        first = channel._session
        await channel.close()
        assert first is not None and first.closed and channel._session is None
        assert (await channel.send(message(2))).ok  # reopened, not the closed one
        await channel.close()
    assert [r.headers["Idempotency-Key"] for r in rx.requests] == ["m-1", "m-2"]


def test_a_transport_exception_reads_as_its_type_and_text() -> None:
    assert exception_attempt(ConnectionRefusedError(111, "Connection refused"), 150) == Attempt(
        False, "ConnectionRefusedError: [Errno 111] Connection refused", True)
    assert exception_attempt(TimeoutError(), 150) == Attempt(
        False, "timeout after 150 ms", True)


@pytest.mark.integration
async def test_without_a_sleep_or_rng_given_a_retry_waits_on_the_loop() -> None:
    # The defaults (asyncio.sleep, an unseeded Random) are what production runs;
    # Retry-After: 1 makes the wait certain (a jittered one may draw 0 ms).
    policy = RetryPolicy(max_attempts=2, base_backoff_ms=1, max_backoff_ms=1)
    script = [(429, {"Retry-After": "1"}, b"slow down"), 200]
    async with running_receiver(Receiver(SECRET, script=script)) as rx:
        channel = WebhookChannel("crm", rx.url, SECRET, policy=policy)
        result = await channel.send(message())
        await channel.close()
    assert (result.ok, result.attempts, len(rx.requests)) == (True, 2, 2)
