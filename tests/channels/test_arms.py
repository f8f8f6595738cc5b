"""Delivery by config-experiment arm (issue 24.6, channels/arms.py): during an
experiment a user in the candidate arm gets the candidate's content, everyone
else the base's, on one shared policy store. The arm is computed here from the
documented formula: blake2b("scenetrigger-config" \\x1f v<N> \\x1f user), first
8 bytes big endian / 2^64 < share."""

from __future__ import annotations

import hashlib
from pathlib import Path

from channels.arms import ArmedPipeline, armed, open_armed, sharing_stores
from channels.assembly import Delivery, DryRunSender, build_pipeline, open_delivery
from channels.feedback.decisions import MemoryDecisionLog
from channels.policy.store import MemoryPolicyStore
from config.experiment import ExperimentSpec, RunningExperiment
from config.loader import load_config_text
from tests.channels.content_factories import PHONE, T0, catalog, user_state
from triggers.events import Trigger

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
MARK = "[v2] "
CANDIDATE_TEXT = DEMO.replace('subject: "', f'subject: "{MARK}')
VERSION, SHARE = 7, 0.3
SCENE = "repeat_view_no_purchase"


def in_candidate_arm(user: str) -> bool:
    digest = hashlib.blake2b(f"scenetrigger-config\x1fv{VERSION}\x1f{user}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < SHARE


def experiment() -> RunningExperiment:
    candidate = load_config_text(CANDIDATE_TEXT, "candidate")
    return RunningExperiment(VERSION, ExperimentSpec(6, SHARE, 3_600_000), candidate, T0)


def pipelines() -> tuple[ArmedPipeline, DryRunSender]:
    base = load_config_text(DEMO, "base")
    store, sender = MemoryPolicyStore(), DryRunSender()  # one store: dedupe and caps global
    running = experiment()
    return ArmedPipeline(build_pipeline(base, "dry-run", sender, catalog=catalog(), store=store),
                         build_pipeline(running.candidate, "dry-run", sender, catalog=catalog(),
                                        store=store),
                         running), sender


async def test_each_user_gets_the_content_of_their_arm() -> None:
    pipeline, sender = pipelines()
    log = pipeline.decisions = MemoryDecisionLog()
    users = [f"u{i}" for i in range(40)]
    arms = {user: in_candidate_arm(user) for user in users}
    assert 0 < sum(arms.values()) < len(users)  # both arms are exercised
    for user in users:
        outcome = await pipeline.deliver(Trigger(SCENE, user, PHONE, T0),
                                         user_state(user, "search_driven"), T0)
        assert outcome.status == "delivered", outcome
    subjects = {m.user_id: m.subject for m in sender.messages}
    assert sorted(subjects) == sorted(users)
    for user, subject in subjects.items():
        assert subject.startswith(MARK) is arms[user], (user, subject)
    # one process summary and one decision log over both arms
    assert pipeline.counts["delivered"] == len(users)
    assert len(log.records) == len(users)


async def test_dedupe_stays_global_and_a_released_deferral_follows_the_arm() -> None:
    pipeline, sender = pipelines()
    night = T0 - 4 * 3_600_000  # 06:00 in Shanghai: quiet hours
    users = [f"n{i}" for i in range(60)]
    picked = [next(u for u in users if in_candidate_arm(u)),
              next(u for u in users if not in_candidate_arm(u))]
    states = {u: user_state(u, "search_driven", now=night) for u in picked}
    for user in picked:
        trigger = Trigger(SCENE, user, PHONE, night)
        assert (await pipeline.deliver(trigger, states[user], night)).status == "deferred"
    released = await pipeline.release_due(T0, states.get)
    assert sorted(o.status for o in released) == ["delivered", "delivered"]
    got = {m.user_id: m.subject for m in sender.messages}
    assert got[picked[0]].startswith(MARK) and not got[picked[1]].startswith(MARK)
    again = await pipeline.deliver(Trigger(SCENE, picked[0], PHONE, night), states[picked[0]],
                                   T0)
    assert again.status == "suppressed"  # the same trigger id: claimed in the shared store
    assert pipeline.summary()["suppressed"] == {again.reason: 1}  # either arm's, one summary


def test_without_an_experiment_the_base_delivery_is_returned_unchanged() -> None:
    base = load_config_text(DEMO, "base")
    plain = open_armed(lambda c: open_delivery(c, "dry-run"), base, None)
    assert type(plain.pipeline).__name__ == "DeliveryPipeline"
    assert armed(plain, None, experiment()) is plain
    both = open_armed(lambda c: open_delivery(c, "dry-run"), base, experiment())
    assert isinstance(both, Delivery) and isinstance(both.pipeline, ArmedPipeline)
    moved = sharing_stores(experiment().candidate.model_copy(update={
        "delivery": base.delivery.model_copy(update={"redis_prefix": "other:"})}), base)
    assert moved.delivery.redis_prefix == base.delivery.redis_prefix
