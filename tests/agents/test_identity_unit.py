"""Identity and erasure in one partition's host (a dict as the table):
identify forgets the anonymous state, keeps the alias across a restart and
sends the merge; the known partition folds it in; erase removes both."""

from __future__ import annotations

import orjson

from agents.engine_host import PartitionHost
from agents.partition_store import PartitionStore
from agents.stored_state import alias_key
from config.loader import load_config_text
from tests.agents.test_app_unit import ev
from triggers.events import Event
from triggers.host import IDENTIFY
from triggers.merge import merge_states
from triggers.state import UserState

CONFIG = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 3, within: 1h}
  abandon: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
"""


def host_on(table: dict[bytes, bytes]) -> PartitionHost:
    cfg = load_config_text(CONFIG)
    store = PartitionStore(table, lambda: list(table.items()))
    host = PartitionHost.build(0, store, cfg.scene_list(), cfg.engine.limits(),
                               cfg.engine.input_rules(), "event")
    host.rebuild()
    return host


def as_event(value: bytes) -> Event:
    fields = orjson.loads(value)
    return Event(fields["user_id"], fields["ts"], fields["type"], fields)


def test_identify_then_merge_then_forwarded_events_fire_for_the_known_user() -> None:
    anon_table: dict[bytes, bytes] = {}
    anon_side = host_on(anon_table)
    for n in range(2):
        assert anon_side.on_event(ev("a", 1000 + n, "view", product_id="p"), 10 + n, 0) == []
    anon_side.on_event(ev("a", 1002, IDENTIFY, known_id="k"), 12, 0)
    anon_side.store.flush()
    assert b"a" not in anon_table and anon_table[alias_key("a")] == b"k"
    (key, merge), = anon_side.outbox
    anon_side.outbox.clear()
    # A restarted anonymous partition still re-addresses the id's events.
    restarted = host_on(anon_table)
    assert restarted.on_event(ev("a", 1003, "view", product_id="p"), 13, 0) == []
    (key2, forwarded), = restarted.outbox
    assert key == key2 == "k" and orjson.loads(forwarded)["anonymous_id"] == "a"

    known_side = host_on({})
    assert known_side.on_event(ev("k", 900, "view", product_id="q"), 1, 0) == []
    assert known_side.on_event(as_event(merge), 2, 0) == []
    fired = known_side.on_event(as_event(forwarded), 3, 0)
    assert [(t.scene, t.user_id, t.key) for t in fired or []] == [("rv", "k", "p")]
    profile = known_side.store.get("k")
    assert profile is not None and profile.profile.views == 4
    # Erasing the known user erases the anonymous ids merged into it, where they live.
    known_side.on_event(ev("k", 2000, "erase"), 4, 0)
    (erase_key, erase), = known_side.outbox
    assert erase_key == "a" and orjson.loads(erase) == {"user_id": "a", "ts": 2000,
                                                         "type": "erase"}
    known_side.outbox.clear()

    # Another login on the same device: the id now stands for the new user (nothing
    # of the first user moves: the anonymous id's history went to "k" already).
    restarted.outbox.clear()
    restarted.on_event(ev("a", 1003, IDENTIFY, known_id="k2"), 14, 0)
    restarted.on_event(ev("a", 1004, "view", product_id="p"), 15, 0)
    # The merge carries no state (the id has none left) but makes k2 a known user there.
    assert [(key, orjson.loads(value)["type"]) for key, value in restarted.outbox] == [
        ("k2", "merge"), ("k2", "view")]
    assert orjson.loads(restarted.outbox[0][1])["state"] is None
    restarted.outbox.clear()
    # Erasing the anonymous id drops its alias too.
    restarted.on_event(ev("a", 1005, "erase"), 16, 0)
    restarted.store.flush()
    assert alias_key("a") not in anon_table


def test_a_timer_armed_anonymously_moves_to_the_known_users_partition() -> None:
    """The worker's two halves are the host's (detach, absorb): the cart timer
    the anonymous id armed is re-armed on the known user's partition, survives
    its restart there, and fires for the known user."""
    anon_table: dict[bytes, bytes] = {}
    anon_side = host_on(anon_table)
    anon_side.on_event(ev("a", 1000, "cart"), 10, 0)
    anon_side.on_event(ev("a", 2000, IDENTIFY, known_id="k"), 11, 0)
    anon_side.store.flush()
    (_, merge), = anon_side.outbox
    known_table: dict[bytes, bytes] = {}
    known_side = host_on(known_table)
    assert known_side.on_event(as_event(merge), 1, 0) == []
    known_side.store.flush()
    restarted = host_on(known_table)  # the timer is in the stored state, not only the heap
    later = ev("k2", 1000 + 31 * 60_000, "view", product_id="x")
    got = (restarted.on_event(later, 2, 0) or []) + restarted.on_tick(0)
    assert [(t.scene, t.user_id) for t in got] == [("abandon", "k")]
    got = (anon_side.on_event(later._replace(user_id="z"), 12, 0) or []) + anon_side.on_tick(0)
    assert got == []  # nothing fires for the anonymous id


def test_a_crash_on_the_anonymous_side_does_not_count_it_twice() -> None:
    """The merge and the re-addressed events were sent and applied on the known
    user's partition, then the anonymous partition died before settling: its
    restart sends them again, and the known side applies none of them again."""
    anon_table: dict[bytes, bytes] = {}
    anon_side = host_on(anon_table)
    anon_side.on_event(ev("a", 1000, "view", product_id="p"), 10, 0)
    anon_side.store.flush()  # settled
    unsettled = [(ev("a", 1001, IDENTIFY, known_id="k"), 11),
                 (ev("a", 1002, "view", product_id="p"), 12)]
    for event, at in unsettled:
        anon_side.on_event(event, at, 0)
    sent = [as_event(value) for _, value in anon_side.outbox]
    known_table: dict[bytes, bytes] = {}
    known_side = host_on(known_table)
    for n, event in enumerate(sent, 1):
        assert known_side.on_event(event, n, 0) == []
    restarted = host_on(anon_table)  # the crash: batch 11..12 never settled
    for event, at in unsettled:
        restarted.on_event(event, at, 0)
    resent = [as_event(value) for _, value in restarted.outbox]
    assert [e.type for e in resent] == ["merge", "view"]
    for n, event in enumerate(resent, 10):
        assert known_side.on_event(event, n, 0) is None  # a duplicate
    state = known_side.store.get("k")
    assert state is not None and state.profile.views == 2
    # The guard survives a restart of the known side; what comes next counts:
    # the third view fires (it would have fired on the resent one if counted twice).
    known_side.store.flush()
    known_again = host_on(known_table)
    assert known_again.on_event(resent[-1], 30, 0) is None
    nxt = as_event(orjson.dumps({**sent[-1].fields, "ts": 1003, "anonymous_position": 13}))
    fired = known_again.on_event(nxt, 31, 0) or []
    assert [(t.scene, t.user_id) for t in fired] == [("rv", "k")]


def test_merge_keeps_the_newer_fire_and_the_newest_entries() -> None:
    known, anon = UserState(), UserState()
    for state, ts, product in ((known, 100, "k-product"), (anon, 200, "a-product")):
        state.profile.update(Event("x", ts, "view", {"product_id": product, "tz": "Asia/Shanghai"}))
        state.max_ts = ts
    known.fires = {"promo": {"/promo": 50}}
    anon.fires = {"promo": {"/promo": 150, "/sale": 10}}
    merged = merge_states(known, anon, max_entries=2)
    assert merged.fires == {"promo": {"/promo": 150, "/sale": 10}}
    assert merged.profile.views == 2 and merged.profile.last_product == "a-product"
    assert (merged.profile.first_ts, merged.profile.last_ts, merged.max_ts) == (100, 200, 200)
    assert known.profile.views == 1  # inputs untouched


def test_clients_cannot_send_erase_or_merge_events() -> None:
    import pytest

    from agents.producer import REASON_RESERVED_TYPE, checked_event_value
    from triggers.errors import EventRejected

    for kind in ("erase", "merge"):
        with pytest.raises(EventRejected) as refused:
            checked_event_value(ev("victim", 1, kind))
        assert refused.value.reason == REASON_RESERVED_TYPE
    assert checked_event_value(ev("a", 1, IDENTIFY, known_id="k"))


def test_clients_cannot_send_a_forwarded_position() -> None:
    import pytest

    from agents.engine_host import ORIGIN
    from agents.producer import REASON_RESERVED_FIELD, checked_event_value
    from triggers.errors import EventRejected

    # docs/security.md names each: the position, the hops and the ids a
    # returned record passed (from a client those would undo a true merge).
    for field, value in ((ORIGIN, 1 << 40), ("identity_hops", 0), ("identity_passed", ["a"])):
        with pytest.raises(EventRejected) as refused:
            checked_event_value(ev("k", 1, "view", anonymous_id="a", **{field: value}))
        assert refused.value.reason == REASON_RESERVED_FIELD, field
    assert checked_event_value(ev("k", 1, "view", anonymous_id="a"))  # an attribute, harmless


def test_the_loop_pair_ends_in_a_bounded_number_of_records() -> None:
    """The issue's loop: loopA -> loopB, then loopB -> loopA. Sent one after
    the other, the second is refused (loopB is a known user by then). Sent
    together (neither merge has landed when the other identify is taken),
    each merge lands on an id that stands for its sender and goes back, each
    side undoes its half (the id keeps its own state), and nothing is
    forwarded again."""
    from collections import Counter

    from tests.agents.identity_cluster import Cluster
    from triggers.merge import REASON_CYCLE, REASON_KNOWN_USER

    one_after = Cluster(3)
    one_after.send({"user_id": "loopA", "ts": 1, "type": "view", "product_id": "p"})
    one_after.send({"user_id": "loopA", "ts": 2, "type": IDENTIFY, "known_id": "loopB"})
    one_after.drain()
    one_after.send({"user_id": "loopB", "ts": 3, "type": IDENTIFY, "known_id": "loopA"})
    one_after.drain()
    assert one_after.rejected == Counter({REASON_KNOWN_USER: 1})

    together = Cluster(3)
    assert together.partition("loopA") != together.partition("loopB")
    together.send({"user_id": "loopA", "ts": 1, "type": "view", "product_id": "p"})
    together.send({"user_id": "loopB", "ts": 1, "type": "view", "product_id": "q"})
    together.send({"user_id": "loopA", "ts": 2, "type": IDENTIFY, "known_id": "loopB"})
    together.send({"user_id": "loopB", "ts": 3, "type": IDENTIFY, "known_id": "loopA"})
    for _ in range(4):  # both identifies taken before any merge lands
        together.step(together.order[0])
    steps = together.drain(limit=20)
    assert steps <= 6, steps
    assert together.rejected == Counter({REASON_CYCLE: 2})
    assert [host.store.aliases for host in together.hosts] == [{}, {}, {}]
    for user, product in (("loopA", "p"), ("loopB", "q")):
        state = together.hosts[together.partition(user)].store.get(user)
        assert state is not None and list(state.windows["rv"]) == [product]
    for n in range(50):  # later events of both ids: each costs at most one forward
        together.send({"user_id": "loopA", "ts": 10 + n, "type": "view", "product_id": "p"})
        together.send({"user_id": "loopB", "ts": 10 + n, "type": "view", "product_id": "q"})
    before = together.forwarded
    together.drain(limit=200)
    assert together.forwarded - before == 0  # each id is itself again
    assert {(t.scene, t.user_id) for t in together.triggers} == {("rv", "loopA"), ("rv", "loopB")}
