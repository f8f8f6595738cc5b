"""Hot reload keeps the running config on a bad edit and swaps on a good one."""

from __future__ import annotations

from pathlib import Path

from config.loader import DEFAULT_CONFIG_PATH, load_config_text
from config.models import AppConfig
from config.reload import ConfigReloader
from triggers.engine import Engine
from triggers.events import Event

GOOD_EDIT = """
scenes:
  promo_arrival:
    kind: arrival
    when: {page: {prefix: /promo}}
    per: page
"""

BAD_EDIT = """
scenes:
  promo_arrival:
    kind: arrival
    when: {page: {prefix: /promo}}
    cooldown: soon
"""


def _event(user: str, ts: int, **fields: object) -> Event:
    return Event(user, ts, str(fields.get("type", "page")), {"user_id": user, "ts": ts, **fields})


def test_bad_edit_is_rejected_and_old_config_stays(tmp_path: Path) -> None:
    path = tmp_path / "scenes.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text())
    reloader = ConfigReloader(path)
    seen: list[AppConfig] = []
    reloader.subscribe(seen.append)
    before = reloader.config

    path.write_text(BAD_EDIT)
    assert reloader.poll() is False
    assert reloader.config is before
    assert reloader.status.rejected == 1
    # file, line, scene and field (the text starts with a blank line: line 6)
    assert any(p.startswith(f"{path}:6: scene 'promo_arrival', field 'cooldown': ")
               for p in reloader.status.last_error), reloader.status.last_error
    assert reloader.poll() is False  # reported once, not on every poll
    assert seen == []

    path.write_text(GOOD_EDIT)
    assert reloader.poll() is True
    assert [s.name for s in reloader.config.scene_list()] == ["promo_arrival"]
    assert reloader.status.version == 2
    assert reloader.status.last_error == []
    assert seen == [reloader.config]


def test_engine_reconfigure_keeps_state_and_drops_timers_of_removed_scenes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scenes.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text())
    reloader = ConfigReloader(path)
    engine = Engine(reloader.config.scene_list())
    engine.handle(_event("u1", 1_000, type="cart", product_id="p"))
    assert len(engine.pending_timers()) == 1
    fired = engine.handle(_event("u1", 2_000, type="page", page="/promo/x"))
    assert [t.scene for t in fired] == ["promo_arrival"]

    path.write_text(GOOD_EDIT)
    assert reloader.poll()
    engine.reconfigure(reloader.config.scene_list())
    assert engine.pending_timers() == []
    # A restart or rebalance rebuilds timers from state: the removed scene's stays gone.
    assert engine.rebuild_timers() == 0
    # The state survived the swap (the arrival's last fire is still there); the
    # cooldown is gone in the new config, so the same page fires again.
    state = engine.store.get("u1")
    assert state is not None and state.fires == {"promo_arrival": {"/promo/x": 2_000}}
    again = engine.handle(_event("u1", 3_000, type="page", page="/promo/x"))
    assert [t.scene for t in again] == ["promo_arrival"]
    assert engine.advance(10**12) == []


def _reloaded(engine: Engine, text: str) -> Engine:
    engine.reconfigure(load_config_text(text).scene_list())
    return engine


REPEAT = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 3, within: 30m%s}
"""


def test_repeat_per_change_drops_windows_of_the_old_key() -> None:
    engine = Engine(load_config_text(REPEAT % "").scene_list())
    for ts in (1_000, 2_000):  # product "7" of category "a": two views
        engine.handle(_event("u1", ts, type="view", product_id="7", category="a"))
    _reloaded(engine, REPEAT.replace("product_id", "category") % "")
    # Under the new `per` key "7" is category 7: no views of it yet.
    fired = engine.handle(_event("u1", 3_000, type="view", product_id="z", category="7"))
    assert fired == []
    state = engine.store.get("u1")
    assert state is not None and list(state.windows["rv"]) == ["7"]  # only the new window


def test_repeat_when_change_drops_old_matches_and_keeps_cooldowns() -> None:
    engine = Engine(load_config_text(REPEAT % ", cooldown: 1h").scene_list())
    for ts in (1_000, 2_000, 3_000):
        fired = engine.handle(_event("u1", ts, type="view", product_id="p"))
    assert [t.ts for t in fired] == [3_000]
    engine.handle(_event("u1", 4_000, type="view", product_id="q"))
    engine.handle(_event("u1", 5_000, type="view", product_id="q"))
    searches = REPEAT.replace("{type: view}", "{type: search}")
    _reloaded(engine, searches % ", cooldown: 1h")
    # q's two views matched the old `when`, not the new one: they no longer count.
    assert engine.handle(_event("u1", 6_000, type="search", product_id="q")) == []
    # p fired at 3_000 under this scene and name: its cooldown still holds.
    for ts in (7_000, 8_000, 9_000):
        assert engine.handle(_event("u1", ts, type="search", product_id="p")) == []
    # Changing only count/within/cooldown keeps the windows (q: searches at 6_000, 10_000).
    engine.handle(_event("u1", 10_000, type="search", product_id="q"))
    _reloaded(engine, (searches % "").replace("count: 3", "count: 3, cooldown: 2h"))
    assert [t.key for t in engine.handle(_event("u1", 11_000, type="search", product_id="q"))
            ] == ["q"]


ABSENCE = """
scenes:
  abandon: {kind: absence, start: {type: cart}, after: 30m%s}
"""


def test_absence_start_change_disarms_and_other_changes_keep_the_timer() -> None:
    engine = Engine(load_config_text(ABSENCE % "").scene_list())
    engine.handle(_event("u1", 1_000, type="cart"))
    engine.handle(_event("u2", 2_000, type="cart"))
    _reloaded(engine, ABSENCE % ", cancel: {type: purchase}")  # cancel only: kept
    _reloaded(engine, (ABSENCE % "").replace("30m", "1h"))  # after: kept, old deadline
    assert [(p.user_id, p.deadline) for p in engine.pending_timers()] == [
        ("u1", 1_801_000), ("u2", 1_802_000)]
    _reloaded(engine, (ABSENCE % "").replace("{type: cart}", "{type: checkout}"))
    assert engine.pending_timers() == [] and engine.rebuild_timers() == 0
    assert engine.advance(10**9) == []
    engine.handle(_event("u1", 3_000, type="checkout"))
    assert [t.user_id for t in engine.advance(10**9)] == ["u1"]


def test_kind_change_and_removal_drop_the_scenes_state() -> None:
    arrival = """
scenes:
  s: {kind: arrival, when: {type: view}, per: product_id, cooldown: 1h}
  keep: {kind: arrival, when: {type: view}, cooldown: 1h}
"""
    engine = Engine(load_config_text(arrival).scene_list())
    assert len(engine.handle(_event("u1", 1_000, type="view", product_id="p"))) == 2
    _reloaded(engine, arrival.replace("kind: arrival, when: {type: view}, per",
                                      "kind: repeat, count: 1, within: 1h, when: {type: view}, "
                                      "per", 1))
    state = engine.store.get("u1")
    assert state is not None and "s" not in state.fires and state.fires["keep"]
    _reloaded(engine, arrival)  # back to arrival: the old cooldown is not revived
    assert [t.scene for t in engine.handle(_event("u1", 2_000, type="view", product_id="p"))
            ] == ["s"]
    _reloaded(engine, "scenes:\n  keep: {kind: arrival, when: {type: view}, cooldown: 1h}\n")
    state = engine.store.get("u1")
    assert state is not None and "s" not in state.fires and "s" not in state.windows
