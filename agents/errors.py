"""The errors of the Kafka runtimes (worker, producer, collector), under the
one root :class:`triggers.errors.SceneTriggerError`: ``except AgentError``
catches every one of them raised on purpose."""

from __future__ import annotations

from triggers.errors import SceneTriggerError


class AgentError(SceneTriggerError):
    """A worker, producer or collector cannot go on as asked."""
