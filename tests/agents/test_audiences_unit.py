"""Audiences in one partition's host (a dict as the table): the changes wait
for the agent, a restarted host re-arms the next exit from the stored state
(and sends it at its exact time), an erasure ends every membership."""

from __future__ import annotations

from pathlib import Path

from agents.engine_host import PartitionHost
from agents.partition_store import PartitionStore
from config.loader import load_config_text
from tests.agents.test_app_unit import ev
from triggers.events import ERASE

CONFIG = """
scenes:
  carted: {kind: arrival, when: {type: cart}}
audiences:
  carted_not_bought: {fired: {scene: carted, within: 1h}, purchase: {none_within: 1h}}
  recent: {purchase: {within: 2h}}
"""
H = 3_600_000
T0 = 1_700_000_000_000


def host_on(table: dict[bytes, bytes]) -> PartitionHost:
    cfg = load_config_text(CONFIG)
    store = PartitionStore(table, lambda: list(table.items()))
    host = PartitionHost.build(0, store, cfg.scene_list(), cfg.engine.limits(),
                               cfg.engine.input_rules(), "event")
    host.host.audiences = cfg.audience_tracker(store)  # as agents.partitions builds it
    host.audience_names = tuple(cfg.audiences)  # as agents.partitions builds it
    host.rebuild()
    return host


def changes(host: PartitionHost) -> list[tuple[str, str, str, float, str]]:
    return [(c.audience, c.user_id, c.op, c.ts, c.reason) for c in host.audience_changes()]


def test_a_restarted_host_sends_the_exit_at_its_time() -> None:
    table: dict[bytes, bytes] = {}
    first = host_on(table)
    first.on_event(ev("u", T0, "cart", product_id="p"), 1, 0)
    assert changes(first) == [("carted_not_bought", "u", "enter", T0 / 1000, "condition")]
    first.store.flush()
    restarted = host_on(table)
    assert restarted.due(0) is None  # the event clock is at T0: nothing due yet
    restarted.on_event(ev("v", T0 + 2 * H, "page"), 2, 0)  # moves the partition clock
    assert changes(restarted) == [
        ("carted_not_bought", "u", "exit", (T0 + H) / 1000, "expired")]


def test_an_erasure_ends_every_membership() -> None:
    host = host_on({})
    host.on_event(ev("u", T0, "cart", product_id="p"), 1, 0)
    host.on_event(ev("u", T0 + 1000, "purchase", product_id="p"), 2, 0)
    assert changes(host) == [
        ("carted_not_bought", "u", "enter", T0 / 1000, "condition"),
        ("carted_not_bought", "u", "exit", (T0 + 1000) / 1000, "purchase"),
        ("recent", "u", "enter", (T0 + 1000) / 1000, "condition")]
    host.on_event(ev("u", T0 + 2000, ERASE), 3, 0)
    assert changes(host) == [("recent", "u", "exit", (T0 + 2000) / 1000, "erased")]
    # then every audience key of the user is deleted, the left one too (its
    # exit record names the user): the tombstones the agent sends after the exits
    assert host.audience_tombstones() == [b"carted_not_bought|u", b"recent|u"]
    assert host.audience_tombstones() == []
    host.on_event(ev("w", T0 + 3 * H, "page"), 4, 0)
    assert changes(host) == []  # the erased user's re-evaluation is gone with its state


def test_a_partition_built_after_a_reload_tombstones_the_removed_audiences_too(
        tmp_path: Path) -> None:
    # A partition first used after a reload that removed "recent" still holds
    # members' recent|<user> keys on PREFIX.audiences (written before the
    # reload, by this worker or the partition's previous owner).
    from agents.app import SceneWorker
    from tests.agents.test_app_unit import settings

    worker = SceneWorker(settings(tmp_path, store="memory", config=load_config_text(CONFIG)))
    worker.host(0)
    worker.reconfigure(load_config_text(CONFIG.replace(
        "  recent: {purchase: {within: 2h}}\n", "")))
    for partition in (0, 2):  # 0 built before the reload, 2 after it
        host = worker.host(partition)
        host.on_event(ev("u", T0, ERASE), 1, 0)
        assert host.audience_tombstones() == [b"carted_not_bought|u", b"recent|u"], partition
