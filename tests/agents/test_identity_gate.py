"""The identify credential (docs/security.md, "Identity"): the collector lets
an identify in only from the backend's token or signed with it (403 and a
metric otherwise, nothing stored); produce dead-letters unsigned identify
lines unless the operator passes --allow-identify with the token set. The
signature is checked against the formula computed here with hmac."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter

import orjson
import pytest

from agents.identity_gate import REASON_IDENTIFY_UNAUTHORIZED, identify_refused
from agents.producer import REASON_RESERVED_TYPE, ProduceTopics, produce_records
from config.tokens import IDENTIFY_SIG_FIELD, IDENTIFY_TOKEN_ENV, identify_signature
from scenetrigger.cli.run.produce import identify_admission
from tests.agents.test_collector_unit import MemoryPublisher, _client
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import Event

PUBLIC = "collector-public-token"
BACKEND = "backend-identify-token"
TAKEOVER = {"user_id": "victim", "ts": 1_000, "type": "identify", "known_id": "attacker"}


def expected_sig(secret: str, user: str, known: str, ts: int) -> str:
    message = b"identify\n" + user.encode() + b"\n" + known.encode() + b"\n" + str(ts).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def as_event(fields: dict[str, object]) -> Event:
    return Event(str(fields["user_id"]), int(fields["ts"]), str(fields["type"]),  # type: ignore[call-overload]
                 fields)


def test_the_signature_is_the_documented_formula() -> None:
    assert identify_signature(BACKEND, "d-1", "u-42", 17) == expected_sig(BACKEND, "d-1",
                                                                           "u-42", 17)
    signed = {**TAKEOVER, IDENTIFY_SIG_FIELD: expected_sig(BACKEND, "victim", "attacker", 1_000)}
    assert identify_refused(as_event(signed), BACKEND, trusted=False) is None
    for bad in ({**signed, "known_id": "other"}, {**signed, "ts": 1_001},
                {**signed, IDENTIFY_SIG_FIELD: expected_sig("guess", "victim", "attacker", 1_000)},
                TAKEOVER):
        refused = identify_refused(as_event(bad), BACKEND, trusted=False)
        assert refused is not None and refused.reason == REASON_IDENTIFY_UNAUTHORIZED
    assert identify_refused(as_event(signed), None, trusted=False) is not None  # no secret: none
    assert identify_refused(as_event(TAKEOVER), None, trusted=True) is None
    view = {"user_id": "a", "ts": 1, "type": "view"}
    assert identify_refused(as_event(view), None, trusted=False) is None


async def test_the_collector_token_cannot_identify() -> None:
    publisher = MemoryPublisher()
    client = await _client(publisher, token=PUBLIC, identify_token=BACKEND)
    try:
        view = {"user_id": "victim", "ts": 1, "type": "view"}
        resp = await client.post("/events", data=orjson.dumps([view, TAKEOVER]),
                                 headers={"Authorization": f"Bearer {PUBLIC}"})
        assert resp.status == 403
        body = await resp.json()
        assert (body["reason"], body["items"]) == (REASON_IDENTIFY_UNAUTHORIZED, [1])
        assert publisher.messages == []  # nothing of the request is stored
        admin_merge = {**TAKEOVER, "type": "merge_users"}
        resp = await client.post("/events", data=orjson.dumps([admin_merge]),
                                 headers={"Authorization": f"Bearer {PUBLIC}"})
        assert resp.status == 400 and (await resp.json())["errors"][0]["reason"] == \
            REASON_RESERVED_TYPE
        # The backend's token: accepted; a signed identify relayed by a browser: accepted.
        resp = await client.post("/events", data=orjson.dumps([TAKEOVER]),
                                 headers={"Authorization": f"Bearer {BACKEND}"})
        assert resp.status == 202
        signed = {**TAKEOVER, "user_id": "d-9", "known_id": "u-9",
                  IDENTIFY_SIG_FIELD: expected_sig(BACKEND, "d-9", "u-9", 1_000)}
        resp = await client.post("/events", data=orjson.dumps([signed]),
                                 headers={"Authorization": f"Bearer {PUBLIC}"})
        assert resp.status == 202
        events = [orjson.loads(v) for topic, _k, v in publisher.messages if topic == "ev"]
        assert [(e["user_id"], e["known_id"]) for e in events] == [("victim", "attacker"),
                                                                   ("d-9", "u-9")]
        metrics = await (await client.get("/metrics")).text()
        assert "scenetrigger_collector_identify_refused_total 1.0" in metrics
        assert 'scenetrigger_collector_requests_total{status="403"} 1.0' in metrics
    finally:
        await client.close()


async def test_without_an_identify_token_no_identify_gets_in() -> None:
    publisher = MemoryPublisher()
    client = await _client(publisher)  # --no-auth, no backend token
    try:
        resp = await client.post("/events", data=orjson.dumps([TAKEOVER]))
        assert resp.status == 403 and publisher.messages == []
    finally:
        await client.close()


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> None:
        self.sent.append((topic, value))

    async def flush(self) -> None:
        return None


def _produce(admit: object) -> tuple[ListSink, Counter[str]]:
    sink = ListSink()
    records = [(1, as_event(TAKEOVER)), (2, as_event({"user_id": "a", "ts": 2, "type": "view"}))]
    _sent, _rejected, reasons = asyncio.run(produce_records(
        records, sink, partitions=1, admit=admit))  # type: ignore[arg-type]
    return sink, reasons


def test_produce_dead_letters_unsigned_identify_unless_the_operator_vouches() -> None:
    sink, reasons = _produce(identify_admission(False, {}))
    assert reasons == Counter({REASON_IDENTIFY_UNAUTHORIZED: 1})
    dead = [orjson.loads(v) for topic, v in sink.sent if topic == ProduceTopics().dead_letters]
    assert len(dead) == 1 and dead[0]["reason"] == REASON_IDENTIFY_UNAUTHORIZED
    sink, reasons = _produce(identify_admission(True, {IDENTIFY_TOKEN_ENV: BACKEND}))
    assert reasons == Counter()
    batches = [orjson.loads(v) for _topic, v in sink.sent]  # one record: a batch of both
    assert [e["type"] for batch in batches for e in batch] == ["identify", "view"]
    with pytest.raises(SceneTriggerError, match=IDENTIFY_TOKEN_ENV):
        identify_admission(True, {})
    assert issubclass(EventRejected, SceneTriggerError)


async def test_a_browser_cannot_record_deliveries_slot_impressions_or_opens() -> None:
    # What the review forged: a slot impression (a "delivered" with a slot
    # field) under another user's id with the public token, which that user's
    # purchase would then have converted in the slot's funnel row.
    from agents.identity_gate import REASON_SYSTEM_TYPE

    publisher = MemoryPublisher()
    client = await _client(publisher, token=PUBLIC, identify_token=BACKEND)
    forged = {"type": "delivered", "user_id": "bob", "ts": 1, "channel": "slot",
              "slot": "home", "variant": "hot_deals", "message_id": "slot:home:hot_deals:1:bob"}
    try:
        for kind in ("delivered", "failed", "opened", "clicked", "shared", "converted",
                     "bounced", "subscribed", "unsubscribed", "attributes", "catalog_change"):
            resp = await client.post("/events", data=orjson.dumps([{**forged, "type": kind}]),
                                     headers={"Authorization": f"Bearer {PUBLIC}"})
            body = await resp.json()
            assert (resp.status, body["reason"], body["items"]) == (403, REASON_SYSTEM_TYPE,
                                                                    [0]), kind
        assert publisher.messages == []
        # A share is the provider's report (docs/content.md), not the page's:
        # from a browser it counted in any user's funnel.
        view = {**forged, "type": "view"}
        resp = await client.post("/events", data=orjson.dumps([view]),
                                 headers={"Authorization": f"Bearer {PUBLIC}"})
        assert resp.status == 202
        resp = await client.post("/events", data=orjson.dumps([forged]),
                                 headers={"Authorization": f"Bearer {BACKEND}"})
        assert resp.status == 202  # the backend may (a shop's own delivery records)
    finally:
        await client.close()
