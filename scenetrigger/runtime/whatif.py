"""What-if: replay the same events under two configs (delivery dry-run) and
compare. Each side is exactly a ``replay --deliver dry-run`` run (the same
:func:`scenetrigger.runtime.replay.replay` and :class:`SyncDelivery`), so its counts
are the counts ``replay`` prints.

A trigger is identified by (scene, user, key, ts): ``added`` are the
candidate's triggers the base does not have, ``removed`` the reverse (as
multisets), so ``added - removed == candidate - base`` for every scene. The
delivery outcomes are split by segment, browsing style and content variant
(``scene/variant``); every row either side could have is kept, zeros too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from channels.delivery_runtime import SyncDelivery
from channels.pipeline import Outcome
from config.models import AppConfig
from scenetrigger.runtime.replay import ReplaySummary, new_engine, replay
from scenetrigger.runtime.sources import Record
from triggers.classify import SEGMENTS, STYLES
from triggers.events import Trigger
from triggers.explain import clock

TriggerId = tuple[str, str, str | None, int]  # scene, user_id, key, ts
MEASURES = ("messages", "deferred", "suppressed", "failed")
_MEASURE = {"delivered": "messages", "deferred": "deferred", "suppressed": "suppressed",
            "failed": "failed"}
SPLITS = ("segment", "style", "variant")


@dataclass
class Side:
    """One config's run: its triggers and the delivery outcome of each."""

    summary: ReplaySummary
    triggers: Counter[TriggerId] = field(default_factory=Counter)
    # split -> value -> measure -> count
    splits: dict[str, dict[str, Counter[str]]] = field(
        default_factory=lambda: {s: defaultdict(Counter) for s in SPLITS})
    still_deferred: int = 0

    def count(self, outcome: Outcome) -> None:
        measure = _MEASURE[outcome.status]
        for split, value in (("segment", outcome.segment), ("style", outcome.style),
                             ("variant", f"{outcome.scene}/{outcome.variant}")):
            self.splits[split][value][measure] += 1


def run_side(config: AppConfig, records: Iterable[Record], catalog_file: str | None = None,
             on_progress: Callable[[int], None] | None = None) -> Side:
    """Replay ``records`` under ``config`` with delivery dry-run."""
    engine = new_engine(config, profiles=True)
    delivery = SyncDelivery(config, "dry-run", engine.store.get, catalog_file)
    triggers: Counter[TriggerId] = Counter()
    outcomes: list[Outcome] = []

    def sink(trig: Trigger) -> None:
        triggers[(trig.scene, trig.user_id, trig.key, trig.ts)] += 1
        outcomes.append(delivery.deliver(trig))

    try:
        summary = replay(records, engine, sink, on_progress=on_progress)
        still = delivery.finish(summary.clock)
        outcomes += delivery.released  # deferred ones released later, as replay does
    finally:
        delivery.close()
    side = Side(summary, triggers, still_deferred=still)
    for outcome in outcomes:
        side.count(outcome)
    return side


def variant_names(config: AppConfig) -> list[str]:
    """``scene/variant`` of every variant and fallback of the config's scenes."""
    names = []
    for scene in config.scenes:
        content = config.content.scenes.get(scene)
        if content is None:
            names.append(f"{scene}/generic")
            continue
        names += [f"{scene}/{v.name}" for v in content.variants]
        names.append(f"{scene}/{content.fallback.name}")
    return names


