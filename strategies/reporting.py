"""The funnel report: replay triggers plus the events they came from (and any
feedback events) run through the strategies and attribution, in time order.

Scene control groups: a ``replay --deliver`` line carries the pipeline's
decision (``"group": "control"`` on held-out users, no mark on the others; an
explicit ``"group": "treated"`` is read too), and the report uses it as is.
Only lines without a decision (a replay without ``--deliver``) are assigned
by the hash of :mod:`channels.policy.control`. A line marked ``"group": "global"``
(or, unmarked, a user the hash puts in the global control group) is no unit
of its scene: it counts in the "all marketing vs none" row
(:mod:`strategies.holdout`); :func:`mark_disagreements` tells
the caller when the hash under its control share would have said otherwise.

Feedback events in the events stream (``type`` ``delivered``/``opened``/
``clicked``/``shared``, the vocabulary of channels.feedback.events) fill the funnel
columns of the message's trigger or enrolment, once per message.

Pure apart from its inputs: it takes decoded trigger records and events and
returns funnel rows; ``scenetrigger report`` does the file handling.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.pipeline import message_id_for
from channels.policy.control import GLOBAL_CONTROL, in_global_control
from config.models import AppConfig
from config.strategy_models import ControlModel, StrategyModel
from strategies.actions import Action, EnrolAction, ExitAction, SendAction, SuppressedAction
from strategies.attribution import FEEDBACK, Attributor, Funnel, Split, in_control
from strategies.holdout import GlobalHoldout, global_mark
from strategies.intervals import METHOD
from strategies.journeys import JourneyEngine
from strategies.model import Goal, Registry, compile_goal
from strategies.step_funnel import StepFunnels
from triggers.events import Event, Trigger

NO_VARIANT = "-"


SPLITS = ("segment", "style")  # what a ``replay --deliver`` line says about the user


@dataclass(frozen=True, slots=True)
class ReportOptions:
    window_ms: int
    control: ControlModel
    journeys: Mapping[str, StrategyModel]
    # Scene rows split by these fields of the replay lines (``report --by``).
    by: tuple[str, ...] = ()
    # The config's scenes: each has a row, with zeros if it never fired.
    scenes: tuple[str, ...] = ()
    # Scenes with a ``goal:``: their units convert on it, in its window.
    scene_goals: Mapping[str, Goal] = field(default_factory=dict)


def scene_goals(config: AppConfig) -> dict[str, Goal]:
    """The scenes with a ``goal:``, compiled (their units convert on it)."""
    return {name: goal for name, model in config.scenes.items()
            if (goal := compile_goal(model.goal)) is not None}


def options_of(config: AppConfig) -> ReportOptions:
    """The report's options as a config states them (the console's)."""
    section = config.strategies
    return ReportOptions(section.attribution.window, section.control,
                         dict(section.all_journeys()), (), tuple(config.scenes),
                         scene_goals(config))


def split_of(record: Mapping[str, Any], by: Iterable[str]) -> Split:
    """The ``(field, value)`` pairs of a replay line a row is split by
    (``-`` when the line does not say: a replay without ``--deliver``)."""
    return tuple((name, str(record.get(name) or NO_VARIANT)) for name in by)


def trigger_from_record(record: Mapping[str, Any]) -> Trigger:
    key = record.get("key")
    return Trigger(str(record["scene"]), str(record["user_id"]),
                   None if key is None else str(key), int(record["ts"]))


def group_mark(record: Mapping[str, Any]) -> bool | None:
    """True (control) / False (treated) as the replay line says, None when it
    carries no decision. The pipeline marks only control users, so a line with
    a delivery outcome and no mark is treated."""
    group = record.get("group")
    if group in ("control", "treated"):
        return bool(group == "control")
    return False if isinstance(record.get("delivery"), str) else None


def mark_disagreements(trigger_records: Iterable[Mapping[str, Any]],
                       control: ControlModel) -> tuple[int, int]:
    """(lines whose mark differs from the hash under ``control``, marked lines):
    the global group's, else the scene's."""
    differ = marked = 0
    for record in trigger_records:
        mark = group_mark(record)
        if mark is None:
            continue
        marked += 1
        user = str(record["user_id"])
        held = global_mark(record)
        if held != in_global_control(control, user) or (
                not held and mark != in_control(control, str(record["scene"]), user)):
            differ += 1
    return differ, marked


def build_report(trigger_records: Iterable[Mapping[str, Any]], events: Iterable[Event],
                 options: ReportOptions, steps: StepFunnels | None = None) -> list[Funnel]:
    """The funnel rows; with ``steps``, also fills every strategy's step funnel."""
    attributor = Attributor(options.window_ms)
    registry = Registry(options.journeys)
    journeys = JourneyEngine(registry, control=options.control)
    everything = GlobalHoldout(options.control)
    if steps is not None:
        steps.registry = registry
        journeys.on_step = steps.step
        attributor.on_convert = steps.converted

    def _record(action: Action) -> None:
        _record_action(attributor, registry, action)
        if steps is not None:
            steps.action(action)

    for kind, item in _merged(trigger_records, events):
        if kind == 0:
            event: Event = item
            price = price_of(event.fields.get("price")) if event.type == "purchase" else 0.0
            attributor.goal_event(event.user_id, event.ts, event.fields, price)
            if event.type == "purchase":
                # before the journeys see it: a conversion counts at the step it met
                attributor.purchase(event.user_id, event.ts, price)
                everything.purchase(event.user_id, price)
            for action in journeys.on_event(event):
                _record(action)
            if event.type in FEEDBACK and "slot" in event.fields:  # on-site, no message
                attributor.slot_feedback(event.user_id, event.ts, event.type, event.fields)
            elif event.type in FEEDBACK:
                attributor.feedback(event.user_id, event.type, event.fields)
                if steps is not None:
                    steps.feedback(event.type, event.fields)
            continue
        record: Mapping[str, Any] = item
        trig = trigger_from_record(record)
        variant = str(record.get("variant") or NO_VARIANT)
        split = split_of(record, options.by)
        attributor.triggered("scene", trig.scene, variant, split=split)
        held = everything.held(record)
        everything.triggered(trig.user_id, held)
        if held:
            # Not a unit of the scene: its holdout is drawn among the others.
            attributor.suppressed("scene", trig.scene, variant, GLOBAL_CONTROL, split)
            for action in journeys.on_trigger(trig):
                _record(action)
            continue
        mark = group_mark(record)
        control = in_control(options.control, trig.scene, trig.user_id) if mark is None else mark
        attributor.unit("scene", trig.scene, variant, trig.user_id, trig.ts, control, split,
                        goal=options.scene_goals.get(trig.scene))
        if control:
            attributor.suppressed("scene", trig.scene, variant, "control", split)
        else:
            _delivery_outcome(attributor, trig, variant, record, split)
        for action in journeys.on_trigger(trig):
            _record(action)
    _zero_rows(attributor, options)
    return attributor.rows() + ([everything.row] if everything.wanted() else [])


