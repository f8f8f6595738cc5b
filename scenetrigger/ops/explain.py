"""One user's timeline: their events, each trigger and why it fired, the
scenes that refused or did not fire and what was missing, each delivery
decision with its deciding rule and figures (the decision log's records),
the scene windows now, and the user's tags.

:func:`explain_replay` builds it from a recorded stream exactly as
``replay --deliver dry-run`` would decide (the whole stream moves the clock
and the delivery releases; only the user's own triggers are delivered);
:func:`explain_records` from a live deployment's topics.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.audience.consent import UNSUBSCRIBED
from channels.erasure_receipts import UNREADABLE
from channels.feedback.decisions import (
    CONSENT,
    ERASED,
    HOW,
    OUTCOME_REFUSED,
    DecisionRecord,
    MemoryDecisionLog,
)
from config.models import AppConfig
from triggers.classify import Segmentation
from triggers.durations import format_duration_ms
from triggers.errors import EventRejected
from triggers.events import Event, Trigger
from triggers.explain import SceneExplanation, clock, explain_scene, hm
from triggers.kinds import kind_of
from triggers.kinds.sequence import SequenceScene
from triggers.scenes import RepeatScene, Scene
from triggers.state import UserState

MAX_EVENTS_SHOWN = 500  # the text shows the newest; --json has every event
FEEDBACK_TYPES = frozenset({"delivered", "failed", "opened", "clicked", "converted",
                            "bounced", "unsubscribed"})


@dataclass
class Timeline:
    user_id: str
    events: list[Event] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    scenes: list[SceneExplanation] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    windows: list[str] = field(default_factory=list)
    segmentation: Segmentation | None = None
    clock_ms: int | None = None
    strategy_tags: list[str] | None = None  # the strategies' tags (Redis), when read
    score: float | None = None  # the lead score now, decayed (Redis), when read
    erased_ms: int | None = None  # the user's erasure (its receipt): nothing before is shown

    def decisions_for(self, trigger_id: str) -> list[DecisionRecord]:
        return [d for d in self.decisions if d.trigger_id == trigger_id]

    def consent_changes(self) -> list[dict[str, Any]]:
        """Each consent change (unsubscribed, subscribed) and erasure, with how
        it came and how many later messages were refused because of it."""
        changes = sorted((d for d in self.decisions if d.scene == CONSENT),
                         key=lambda d: d.ts)
        out = []
        for change in changes:
            item: dict[str, Any] = {"ts": change.ts, "outcome": change.outcome,
                                    "channel": change.channel, "purpose": change.purpose,
                                    "source": change.source,
                                    "how": HOW.get(change.source or "", change.source)}
            if change.outcome == UNSUBSCRIBED:
                until = next((c.ts for c in changes if c.ts > change.ts
                              and c.outcome != UNSUBSCRIBED and c.channel == change.channel),
                             None)
                item["refused_after"] = sum(
                    1 for d in self.decisions if d.rule == UNSUBSCRIBED and d.ts >= change.ts
                    and (until is None or d.ts < until))
            out.append(item)
        return out

    def to_dict(self) -> dict[str, Any]:
        why = {f.trigger.trigger_id: f.why for s in self.scenes for f in s.fired}
        seg = self.segmentation
        return {
            "user_id": self.user_id,
            "clock": self.clock_ms,
            "events": [{**dict(e.fields), "user_id": e.user_id, "ts": e.ts, "type": e.type}
                       for e in self.events],
            "triggers": [{**t.to_dict(), "trigger_id": t.trigger_id, "why": why.get(t.trigger_id),
                          "decisions": [d.to_dict() | {"text": d.text()}
                                        for d in self.decisions_for(t.trigger_id)]}
                         for t in self.triggers],
            "scenes": [{"scene": s.scene, "kind": s.kind, "fired": len(s.fired),
                        "refused": [{"ts": r.ts, "key": r.key, "why": r.why} for r in s.refused],
                        "missing": s.missing} for s in self.scenes],
            "decisions": [d.to_dict() | {"text": d.text()} for d in self.decisions],
            "windows": self.windows,
            "tags": None if seg is None else {"style": seg.style, "segment": seg.segment,
                                              "tags": list(seg.tags)},
            "strategy_tags": self.strategy_tags,
            "score": self.score,
            "consent": self.consent_changes(),
            **({} if self.erased_ms is None else {  # an unreadable receipt: null, time unknown
                "erased_at": None if self.erased_ms == UNREADABLE else self.erased_ms}),
        }

    def render(self) -> str:
        rows: list[tuple[int, int, str]] = []  # ts, order within a ts, text
        why = {f.trigger.trigger_id: f.why for s in self.scenes for f in s.fired}
        hidden = max(0, len(self.events) - MAX_EVENTS_SHOWN)
        for e in self.events[hidden:]:
            kind = "feedback" if e.type in FEEDBACK_TYPES else "event"
            rows.append((e.ts, 0, f"{kind:<8} {e.type}{_event_detail(e)}"))
        for s in self.scenes:
            rows += [(r.ts, 1, f"refused  {s.scene}{'' if r.key is None else f' ({r.key})'}: "
                               f"{r.why}") for r in s.refused]
        for t in self.triggers:
            key = "" if t.key is None else f" ({t.key})"
            rows.append((t.ts, 2, f"trigger  {t.scene}{key}: {why.get(t.trigger_id, '')}"))
        for d in self.decisions:
            if d.scene == CONSENT:
                rows.append((d.ts, 3, f"consent  {_consent_text(d)}"))
                continue
            via = "" if d.channel is None else f" via {d.channel}"
            variant = "" if d.variant is None else f", variant {d.variant}"
            said = d.figures if d.rule is None else d.text()
            rows.append((d.ts, 3, f"decision {d.scene}: {d.outcome}{via}{variant}"
                                  f"{' - ' + said if said else ''}"))
        rows.sort(key=lambda r: (r[0], r[1]))
        out = [f"user {self.user_id}: {len(self.events)} events, {len(self.triggers)} triggers, "
               f"{len(self.decisions)} decisions"
               + ("" if self.clock_ms is None else f" (clock {clock(self.clock_ms)})")]
        if self.erased_ms == UNREADABLE:
            out.append("  erased (its receipt is unreadable, so its time is unknown): no record "
                       "is shown (Kafka keeps them until the topics' retention ends)")
        elif self.erased_ms is not None:
            out.append(f"  erased at {clock(self.erased_ms)}: the records before it are not "
                       "shown (Kafka keeps them until the topics' retention ends)")
        for change in self.consent_changes():
            if change["outcome"] == UNSUBSCRIBED:
                out.append(f"  unsubscribed from {change['channel'] or 'every channel'} "
                           f"({change['purpose'] or 'marketing'}) at {clock(change['ts'])} "
                           f"through {change['how'] or 'an unknown source'}; "
                           f"{change['refused_after']} later message(s) refused for it "
                           f"({UNSUBSCRIBED})")
        if hidden:
            out.append(f"  ({hidden:,} earlier events not shown; --json has them all)")
        if not self.events and not self.triggers and not self.decisions and (
                self.erased_ms is None):
            # Most often a mistyped id: say so before the scenes' "no views" lines.
            out.append(f"  nothing is recorded for user {self.user_id!r}: is the id right?")
        out += [f"  {clock(ts)}  {text}" for ts, _, text in rows]
        for s in self.scenes:
            unlisted = s.extra.get("refusals_not_listed")
            if unlisted:
                out.append(f"  ({unlisted:,} more refusals of {s.scene} not listed)")
        quiet = [line for s in self.scenes if s.missing is not None
                 for line in s.lines(self.user_id)[len(s.fired) + len(s.refused):]]
        if quiet:
            out.append("scenes that did not fire:")
            out += [f"  {line}" for line in quiet]
        if self.windows:
            out.append("scene windows now:")
            out += [f"  {line}" for line in self.windows]
        if self.segmentation is not None:
            seg = self.segmentation
            out.append(f"tags: style {seg.style}, segment {seg.segment}"
                       + (f", {', '.join(seg.tags)}" if seg.tags else ""))
        if self.strategy_tags is not None:
            out.append(f"strategy tags: {', '.join(self.strategy_tags) or 'none'}")
        if self.score is not None:
            out.append(f"lead score: {self.score:.1f}")
        return "\n".join(out)


def _consent_text(record: DecisionRecord) -> str:
    if record.outcome == ERASED:
        return "erased: the user's data was erased"
    what = f"{record.channel or 'every channel'} ({record.purpose or 'marketing'})"
    how = HOW.get(record.source or "", record.source or "an unknown source")
    return f"{record.outcome} {what} through {how}"


def _event_detail(event: Event) -> str:
    shown = [f"{k}={event.fields[k]}" for k in ("product_id", "category", "price", "page",
                                                   "query", "channel", "message_id", "scene")
             if event.fields.get(k) not in (None, "")]
    return f" ({', '.join(shown)})" if shown else ""


def windows_now(state: UserState | None, scenes: Sequence[Scene], clock_ms: int | None
                ) -> list[str]:
    """What the engine holds for the user per scene (read from its state)."""
    if state is None:
        return []
    out: list[str] = []
    for scene in scenes:
        if isinstance(scene, RepeatScene | SequenceScene):
            for key, win in state.windows.get(scene.name, {}).items():
                live = [t for t in win.when if clock_ms is None or t > clock_ms - scene.within_ms]
                if not live and win.last_fire is None and not win.unless:
                    continue  # nothing left that could count
                label = scene.name + ("" if scene.per is None else f"[{key}]")
                within = format_duration_ms(scene.within_ms)
                # A repeat keeps every matching time in its window, more than
                # `count` after a fire: say what is held and what is needed.
                text = (f"{label}: {len(live)} within {within} still in the window "
                        f"({scene.count} needed)" if isinstance(scene, RepeatScene) else
                        f"{label}: {len(live)} `first` within {within} still in the window, "
                        f"waiting for `then`")
                if win.unless:
                    text += f", {len(win.unless)} blocking since {hm(win.unless[0])}"
                if win.last_fire is not None:
                    text += f", last fired {clock(win.last_fire)}"
                out.append(text)
        elif kind_of(scene).slot == "timer" and scene.name in state.timer:
            deadline, _seq = state.timer[scene.name]
            out.append(f"{scene.name}: timer armed, due {clock(deadline)}")
        elif scene.kind == "arrival":
            for key, fired in state.fires.get(scene.name, {}).items():
                out.append(f"{scene.name}{'' if key == '' else f'[{key}]'}: last fired "
                           f"{clock(fired)}")
    return out


def assemble_timeline(user_id: str, events: Sequence[Event], triggers: Iterable[Trigger],
                      decisions: Iterable[DecisionRecord], state: UserState | None,
                      config: AppConfig, now_ms: int) -> Timeline:
    """A timeline from records already gathered (a live deployment's topics,
    the console's memory): scene explanations, windows and tags added here."""
    from channels.content.catalog import MemoryCatalog
    from channels.content.select import ContentSelector

    timeline = Timeline(user_id, list(events), clock_ms=now_ms)
    for trig in triggers:
        if trig not in timeline.triggers:  # a redone batch may send one again
            timeline.triggers.append(trig)
    seen: set[bytes] = set()
    for record in decisions:
        wire = record.encode()
        if wire not in seen:
            seen.add(wire)
            timeline.decisions.append(record)
    scenes = config.scene_list()
    # The worker's refusal records: the filter and what the profile had.
    said = {(d.scene, d.ts): d.figures for d in timeline.decisions
            if d.outcome == OUTCOME_REFUSED}
    timeline.scenes = [explain_scene(s, timeline.events, timeline.triggers, now_ms, said)
                       for s in scenes]
    timeline.windows = windows_now(state, scenes, now_ms)
    selector = ContentSelector(config.content, MemoryCatalog(), config.delivery.default_timezone)
    timeline.segmentation = selector.segment(state, now_ms)
    return timeline


def explain_replay(records: Iterable[tuple[int, Event | EventRejected]], config: AppConfig,
                   users: Collection[str], catalog_file: str | None = None
                   ) -> dict[str, Timeline]:
    """The timelines of ``users`` on one replay of ``records`` with ``config``
    (delivery dry-run, decided as ``replay --deliver dry-run`` decides)."""
    from channels.delivery_runtime import SyncDelivery
    from scenetrigger.runtime.replay import new_engine

    engine = new_engine(config, profiles=True)
    log = MemoryDecisionLog(max_records=None)
    timelines = {user: Timeline(user) for user in users}
    delivery = SyncDelivery(config, "dry-run", engine.store.get, catalog_file, decisions=log)
    try:
        def take(fired: list[Trigger]) -> None:
            for trig in fired:
                timeline = timelines.get(trig.user_id)
                if timeline is not None:
                    timeline.triggers.append(trig)
                    delivery.deliver(trig)
                else:  # releases happen at every trigger, as in replay --deliver
                    delivery.release(trig.ts)

        said: dict[str, dict[tuple[str, int], str]] = {}  # the engine's refusals, per user

        def hear() -> None:
            for refusal in engine.take_refusals():
                if refusal.user_id in timelines:
                    said.setdefault(refusal.user_id, {})[(refusal.scene, refusal.ts)] = \
                        refusal.text()

        for _number, item in records:
            if type(item) is EventRejected:
                continue
            assert isinstance(item, Event)
            take(engine.handle(item))
            if engine.has_refusals:
                hear()
            timeline = timelines.get(item.user_id)
            if timeline is not None:
                timeline.events.append(item)
        take(engine.advance(engine.clock))
        hear()
        final = engine.clock if len(engine.store) else None
        delivery.finish(final)
        for user, timeline in timelines.items():
            timeline.clock_ms = final
            timeline.segmentation = delivery.segment(engine.store.get(user), final or 0)
    finally:
        delivery.close()
    decided: dict[str, list[DecisionRecord]] = {}
    for record in log.records:
        decided.setdefault(record.user_id, []).append(record)
    for user, timeline in timelines.items():
        timeline.decisions = decided.get(user, [])
        timeline.scenes = [explain_scene(s, timeline.events, timeline.triggers, final,
                                         said.get(user, {})) for s in engine.scenes]
        timeline.windows = windows_now(engine.store.get(user), engine.scenes, final)
    return timelines