def compare(base_config: AppConfig, candidate_config: AppConfig, base: Side, candidate: Side,
            examples: int = 3) -> dict[str, Any]:
    """The comparison as one JSON-able mapping (``scenes``, splits, ``events``)."""
    scenes = list(dict.fromkeys([*base_config.scenes, *candidate_config.scenes,
                                 *base.summary.triggers, *candidate.summary.triggers]))
    added = candidate.triggers - base.triggers
    removed = base.triggers - candidate.triggers
    out: dict[str, Any] = {"scenes": {}}
    for scene in scenes:
        out["scenes"][scene] = _scene_row(scene, base, candidate, added, removed, examples)
    values = {"segment": list(SEGMENTS), "style": list(STYLES),
              "variant": list(dict.fromkeys([*variant_names(base_config),
                                             *variant_names(candidate_config)]))}
    for split in SPLITS:
        seen = [*values[split], *base.splits[split], *candidate.splits[split]]
        out[split] = {
            value: {"base": _measures(base.splits[split].get(value)),
                    "candidate": _measures(candidate.splits[split].get(value))}
            for value in dict.fromkeys(seen)}
    out["events"] = {"read": base.summary.events_read, "taken": base.summary.events_taken,
                     "users": {"base": base.summary.users,
                               "candidate": candidate.summary.users}}
    out["still_deferred"] = {"base": base.still_deferred, "candidate": candidate.still_deferred}
    return out


def _measures(counts: Counter[str] | None) -> dict[str, int]:
    return {m: (counts or Counter()).get(m, 0) for m in MEASURES}


def _scene_row(scene: str, base: Side, candidate: Side, added: Counter[TriggerId],
               removed: Counter[TriggerId], examples: int) -> dict[str, Any]:
    mine_added = sorted(t for t in added.elements() if t[0] == scene)
    mine_removed = sorted(t for t in removed.elements() if t[0] == scene)
    base_users = {t[1] for t in base.triggers if t[0] == scene}
    cand_users = {t[1] for t in candidate.triggers if t[0] == scene}
    gained = sorted(cand_users - base_users)
    lost = sorted(base_users - cand_users)
    return {
        "base": base.summary.triggers.get(scene, 0),
        "candidate": candidate.summary.triggers.get(scene, 0),
        "added": len(mine_added), "removed": len(mine_removed),
        "users_gained": len(gained), "users_lost": len(lost),
        "examples": {
            "added": [_example(t) for t in _by_user(mine_added, examples)],
            "removed": [_example(t) for t in _by_user(mine_removed, examples)],
            "users_gained": gained[:examples], "users_lost": lost[:examples],
        },
    }


def _by_user(items: list[TriggerId], limit: int) -> list[TriggerId]:
    """Up to ``limit`` triggers, one per user (the first of each)."""
    picked: dict[str, TriggerId] = {}
    for item in items:
        picked.setdefault(item[1], item)
        if len(picked) >= limit:
            break
    return list(picked.values())


def _example(t: TriggerId) -> dict[str, Any]:
    return {"user_id": t[1], "key": t[2], "ts": t[3]}


def render(result: dict[str, Any]) -> str:
    """The comparison as tables a person reads. Names are never cut (two
    variants may share their first 36 characters), the columns widen."""
    width = max([28, *map(len, result["scenes"])])
    lines = [f"{'scene':<{width}} {'base':>7} {'cand':>7} {'added':>7} {'removed':>7} "
             f"{'users+':>7} {'users-':>7}"]
    lines.append("-" * len(lines[0]))
    for name, row in result["scenes"].items():
        lines.append(f"{name:<{width}} {row['base']:>7} {row['candidate']:>7} "
                     f"{row['added']:>7} {row['removed']:>7} {row['users_gained']:>7} "
                     f"{row['users_lost']:>7}")
        ex = row["examples"]
        for label, key in (("added", "added"), ("removed", "removed")):
            if ex[key]:
                shown = ", ".join(f"{e['user_id']} at {clock(e['ts'])}" for e in ex[key])
                lines.append(f"    e.g. {label}: {shown}")
    for split in SPLITS:
        lines.append("")
        width = max([36, *map(len, result[split])])
        head = f"{split:<{width}} " + " ".join(f"{m:>11}" for m in MEASURES)
        lines.append(head + "   (base/candidate)")
        lines.append("-" * len(head))
        for value, sides in result[split].items():
            cells = " ".join(f"{str(sides['base'][m]) + '/' + str(sides['candidate'][m]):>11}"
                             for m in MEASURES)
            marker = "" if sides["base"] == sides["candidate"] else "  *"
            lines.append(f"{value:<{width}} {cells}{marker}")
    return "\n".join(lines)
