"""Journey steps as decision-log records (:class:`channels.feedback.decisions.DecisionRecord`):
an enrolment (or a control hold-out), a suppressed entry with its reason, a
send step, a tag or score step, an exit with its reason and a lead handoff.
The message a send step asks for gets its own record when delivery decides it
(``scenetrigger deliver``), under the step's message id."""

from __future__ import annotations

from channels.feedback.decisions import DecisionRecord
from channels.orders import HandoffAction, SendAction
from strategies.actions import (
    Action,
    AudienceAction,
    EnrolAction,
    ExitAction,
    ScoreAction,
    SuppressedAction,
    TagAction,
)

JOURNEY = "journey:"


def journey_record(action: Action) -> DecisionRecord:
    """The record of one journey action."""
    if isinstance(action, EnrolAction):
        scene, ref = JOURNEY + action.strategy, action.trigger_id or _ref(action.user_id,
                                                                          action.strategy,
                                                                          action.ts)
        if action.control:
            return DecisionRecord(action.ts, action.user_id, ref, scene, "suppressed",
                                  "control", f"held out of {action.strategy} (via "
                                             f"{action.via})")
        return DecisionRecord(action.ts, action.user_id, ref, scene, "enrolled", None,
                              f"via {action.via}, version {action.version}")
    if isinstance(action, SuppressedAction):
        return DecisionRecord(action.ts, action.user_id,
                              _ref(action.user_id, action.strategy, action.ts),
                              JOURNEY + action.strategy, "suppressed", action.reason,
                              f"entry via {action.via}")
    if isinstance(action, ExitAction):
        return DecisionRecord(action.ts, action.user_id,
                              _ref(action.user_id, action.strategy, action.ts),
                              JOURNEY + action.strategy, "exited", action.reason,
                              f"at step {action.step}")
    if isinstance(action, SendAction):
        return DecisionRecord(action.ts, action.user_id, action.message_id,
                              JOURNEY + action.strategy, "step", None,
                              f"{action.step}: {action.content_ref} on {action.channel}",
                              action.channel, message_id=action.message_id)
    if isinstance(action, TagAction):
        return DecisionRecord(action.ts, action.user_id,
                              _ref(action.user_id, action.strategy, action.ts),
                              JOURNEY + action.strategy, "tagged", None,
                              f"{'+' if action.add else '-'}{action.tag} at step {action.step}")
    if isinstance(action, AudienceAction):
        return DecisionRecord(action.ts, action.user_id,
                              _ref(action.user_id, action.strategy, action.ts),
                              JOURNEY + action.strategy, "audience", None,
                              f"{'+' if action.add else '-'}{action.audience} at step "
                              f"{action.step}")
    if isinstance(action, ScoreAction):
        return DecisionRecord(action.ts, action.user_id,
                              _ref(action.user_id, action.strategy, action.ts),
                              JOURNEY + action.strategy, "scored", None,
                              f"{action.delta:+g} at step {action.step}")
    assert isinstance(action, HandoffAction)
    return DecisionRecord(action.ts, action.user_id, action.message_id, "journey:handoff",
                          "handoff", None, f"score {action.score:g} to {action.channel}",
                          action.channel, message_id=action.message_id)


def _ref(user_id: str, strategy: str, ts: int) -> str:
    return f"{JOURNEY}{strategy}|{user_id}|{ts}"
