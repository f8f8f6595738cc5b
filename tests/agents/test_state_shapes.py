"""A worker restarted with a changed config: each partition keeps the shapes
of the scenes its state was written under (a reserved table key), and a host
built from recovered state under other shapes drops what a hot reload would
have dropped. Dict tables and the Faust memory store, no Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.app import SceneWorker
from agents.engine_host import PartitionHost
from agents.partition_store import PartitionStore
from agents.stored_state import is_reserved, shapes_key, unpack_state
from config.loader import load_config_text
from tests.agents.test_app_unit import CONFIG, ev, settings
from triggers.reshape import (
    Reset,
    decode_shapes,
    encode_shapes,
    resets,
    shape_resets,
    shapes,
)
from triggers.state import UserState

# Config B: rv's windows are keyed by category instead of product_id.
PER_CATEGORY = CONFIG.replace("per: product_id", "per: category")


class LoggedTable(dict[bytes, bytes]):
    """A dict table that remembers the order of writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)


def host_on(table: dict[bytes, bytes], text: str = CONFIG, partition: int = 0,
            event_clock: bool = True) -> PartitionHost:
    """A host built from ``table`` as after recovery, under config ``text``."""
    cfg = load_config_text(text)
    store = PartitionStore(table, lambda: list(table.items()))
    host = PartitionHost.build(partition, store, cfg.scene_list(), cfg.engine.limits(),
                               cfg.engine.input_rules(), "event" if event_clock else "wall")
    host.rebuild()
    return host


def one_view_each(host: PartitionHost, users: int = 3) -> None:
    """One view of product "x" in category "x": under either `per` the same
    key, so old-shape state read as new would count it."""
    for n in range(users):
        host.on_event(ev(f"u{n}", 1000, "view", product_id="x", category="x"), 10 + n, 0)
    host.store.flush()


def test_restart_with_a_changed_per_resets_the_old_windows() -> None:
    table: dict[bytes, bytes] = {}
    one_view_each(host_on(table))
    assert decode_shapes(table[shapes_key(0)]) == shapes(load_config_text(CONFIG).scene_list())

    restarted = host_on(table, PER_CATEGORY)
    assert restarted.reshaped == 3
    # count 2: the view before the restart no longer counts under the new `per`
    assert restarted.on_event(ev("u0", 2000, "view", product_id="y", category="x"), 20, 0) == []
    restarted.store.flush()
    for n in range(3):  # reset and written back with each user's applied offset
        offset, raw = unpack_state(table[f"u{n}".encode()])
        assert offset == (20 if n == 0 else 10 + n)
        assert ("rv" in UserState.decode(raw).windows) == (n == 0)
    assert table[shapes_key(0)] == encode_shapes(
        shapes(load_config_text(PER_CATEGORY).scene_list()))
    # from here on the new shape is the stored one: a further restart keeps the state
    again = host_on(table, PER_CATEGORY)
    assert again.reshaped == 0
    assert again.on_event(ev("u0", 3000, "view", product_id="z", category="x"), 21, 0)


def test_without_the_shapes_the_old_window_would_have_counted() -> None:
    """The same run with the shapes key removed (state from before shapes
    were kept): the state is read as it is, and the old view counts."""
    table: dict[bytes, bytes] = {}
    one_view_each(host_on(table))
    del table[shapes_key(0)]
    legacy = host_on(table, PER_CATEGORY)
    assert legacy.reshaped == 0
    assert legacy.on_event(ev("u0", 2000, "view", product_id="y", category="x"), 20, 0)


def test_the_shapes_are_written_after_the_states() -> None:
    table = LoggedTable()
    one_view_each(host_on(table))
    assert table.writes == [b"u0", b"u1", b"u2", shapes_key(0)]
    table.writes.clear()
    restarted = host_on(table, PER_CATEGORY)
    assert table.writes == []  # staged, written by the agent's next settle
    assert restarted.store.flush() == 3
    assert table.writes == [b"u0", b"u1", b"u2", shapes_key(0)]


def test_a_crash_before_the_settle_reshapes_again_at_the_next_start() -> None:
    table: dict[bytes, bytes] = {}
    one_view_each(host_on(table))
    host_on(table, PER_CATEGORY)  # reshaped, never flushed: the process died
    restarted = host_on(table, PER_CATEGORY)
    assert restarted.reshaped == 3
    assert restarted.on_event(ev("u0", 2000, "view", product_id="y", category="x"), 20, 0) == []


def test_an_unchanged_config_writes_nothing_and_keeps_everything() -> None:
    table = LoggedTable()
    one_view_each(host_on(table))
    table.writes.clear()
    # count, within and an arrival's `when` are not part of the shape
    same_shape = CONFIG.replace("count: 2", "count: 3").replace(
        "arrive:\n    kind: arrival\n    when: {type: cart}",
        "arrive:\n    kind: arrival\n    when: {type: purchase}")
    assert same_shape.count("count: 3") == 1 and "{type: purchase}" in same_shape
    restarted = host_on(table, same_shape)
    assert restarted.reshaped == 0
    assert restarted.store.flush() == 0 and table.writes == []
    assert restarted.on_event(ev("u0", 2000, "view", product_id="x"), 20, 0) == []
    assert restarted.on_event(ev("u0", 2001, "view", product_id="x"), 21, 0)


