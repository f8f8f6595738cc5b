"""Hot reload keeps the running config on a bad edit and swaps on a good one."""

from __future__ import annotations

from pathlib import Path

from config.loader import DEFAULT_CONFIG_PATH
from config.models import AppConfig
from config.reload import ConfigReloader
from triggers.engine import Engine
from triggers.events import Event

GOOD_EDIT = """
scenes:
  promo_arrival:
    kind: arrival
    when: {page: {prefix: /promo}}
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
    assert any("promo_arrival" in p and "cooldown" in p for p in reloader.status.last_error)
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
    assert state is not None and state.arrival == {"promo_arrival": {"/promo/x": 2_000}}
    again = engine.handle(_event("u1", 3_000, type="page", page="/promo/x"))
    assert [t.scene for t in again] == ["promo_arrival"]
    assert engine.advance(10**12) == []
