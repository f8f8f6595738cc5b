"""Hot reload and user state: which parts of a scene's state a new config
invalidates (state is keyed by scene name, so a scene that changes shape
under the same name would otherwise read state of the old shape).

The rule (docs/architecture.md, "Config"): state is kept as long as the facts
it records still mean the same thing under the new scene.

* scene removed, or its ``kind`` changed: everything under its name goes;
* ``per`` changed (``repeat``, ``arrival``, ``sequence``): everything goes
  (windows and cooldowns are keyed by the old field's values);
* ``repeat`` ``when`` (``sequence`` ``first``) changed: those timestamps go
  (they matched the old predicate); ``unless`` changed: the ``unless``
  timestamps go; the newest fire per key stays (the scene did fire then:
  cooldowns hold);
* ``absence`` ``start`` changed: armed timers go (the old start armed them);
* anything else (``count``, ``within``, ``cooldown``, ``after``, ``cancel``,
  ``arrival``'s ``when``, ``sequence``'s ``then``, the ``user`` filter) keeps
  the state: those are read when deciding, and the state holds facts that
  are still true.

What the rule compares is a scene's :class:`Shape` (kind, ``per``, the
predicates whose matches the state records), which each kind defines
(:mod:`triggers.kinds`); the comparison here is the same for every kind. Shapes encode to bytes
(:func:`encode_shapes`), so a host that persists state can store the shapes
it was written under and, started again with another config, drop what a
hot reload would have dropped (the Faust worker: agents/engine_host.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from triggers.errors import StateDecodeError
from triggers.kinds import kind_of
from triggers.kinds.base import Canon, Scene, Shape
from triggers.state import StateStore, UserState

__all__ = ["Canon", "Reset", "Shape", "apply_resets", "decode_shapes", "encode_shapes",
           "reset_store", "resets", "shape_of", "shape_resets", "shapes"]

_SHAPES_VERSION = 1


@dataclass(frozen=True, slots=True)
class Reset:
    """What to drop of one scene's state in every user."""

    everything: bool = False
    when: bool = False  # windows slot: the `when` timestamps
    unless: bool = False  # windows slot: the `unless` timestamps
    timer: bool = False  # timer slot: the armed timer


def shape_of(scene: Scene) -> Shape:
    """The scene's :class:`Shape`, as its kind defines it."""
    return kind_of(scene).shape(scene)


def shapes(scenes: Iterable[Scene]) -> dict[str, Shape]:
    return {scene.name: shape_of(scene) for scene in scenes}


def _reset(old: Shape, new: Shape | None) -> Reset | None:
    if new is None or new.kind != old.kind or new.per != old.per:
        return Reset(everything=True)  # per: windows and cooldowns keyed by the old field
    when, unless, timer = old.when != new.when, old.unless != new.unless, old.start != new.start
    return Reset(when=when, unless=unless, timer=timer) if when or unless or timer else None


def shape_resets(old: Mapping[str, Shape], new: Mapping[str, Shape]) -> dict[str, Reset]:
    """Per scene name of ``old``, what a change to ``new`` invalidates."""
    out = {}
    for name, shape in old.items():
        reset = _reset(shape, new.get(name))
        if reset is not None:
            out[name] = reset
    return out


def resets(old: Iterable[Scene], new: Iterable[Scene]) -> dict[str, Reset]:
    """Per scene name of ``old``, what a change to ``new`` invalidates."""
    return shape_resets(shapes(old), shapes(new))


def encode_shapes(by_name: Mapping[str, Shape]) -> bytes:
    """Versioned, deterministic bytes (equal shapes give equal bytes)."""
    body = {name: [s.kind, s.per, s.when, s.unless, s.start]
            for name, s in sorted(by_name.items())}
    return orjson.dumps([_SHAPES_VERSION, body])


def decode_shapes(data: bytes) -> dict[str, Shape]:
    """The inverse of :func:`encode_shapes`; :class:`StateDecodeError` when unreadable."""
    try:
        version, body = orjson.loads(data)
        if version != _SHAPES_VERSION or type(body) is not dict:
            raise ValueError(f"version {version!r}")
        return {name: Shape(kind, per, _uncanon(when), _uncanon(unless), _uncanon(start))
                for name, (kind, per, when, unless, start) in body.items()}
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise StateDecodeError(f"unreadable scene shapes: {exc}") from None


def _uncanon(raw: Any) -> Canon | None:
    if raw is None:
        return None
    return tuple((name, equals, tuple(one_of) if one_of is not None else None, prefix)
                 for name, equals, one_of, prefix in raw)


def apply_resets(state: UserState, plan: Mapping[str, Reset]) -> bool:
    """Drop what ``plan`` says from one user's state; True if anything went."""
    changed = False
    for name, reset in plan.items():
        if reset.everything or reset.timer:
            changed |= state.timer.pop(name, None) is not None
        if reset.everything:
            changed |= bool(state.windows.pop(name, None))
            changed |= bool(state.fires.pop(name, None))
            continue
        windows = state.windows.get(name)
        if windows and (reset.when or reset.unless):
            for window in windows.values():
                if reset.when and window.when:
                    window.when = []
                    changed = True
                if reset.unless and window.unless:
                    window.unless = []
                    changed = True
    return changed


def reset_store(store: StateStore, plan: Mapping[str, Reset]) -> int:
    """Apply ``plan`` to every user of ``store`` (one pass); returns how many changed."""
    changed = 0
    if plan:
        for user_id, _ in store.items():
            state = store.get(user_id)  # through get: a store may cache what it reads
            if state is not None and apply_resets(state, plan):
                store.put(user_id, state)
                changed += 1
    return changed
