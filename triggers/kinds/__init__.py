"""The scene kinds, one module each, and their registry.

Adding a kind: a module here with its scene, its rule and a
:class:`~triggers.kinds.base.SceneKind` (``KIND``), one entry in
:data:`KINDS`, and its config model in ``config/scene_models.py``. The
engine, hot reload, the hosts, the config loader, ``check-config`` and
``explain`` read kinds from here. A worked example: docs/contributing.md.
"""

from __future__ import annotations

from typing import Any

from triggers.kinds import absence, arrival, catalog, date, repeat, replenishment, sequence
from triggers.kinds.base import Scene, SceneKind

# In the order error messages list them.
KINDS: dict[str, SceneKind[Any]] = {
    kind.name: kind for kind in (repeat.KIND, absence.KIND, arrival.KIND, sequence.KIND,
                                 replenishment.KIND, date.KIND, catalog.BACK_IN_STOCK_KIND,
                                 catalog.PRICE_DROP_KIND, catalog.NEW_ARRIVAL_KIND)
}


def kind_of(scene: Scene) -> SceneKind[Any]:
    """The kind of a scene (by its ``kind`` name)."""
    try:
        return KINDS[scene.kind]
    except KeyError:
        raise ValueError(f"scene {scene.name!r} has an unknown kind {scene.kind!r}") from None


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def spelled_out(names: tuple[str, ...] | None = None) -> str:
    """``repeat, absence, arrival, sequence, replenishment or date``: for messages."""
    names = kind_names() if names is None else names
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
