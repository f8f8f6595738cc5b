"""The live profile consumer's batch logic without Kafka or Redis
(channels/audience/live_profile_feed.py): per user only the batch's last
record is written, a tombstone deletes before a later put, an unusable record
is dead-lettered with its reason and the rest applied, offsets are committed
past the batch."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from channels.audience.live_profile import encode_live_profile
from channels.audience.live_profile_feed import ProfileFeed, decode
from triggers.events import Event
from triggers.profile import Profile
from triggers.wire import BAD_FIELD, INVALID_JSON, MalformedRecord

Record = namedtuple("Record", "topic partition offset key value")


def profile(views: int) -> Profile:
    p = Profile()
    for i in range(views):
        p.update(Event("u", 1_000 + i, "view", {"type": "view", "product_id": f"p{i}"}))
    return p


class FakeStore:
    """LiveProfileStore's calls, in order; newer wins as the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []
        self.at: dict[str, int] = {}

    async def put(self, user_id: str, p: Profile, updated_ms: int) -> bool:
        self.calls.append(("put", user_id, updated_ms))
        if self.at.get(user_id, -1) > updated_ms:
            return False
        self.at[user_id] = updated_ms
        return True

    async def delete(self, user_id: str) -> None:
        self.calls.append(("delete", user_id, None))
        self.at.pop(user_id, None)


class FakeDeadLetters:
    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes | None, str]] = []

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str:
        self.kept.append((source, raw, reason))
        return "1-0"


class FakeConsumer:
    def __init__(self) -> None:
        self.committed: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.committed.append(offsets)


def test_decode_refuses_what_cannot_be_used() -> None:
    assert decode(b"ann", None) == ("ann", None)
    user, live = decode(b"ann", encode_live_profile(profile(2), 7))
    assert user == "ann" and live is not None and live.profile.views == 2
    for key, value, reason in ((None, b"[1, []]", BAD_FIELD), (b"", b"[1, []]", BAD_FIELD),
                               (b"\xff", b"[1, []]", BAD_FIELD), (b"ann", b"{", INVALID_JSON),
                               (b"ann", b'["1", []]', BAD_FIELD)):
        with pytest.raises(MalformedRecord) as caught:
            decode(key, value)
        assert caught.value.reason == reason


async def test_a_batch_writes_each_users_last_state_and_buries_the_bad() -> None:
    store, letters, consumer = FakeStore(), FakeDeadLetters(), FakeConsumer()
    registry = CollectorRegistry()
    feed = ProfileFeed(store, consumer, registry=registry,  # type: ignore[arg-type]
                       dead_letter=letters)
    store.at["cy"] = 50  # a newer profile already stored
    batch = {
        "tp0": [Record("t", 0, 10, b"ann", encode_live_profile(profile(1), 1)),
                Record("t", 0, 11, b"ann", encode_live_profile(profile(2), 2)),
                Record("t", 0, 12, b"bob", encode_live_profile(profile(1), 3)),
                Record("t", 0, 13, b"bob", None),
                Record("t", 0, 14, b"bob", encode_live_profile(profile(3), 4))],
        "tp1": [Record("t", 1, 5, b"cy", encode_live_profile(profile(1), 9)),
                Record("t", 1, 6, b"dan", b"{oops"),
                Record("t", 1, 7, b"eve", None)],
    }
    await feed.handle_batch(batch)
    assert sorted(store.calls) == sorted([
        ("put", "ann", 2), ("delete", "bob", None), ("put", "bob", 4), ("put", "cy", 9),
        ("delete", "eve", None)])
    assert store.calls.index(("delete", "bob", None)) < store.calls.index(("put", "bob", 4))
    assert letters.kept == [("t/1/6", b"{oops", INVALID_JSON)]
    assert consumer.committed == [{"tp0": 15, "tp1": 8}]
    assert feed.counts.results == {"stored": 2, "kept_newer": 1, "superseded": 2,
                                   "deleted": 2, "erased": 0, "malformed": 1}
    assert feed.counts.malformed == {INVALID_JSON: 1}
    assert registry.get_sample_value("scenetrigger_profiles_malformed_total",
                                     {"reason": INVALID_JSON}) == 1
    assert registry.get_sample_value("scenetrigger_profiles_records_total",
                                     {"result": "superseded"}) == 2