def _zero_rows(attributor: Attributor, options: ReportOptions) -> None:
    """A scene or strategy that never fired still has its row, with zeros."""
    seen = {(row.kind, row.name) for row in attributor.funnels.values()}
    for kind, names in (("scene", options.scenes), ("strategy", tuple(options.journeys))):
        for name in names:
            if (kind, name) not in seen:
                attributor.funnel(kind, name, NO_VARIANT, split_of({}, options.by)
                                  if kind == "scene" else ())


def _delivery_outcome(attributor: Attributor, trig: Trigger, variant: str,
                      record: Mapping[str, Any], split: Split = ()) -> None:
    """``replay --deliver`` appends ``delivery`` (delivered, deferred,
    suppressed, failed), ``reason`` and ``channel``: count them."""
    status = record.get("delivery")
    if not isinstance(status, str):
        return
    channel = record.get("channel")
    message_id = message_id_for(trig.trigger_id, channel) if isinstance(channel, str) else None
    if status in ("delivered", "failed") and message_id is not None:
        attributor.sent("scene", trig.scene, variant, trig.user_id, message_id, split)
    if status == "delivered":
        # Keyed by the message id, so a `delivered` feedback event for the
        # same message in the events file does not count it twice.
        attributor.feedback(trig.user_id, "delivered",
                            {"scene": trig.scene, "message_id": message_id})
    elif status == "suppressed":
        reason = record.get("reason")
        attributor.suppressed("scene", trig.scene, variant,
                              reason if isinstance(reason, str) and reason else "suppressed",
                              split)
    else:  # deferred (e.g. quiet hours, still waiting at the end) or failed
        reason = record.get("reason")
        label = f"{status}:{reason}" if isinstance(reason, str) and reason else status
        attributor.suppressed("scene", trig.scene, variant, label, split)


