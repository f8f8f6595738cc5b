"""Delivery orders: what a strategy asks the delivery pipeline to send.

A scene trigger is delivered as content chosen for the scene; a journey's
send step (:class:`SendAction`) names its content ref and channel; a lead
handoff (:class:`HandoffAction`) goes to sales. The strategies engine
produces these (re-exported by :mod:`strategies.actions`); they are defined
here, by the layer that carries them out, so ``channels`` never imports
``strategies``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SendAction:
    """Send ``content_ref`` to the user on ``channel``. ``message_id`` is
    deterministic (strategy, version, user, enrolment time, step, channel)."""

    user_id: str
    channel: str
    content_ref: str
    strategy: str
    step: str
    message_id: str
    ts: int
    version: int = 1
    trigger_id: str | None = None
    # Filled by a host that renders the content (channels.content.select): the
    # engine itself only names ``content_ref``.
    variant: str | None = None
    subject: str | None = None
    text: str | None = None
    kind: str = field(default="send", init=False)


@dataclass(frozen=True, slots=True)
class HandoffAction:
    """A lead crossed the score threshold: hand it to sales on ``channel``."""

    user_id: str
    score: float
    channel: str
    content_ref: str
    message_id: str
    ts: int
    kind: str = field(default="handoff", init=False)