def test_restart_with_a_changed_absence_start_disarms_the_timer() -> None:
    table: dict[bytes, bytes] = {}
    host = host_on(table)
    host.on_event(ev("u1", 1000, "cart"), 0, 0)
    host.store.flush()
    assert [t.scene for t in host_on(table).engine.pending_timers()] == ["abandon"]
    moved = host_on(table, CONFIG.replace("start: {type: cart}", "start: {type: wishlist}"))
    assert moved.reshaped == 1
    assert list(moved.engine.pending_timers()) == []
    assert moved.on_tick(10_000) == []
    assert moved.on_event(ev("u2", 10_000, "view", product_id="y"), 1, 0) == []


def test_scans_skip_the_reserved_key() -> None:
    table: dict[bytes, bytes] = {}
    one_view_each(host_on(table))
    assert any(is_reserved(k) for k in table)
    host = host_on(table)
    assert host.store.users == 3
    assert sorted(user for user, _ in host.store.items()) == ["u0", "u1", "u2"]
    assert host.engine.rebuild_timers() == 0
    assert not any(is_reserved(f"u{n}\u00ff".encode()) for n in range(3))  # UTF-8: no 0xFF


def test_each_partition_has_its_own_key() -> None:
    table: dict[bytes, bytes] = {}
    for partition in (0, 1):
        host = host_on(table, partition=partition)
        host.on_event(ev(f"p{partition}", 1000, "view", product_id="x"), 0, 0)
        host.store.flush()
    assert {k for k in table if is_reserved(k)} == {shapes_key(0), shapes_key(1)}


def test_hot_reload_stages_the_new_shapes_with_the_reshaped_states() -> None:
    table = LoggedTable()
    host = host_on(table)
    one_view_each(host)
    table.writes.clear()
    new = load_config_text(PER_CATEGORY)
    host.reconfigure(new.scene_list(), new.engine.limits())
    assert host.store.flush() == 3
    assert table.writes[-1] == shapes_key(0)
    assert decode_shapes(table[shapes_key(0)]) == shapes(new.scene_list())
    assert host_on(table, PER_CATEGORY).reshaped == 0


def test_unreadable_shapes_keep_the_state() -> None:
    table: dict[bytes, bytes] = {}
    one_view_each(host_on(table))
    table[shapes_key(0)] = b"[99, {}]"
    host = host_on(table, PER_CATEGORY)
    assert host.reshaped == 0
    host.on_event(ev("u9", 1000, "page"), 30, 0)
    host.store.flush()
    assert table[shapes_key(0)] == encode_shapes(
        shapes(load_config_text(PER_CATEGORY).scene_list()))


def test_shape_resets_equal_the_hot_reload_rule_through_the_bytes() -> None:
    """Restart and hot reload share one rule: the plan from stored bytes is
    the plan from the scenes."""
    old = load_config_text(CONFIG).scene_list()
    edits = {
        "per": PER_CATEGORY,
        "when": CONFIG.replace("when: {type: view}", "when: {type: view, source: search}"),
        "start": CONFIG.replace("start: {type: cart}", "start: {type: wishlist}"),
        "kind": CONFIG.replace("arrive:\n    kind: arrival\n    when: {type: cart}",
                               "arrive:\n    kind: absence\n    start: {type: cart}\n"
                               "    after: 1s"),
        "removed": CONFIG.replace("abandon:", "renamed:"),
        "when_more": CONFIG.replace("when: {type: view}", "when: {type: view, page: /p}"),
        "count": CONFIG.replace("count: 2", "count: 5"),
    }
    for edit, text in edits.items():
        assert text != CONFIG, edit
        new = load_config_text(text).scene_list()
        stored = decode_shapes(encode_shapes(shapes(old)))
        assert shape_resets(stored, shapes(new)) == resets(old, new), edit
    assert resets(old, load_config_text(PER_CATEGORY).scene_list()) == {
        "rv": Reset(everything=True)}
    # the order a predicate's fields are written in is not a change
    a = load_config_text(CONFIG.replace("when: {type: view}", "when: {type: view, page: /p}"))
    b = load_config_text(CONFIG.replace("when: {type: view}", "when: {page: /p, type: view}"))
    assert encode_shapes(shapes(a.scene_list())) == encode_shapes(shapes(b.scene_list()))


def test_worker_builds_a_reshaped_host_from_the_recovered_memory_store(
        tmp_path: Path) -> None:
    """The worker's own path: faust_compat.partition_items over Faust's memory
    store, filled as recovery fills it (data + each key's partition)."""
    written: dict[bytes, bytes] = {}
    one_view_each(host_on(written, partition=1))
    worker = SceneWorker(settings(tmp_path, store="memory",
                                  config=load_config_text(PER_CATEGORY)))
    recovered: Any = worker.table.data
    for key, value in written.items():
        recovered.data[key] = value
        recovered._key_partition[key] = 1
    assert worker.host(0).reshaped == 0 and worker.host(0).store.users == 0
    host = worker.host(1)
    assert (host.reshaped, host.store.users) == (3, 3)
    assert host.on_event(ev("u0", 2000, "view", product_id="y", category="x"), 20, 0) == []