def price_of(value: Any) -> float:
    """Prices arrive as numbers or decimal strings; anything else is 0."""
    if isinstance(value, bool) or value is None:
        return 0.0
    try:
        price = float(value)
    except (TypeError, ValueError):
        return 0.0
    return price if price > 0 and price == price and price != float("inf") else 0.0


def _record_action(attributor: Attributor, registry: Registry, action: Action) -> None:
    if isinstance(action, EnrolAction):
        variant = f"v{action.version}"
        attributor.triggered("strategy", action.strategy, variant)
        strategy = registry.get(action.strategy, action.version)
        attributor.unit("strategy", action.strategy, variant, action.user_id, action.ts,
                        action.control, goal=strategy.goal if strategy is not None else None)
        if action.control:
            attributor.suppressed("strategy", action.strategy, variant, "control")
    elif isinstance(action, SuppressedAction):
        variant = f"v{action.version}"
        attributor.triggered("strategy", action.strategy, variant)
        attributor.suppressed("strategy", action.strategy, variant, action.reason)
    elif isinstance(action, ExitAction) and action.reason == "goal":
        attributor.goal_exit("strategy", action.strategy, f"v{action.version}", action.step)
    elif isinstance(action, SendAction):
        attributor.sent("strategy", action.strategy, f"v{action.version}", action.user_id,
                        action.message_id)


def _merged(trigger_records: Iterable[Mapping[str, Any]],
            events: Iterable[Event]) -> Iterator[tuple[int, Any]]:
    """Events and triggers by time; at equal times the event comes first
    (it is what made the trigger fire). Both inputs are in (near) time order;
    triggers are sorted stably since absence triggers carry their deadline."""
    triggers = sorted(trigger_records, key=lambda r: int(r["ts"]))
    event_items = ((e.ts, 0, i, e) for i, e in enumerate(events))
    trigger_items = ((int(r["ts"]), 1, i, r) for i, r in enumerate(triggers))
    for _ts, kind, _i, item in heapq.merge(event_items, trigger_items,
                                           key=lambda t: (t[0], t[1], t[2])):
        yield kind, item


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_table(rows: list[Funnel]) -> str:
    by = next(([name for name, _ in row.split] for row in rows if row.split), [])
    head = (f"{'kind':<8} {'name':<26} {'variant':<7}"
            f"{''.join(f' {name[:16]:<16}' for name in by)} {'trig':>6} {'supp':>5} {'treat':>6} "
            f"{'ctrl':>5} {'sent':>5} {'deliv':>5} {'open':>5} {'click':>5} {'share':>5} "
            f"{'conv':>5} {'revenue':>10} {'cr_t':>7} {'cr_c':>7} {'uplift':>8} {'u_upl':>8}"
            "  ci95 (by user)")
    lines = [head, "-" * len(head)]
    for row in rows:
        d = row.to_dict()
        up = row.uplift()
        clustered = row.clustered_ci()
        ci = "n/a" if clustered is None else f"[{_pct(clustered[0])}, {_pct(clustered[1])}]"
        split = dict(row.split)
        cells = "".join(f" {split.get(name, '')[:16]:<16}" for name in by)
        lines.append(
            f"{row.kind:<8} {row.name[:26]:<26} {row.variant[:7]:<7}{cells} {row.triggered:>6} "
            f"{sum(row.suppressed.values()):>5} {row.units[0]:>6} {row.units[1]:>5} "
            f"{row.sent:>5} {d['delivered']:>5} {d['opened']:>5} {d['clicked']:>5} "
            f"{d['shared']:>5} {d['converted']:>5} {d['revenue']:>10.2f} "
            f"{_pct(up.rate_treated):>7} {_pct(up.rate_control):>7} {_pct(up.diff):>8} "
            f"{_pct(row.uplift_per_user().diff):>8}  {ci}")
        for reason, n in sorted(row.suppressed.items()):
            lines.append(f"{'':<8}   suppressed {reason}: {n}")
        for step, n in sorted(row.goal_exits.items()):
            lines.append(f"{'':<8}   goal met at step {step}: {n}")
    lines.append(f"uplift: per unit, u_upl: per user; intervals: {METHOD}")
    return "\n".join(lines)
