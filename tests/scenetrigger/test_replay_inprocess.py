"""In-process replay: a synthetic persona stream equals the reference model
(all three shipped scenes fire on it), and replay leaves the GC as it found it."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from config.loader import load_config, validate_config
from scenetrigger.demo.personas import generate_events
from scenetrigger.runtime.replay import new_engine, replay
from scenetrigger.runtime.sources import Record
from tests.scenetrigger.test_replay_samples import SCENES
from tests.triggers.reference import run_reference
from triggers import Trigger
from triggers.events import event_from_mapping


def persona_events(n: int) -> list[dict[str, Any]]:
    return [dict(e) for e in generate_events(n, users=1500, seed=11, rate=5.0)]


def records_of(events: list[dict[str, Any]]) -> list[Record]:
    return [(n, event_from_mapping(dict(e))) for n, e in enumerate(events, 1)]


def test_persona_stream_equals_reference_for_every_scene() -> None:
    events = persona_events(20_000)  # more than one GC-freeze period (16,384 events)
    fired: list[Trigger] = []
    progress: list[int] = []
    summary = replay(records_of(events), new_engine(load_config()), fired.append,
                     on_progress=progress.append)
    expected, pending = run_reference(SCENES, events)
    assert [(t.scene, t.user_id, t.key, t.ts) for t in fired] == expected
    assert [(p.scene, p.user_id, p.deadline) for p in summary.pending] == pending
    assert all(summary.triggers[name] > 0 for name in SCENES)  # the test can see each scene
    assert progress == [16_384]


def test_without_profiles_the_output_is_the_same() -> None:
    """A host that reads no profile (replay without --deliver) turns them off;
    the triggers and pending timers stay those of the reference model."""
    events = persona_events(5_000)
    engine = new_engine(load_config(), profiles=False)
    assert not engine.track_profile
    fired: list[Trigger] = []
    summary = replay(records_of(events), engine, fired.append)
    expected, pending = run_reference(SCENES, events)
    assert [(t.scene, t.user_id, t.key, t.ts) for t in fired] == expected
    assert [(p.scene, p.user_id, p.deadline) for p in summary.pending] == pending
    assert all(s.profile.views == 0 for _, s in engine.store.items())
    assert new_engine(load_config()).track_profile  # the default: profiles kept


def test_scenes_with_a_user_filter_keep_profiles_on() -> None:
    config = validate_config({"scenes": {"c": {
        "kind": "absence", "start": {"type": "cart"}, "after": "30m",
        "user": {"segment": {"in": ["loyal"]}}}}})
    assert new_engine(config, profiles=False).track_profile


def test_replay_restores_the_gc() -> None:
    assert gc.get_freeze_count() == 0
    replay(records_of(persona_events(17_000)), new_engine(load_config()), lambda _t: None)
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_replay_restores_the_gc_when_a_sink_fails() -> None:
    def boom(_trigger: Trigger) -> None:
        if gc.get_freeze_count():
            raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError):
        replay(records_of(persona_events(20_000)), new_engine(load_config()), boom)
    assert gc.get_freeze_count() == 0
