"""Identity in the engine host: an identify event merges the anonymous id's
state (profile, windows, armed timers) into the known user's, and the
anonymous id's later events are the known user's (docs/semantics-notes.md)."""

from __future__ import annotations

from triggers.events import Event, Trigger
from triggers.host import IDENTIFY, EngineHost
from triggers.predicates import parse_predicate
from triggers.scenes import AbsenceScene, RepeatScene, Scene

SCENES: list[Scene] = [
    RepeatScene("rv", parse_predicate({"type": "view"}), 3, 60_000, per="product_id"),
    AbsenceScene("abandon", parse_predicate({"type": "cart"}), 1_000,
                 cancel=parse_predicate({"type": "purchase"})),
]


def ev(user: str, ts: int, etype: str, **fields: object) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def fired(triggers: list[Trigger]) -> list[tuple[str, str, int]]:
    return [(t.scene, t.user_id, t.ts) for t in triggers]


def test_a_cart_armed_anonymously_fires_for_the_known_user() -> None:
    host = EngineHost(SCENES)
    assert host.take(ev("anon", 100, "cart")) == []
    assert host.take(ev("anon", 200, IDENTIFY, known_id="k")) == []
    assert host.engine.store.get("anon") is None
    state = host.engine.store.get("k")
    assert state is not None and state.timer["abandon"][0] == 1_100
    assert fired(host.advance(5_000)) == [("abandon", "k", 1_100)]  # not for "anon"
    assert host.advance(10_000) == []  # the anonymous id's stale heap entry never fires


def test_a_purchase_after_the_identify_cancels_the_carried_timer() -> None:
    host = EngineHost(SCENES)
    host.take(ev("anon", 100, "cart"))
    host.take(ev("anon", 200, IDENTIFY, known_id="k"))
    host.take(ev("anon", 300, "purchase"))  # the anonymous id again: now the known user's
    assert host.advance(5_000) == []


def test_the_later_deadline_is_kept_and_fires_once() -> None:
    host = EngineHost(SCENES)
    host.take(ev("k", 50, "cart"))  # the known user's own, earlier cart
    host.take(ev("anon", 400, "cart"))
    host.take(ev("anon", 500, IDENTIFY, known_id="k"))
    assert fired(host.advance(5_000)) == [("abandon", "k", 1_400)]


def test_later_events_count_for_the_known_user_with_the_merged_window() -> None:
    host = EngineHost(SCENES)
    host.take(ev("k", 10, "view", product_id="p"))
    host.take(ev("anon", 20, "view", product_id="p"))
    host.take(ev("anon", 30, IDENTIFY, known_id="k"))
    got = host.take(ev("anon", 40, "view", product_id="p"))
    assert [(t.scene, t.user_id, t.key) for t in got] == [("rv", "k", "p")]
    state = host.engine.store.get("k")
    assert state is not None and state.profile.views == 3
    assert host.counts.taken == 4 and host.counts.triggers["rv"] == 1


def test_an_identify_without_a_usable_known_id_changes_nothing() -> None:
    host = EngineHost(SCENES)
    host.take(ev("anon", 10, "cart"))
    for bad in ({}, {"known_id": ""}, {"known_id": "anon"}, {"known_id": 7},
                {"known_id": "k" * 1000}):
        host.take(ev("anon", 20, IDENTIFY, **bad))
    assert host.aliases == {} and host.engine.store.get("anon") is not None
    assert fired(host.advance(5_000)) == [("abandon", "anon", 1_010)]


def test_feed_applies_identify_like_take() -> None:
    host = EngineHost(SCENES)
    records = [(1, ev("anon", 100, "cart")), (2, ev("anon", 200, IDENTIFY, known_id="k")),
               (3, ev("other", 5_000, "view", product_id="x"))]
    out: list[Trigger] = []
    assert host.feed(records, out.append) == 3
    assert fired(out) == [("abandon", "k", 1_100)] and host.counts.taken == 3
