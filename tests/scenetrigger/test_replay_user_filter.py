"""Scene user filters on the rees46 sample, through the replay CLI.

The expected triggers are derived in the test, not hard-coded: one in-process
run of the scenes *without* cooldown and filter gives every moment a scene
would fire; the user's behaviour tags at that moment (profile then, trigger
ts) decide admission; the 24h cooldown is then applied to the admitted fires
only (a filtered-out fire starts none). The same derivation without a filter
must reproduce the unfiltered CLI run, which checks the derivation itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from config.content_models import ContentModel
from config.loader import DEFAULT_CONFIG_PATH, validate_config
from scenetrigger.runtime.sources import read_events
from strategies.tags import behaviour_tags
from tests.paths import REES46_SAMPLE
from tests.scenetrigger.test_replay_samples import run_cli
from triggers.engine import Engine
from triggers.events import Event, Trigger

SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["scenes"]
REPEAT, CART = "repeat_view_no_purchase", "cart_abandonment"
COOLDOWN = 24 * 3_600_000
assert SHIPPED[REPEAT]["cooldown"] == "24h"
Fire = tuple[str, str, str | None, int]
Moment = tuple[Fire, frozenset[str]]  # a would-fire moment and the user's tags then


def would_fire(advance_to: int) -> list[Moment]:
    """Every moment the shipped repeat (without cooldown) and absence scenes
    would fire, in firing order, with the user's behaviour tags at that moment."""
    scenes = {REPEAT: {k: v for k, v in SHIPPED[REPEAT].items() if k != "cooldown"},
              CART: SHIPPED[CART]}
    engine = Engine(validate_config({"scenes": scenes}).scene_list())
    content = ContentModel()
    moments: list[Moment] = []

    def note(triggers: list[Trigger]) -> None:
        for t in triggers:
            state = engine.store.get(t.user_id)
            assert state is not None
            tags = behaviour_tags(state.profile, content, t.ts, "UTC")
            moments.append(((t.scene, t.user_id, t.key, t.ts), tags))

    with REES46_SAMPLE.open("rb") as fh:
        for _n, item in read_events(fh, "rees46"):
            assert isinstance(item, Event)
            note(engine.advance(item.ts))  # timers due before the event: profile before it
            note(engine.handle(item))  # the event's own: profile including it
    note(engine.advance(advance_to))
    return moments


def expected(moments: list[Moment], admit: Callable[[frozenset[str]], bool]) -> list[Fire]:
    """Admitted moments; repeat fires within the cooldown of an admitted fire drop out."""
    kept: dict[tuple[str, str | None], list[int]] = {}
    out = []
    for fire, tags in moments:
        if not admit(tags):
            continue
        scene, user, key, ts = fire
        if scene == REPEAT:
            earlier = kept.setdefault((user, key), [])
            if any(ts - f < COOLDOWN for f in earlier):
                continue
            earlier.append(ts)
        out.append(fire)
    return out


def replay_with(user: dict[str, Any] | None, advance_to: int, tmp: Path) -> list[Fire]:
    scenes = {name: dict(spec) for name, spec in SHIPPED.items()}
    if user is not None:
        scenes[REPEAT]["user"] = scenes[CART]["user"] = user
    config = tmp / "scenes.yaml"
    config.write_text(yaml.safe_dump({"scenes": scenes}))
    triggers, summary, _ = run_cli(REES46_SAMPLE, "--config", config, "--advance-to",
                                   str(advance_to), tmp=tmp)
    assert summary["pending_timers"] == 0
    return triggers


def last_ts() -> int:
    with REES46_SAMPLE.open("rb") as fh:
        return max(item.ts for _n, item in read_events(fh, "rees46") if isinstance(item, Event))


def by_scene(fires: list[Fire], scene: str) -> list[Fire]:
    return [f for f in fires if f[0] == scene]


def test_filtered_replay_is_a_derived_strict_subset(tmp_path: Path) -> None:
    advance_to = last_ts() + 3_600_000  # every pending cart timer fires too
    moments = would_fire(advance_to)
    plain = replay_with(None, advance_to, tmp_path)
    assert plain == expected(moments, lambda tags: True)

    def day_people(tags: frozenset[str]) -> bool:
        return "tod:night" not in tags

    filtered = replay_with({"tags": {"none": ["tod:night"]}}, advance_to, tmp_path)
    assert filtered == expected(moments, day_people)
    assert set(filtered) <= set(plain)
    for scene in (REPEAT, CART):
        assert 0 < len(by_scene(filtered, scene)) < len(by_scene(plain, scene))


def test_a_filter_can_fire_where_the_unfiltered_scene_was_cooling_down(tmp_path: Path) -> None:
    # Users who fire with fewer than 5 events (no habit tag yet) are filtered
    # out; once tagged tod:night they fire, where the unfiltered scene was in
    # its 24h cooldown from that first, suppressed, fire.
    advance_to = last_ts() + 3_600_000
    moments = would_fire(advance_to)
    plain = replay_with(None, advance_to, tmp_path)
    filtered = replay_with({"tags": {"all": ["tod:night"]}}, advance_to, tmp_path)
    assert filtered == expected(moments, lambda tags: "tod:night" in tags)
    extra = set(filtered) - set(plain)
    assert extra and all(f[0] == REPEAT for f in extra)
    assert set(by_scene(filtered, CART)) < set(by_scene(plain, CART))  # absence: a subset
