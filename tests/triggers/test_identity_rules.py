"""Who may merge (triggers/merge.py identify_refusal, docs/security.md
"Identity"): known_id is resolved through the aliases, a known user is never
re-pointed by an identify, a cycle is refused; an admin merge moves a known
user and leaves no chain. The rule as the engine host applies it."""

from __future__ import annotations

from tests.triggers.test_host_identity import SCENES, ev, fired
from triggers.errors import EventRejected
from triggers.host import IDENTIFY, EngineHost
from triggers.merge import (
    ADMIN_MERGE,
    REASON_CYCLE,
    REASON_KNOWN_USER,
    REASON_NO_KNOWN_ID,
    identify_refusal,
)


def test_the_rule_alone() -> None:
    aliases = {"a": "k"}
    merged = {"k": {"a": -1}}
    assert identify_refusal("b", "a", aliases, merged) is None  # resolved to k: no refusal
    assert identify_refusal("k", "b", aliases, merged)[0] == REASON_KNOWN_USER  # type: ignore[index]
    assert identify_refusal("k", "b", aliases, merged, admin=True) is None
    assert identify_refusal("k", "a", aliases, merged, admin=True)[0] == REASON_CYCLE  # type: ignore[index]
    assert identify_refusal("x", "y", {"y": "x"}, {})[0] == REASON_CYCLE  # type: ignore[index]


def test_known_id_is_resolved_through_the_aliases_no_chain() -> None:
    host = EngineHost(SCENES)
    host.take(ev("a", 10, IDENTIFY, known_id="k"))
    host.take(ev("b", 20, "view", product_id="p"))
    host.take(ev("b", 30, IDENTIFY, known_id="a"))  # "a" stands for "k"
    assert host.aliases == {"a": "k", "b": "k"}
    assert set(host.merged["k"]) == {"a", "b"}
    state = host.engine.store.get("k")
    assert state is not None and state.profile.views == 1


def test_a_known_user_is_never_re_pointed_by_an_identify() -> None:
    """The issue's takeover: victim's browsing merged into an attacker's id."""
    host = EngineHost(SCENES)
    host.take(ev("device", 10, IDENTIFY, known_id="victim"))  # victim logged in once
    host.take(ev("victim", 20, "cart"))
    assert host.take(ev("victim", 30, IDENTIFY, known_id="attacker")) == []
    (event, refused), = host.take_identity_refusals()
    assert (event.user_id, refused.reason) == ("victim", REASON_KNOWN_USER)
    assert host.counts.rejected[REASON_KNOWN_USER] == 1
    assert "victim" not in host.aliases and host.engine.store.get("attacker") is None
    assert fired(host.advance(5_000)) == [("abandon", "victim", 1_020)]


def test_the_loop_pair_is_refused_and_nothing_moves() -> None:
    host = EngineHost(SCENES)
    host.take(ev("loopA", 10, "view", product_id="p"))
    host.take(ev("loopA", 20, IDENTIFY, known_id="loopB"))
    host.take(ev("loopB", 30, IDENTIFY, known_id="loopA"))
    (_, refused), = host.take_identity_refusals()
    assert refused.reason == REASON_KNOWN_USER  # loopB is known: checked first
    assert host.aliases == {"loopA": "loopB"}
    # Every alias target is a known user, so an identify can close no cycle:
    # only an admin merge could (refused below).
    assert host.merged.keys() == {"loopB"}


def test_an_unusable_known_id_is_a_counted_reject() -> None:
    host = EngineHost(SCENES)
    host.take(ev("a", 10, IDENTIFY))
    host.take(ev("a", 20, IDENTIFY, known_id="a"))
    assert host.counts.rejected[REASON_NO_KNOWN_ID] == 2 and host.counts.taken == 0


def test_feed_reports_a_refused_statement_with_its_line() -> None:
    host = EngineHost(SCENES)
    got: list[tuple[int, str]] = []
    records: list[tuple[int, object]] = [
        (1, ev("a", 10, IDENTIFY, known_id="k")), (2, ev("k", 20, IDENTIFY, known_id="z"))]
    host.feed(records, lambda _t: None,  # type: ignore[arg-type]
              lambda n, exc: got.append((n, exc.reason)))
    assert got == [(2, REASON_KNOWN_USER)]


def test_an_admin_merge_moves_a_known_user_and_repoints_its_ids() -> None:
    host = EngineHost(SCENES)
    host.take(ev("d1", 10, IDENTIFY, known_id="old"))
    host.take(ev("old", 20, "view", product_id="p"))
    host.take(ev("old", 30, ADMIN_MERGE, known_id="new"))
    assert host.take_identity_refusals() == []
    assert host.aliases == {"d1": "new", "old": "new"}  # no chain d1 -> old -> new
    assert set(host.merged) == {"new"} and set(host.merged["new"]) == {"d1", "old"}
    state = host.engine.store.get("new")
    assert state is not None and state.profile.views == 1
    # Merging back would close a cycle: refused.
    host.take(ev("new", 40, ADMIN_MERGE, known_id="old"))
    (_, refused), = host.take_identity_refusals()
    assert refused.reason == REASON_CYCLE


def test_refusals_are_exceptions_of_the_one_tree() -> None:
    host = EngineHost(SCENES)
    host.take(ev("a", 10, IDENTIFY, known_id="k"))
    try:
        host.identity_target(ev("k", 20, IDENTIFY, known_id="z"))
    except EventRejected as exc:
        assert exc.reason == REASON_KNOWN_USER
    else:
        raise AssertionError("a known user was re-pointed")
