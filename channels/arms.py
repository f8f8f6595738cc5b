"""Delivery by config-experiment arm (issue 24.6): while an experiment runs,
each user's triggers, journey sends, handoffs and released deferrals are
decided by the pipeline of the user's arm, so a user sees one version's
content, variants, channels and policy settings, never a mix.

:class:`ArmedPipeline` holds the base's and the candidate's pipelines and
picks one per user with :meth:`config.experiment.RunningExperiment.takes`
(the one hash). Both pipelines share the process's Redis client and the
base's ``redis_prefix`` (:func:`sharing_stores`): dedupe claims, caps,
leases, deferrals and the message index stay global across the arms.
Without an experiment nothing here is used (:func:`armed` returns the base).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from channels.assembly import Delivery
from channels.feedback.decisions import DecisionLog
from channels.orders import HandoffAction, SendAction
from channels.pipeline import DeliveryPipeline, Outcome, StateLookup
from channels.policy.decide import DeliveryRequest
from config.experiment import RunningExperiment
from config.models import AppConfig
from triggers.events import Trigger
from triggers.state import UserState


def sharing_stores(candidate: AppConfig, base: AppConfig) -> AppConfig:
    """The candidate config on the base's Redis keys (caps, claims, deferrals,
    catalog, message index, directory): one store for both arms."""
    return candidate.model_copy(update={"delivery": candidate.delivery.model_copy(
        update={"redis_prefix": base.delivery.redis_prefix})})


class ArmedPipeline(DeliveryPipeline):
    """The base pipeline for everything not decided per user (its channels,
    counts, summary and the sweep over the shared deferral store); each
    decision goes to the pipeline of the user's arm."""

    def __init__(self, base: DeliveryPipeline, candidate: DeliveryPipeline,
                 experiment: RunningExperiment) -> None:
        # Not DeliveryPipeline.__init__: this is the base pipeline, same objects.
        self.__dict__.update(base.__dict__)
        # one summary for the process
        candidate.counts, candidate.policy.suppressed = base.counts, base.policy.suppressed
        candidate.decisions = base.decisions
        self.base, self.candidate, self.experiment = base, candidate, experiment

    @property
    def decisions(self) -> DecisionLog | None:
        return self.base.decisions

    @decisions.setter
    def decisions(self, log: DecisionLog | None) -> None:
        self.base.decisions = self.candidate.decisions = log

    def for_user(self, user_id: str) -> DeliveryPipeline:
        return self.candidate if self.experiment.takes(user_id) else self.base

    async def deliver(self, trigger: Trigger, state: UserState | None, now_ms: int) -> Outcome:
        return await self.for_user(trigger.user_id).deliver(trigger, state, now_ms)

    async def deliver_send(self, send: SendAction, state: UserState | None,
                           now_ms: int) -> Outcome:
        return await self.for_user(send.user_id).deliver_send(send, state, now_ms)

    async def hand_off(self, handoff: HandoffAction, state: UserState | None,
                       now_ms: int) -> Outcome:
        return await self.for_user(handoff.user_id).hand_off(handoff, state, now_ms)

    async def release_one(self, req: DeliveryRequest, now_ms: int,
                          states: StateLookup) -> Outcome | None:
        # The inherited release_due sweeps the shared store once; each
        # released request is chosen and decided again by its user's arm.
        return await self.for_user(req.user_id).release_one(req, now_ms, states)


def armed(base: Delivery, candidate: Delivery | None,
          experiment: RunningExperiment | None) -> Delivery:
    """``base`` as it is without an experiment; else its delivery with an
    :class:`ArmedPipeline`, closing the candidate's channels with its own."""
    if candidate is None or experiment is None:
        return base
    base._closers.push_async_callback(candidate.aclose)
    return dataclasses.replace(base, pipeline=ArmedPipeline(base.pipeline, candidate.pipeline,
                                                            experiment))


def open_armed(open_for: Callable[[AppConfig], Delivery], config: AppConfig,
               experiment: RunningExperiment | None) -> Delivery:
    """``open_for(config)`` (a runtime's :func:`channels.assembly.open_delivery`
    call), and during an experiment the candidate's beside it on the same stores."""
    base = open_for(config)  # nothing is connected yet: a refusal below leaves nothing open
    if experiment is None:
        return base
    return armed(base, open_for(sharing_stores(experiment.candidate, config)), experiment)
