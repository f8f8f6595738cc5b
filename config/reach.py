"""What a valid config can never do, found before it runs: warnings (so
``check-config --strict`` fails on them) with file, line, scene and field.

- a scene whose content (shipped or the config's) names no configured channel,
  or variants of it that name none: their triggers are suppressed as
  ``no_channel``;
- a configured channel that no scene's content and no strategy step names;
- a strategy send step the caps always suppress: a cap of 0 on each of its
  channels, or more sends at one instant than a cap allows (the entry scene's
  own message counts: it goes out at the moment the journey starts).

Only with a ``channels`` section: without one every channel name is a dry-run
channel. Works on the validated config (the content in force is the layered
one); the raw mapping gives the document paths for the lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from config.content_models import SceneContentModel
from config.strategy_models import StrategyModel, step_label

if TYPE_CHECKING:
    from config.check import Doc, Problem
    from config.models import AppConfig
    from config.yaml_load import Path


def never_happens(config: AppConfig, raw: dict[Any, Any], doc: Doc) -> list[Problem]:
    if not config.channels:
        return []
    return [*_scenes(config, raw, doc), *_unused_channels(config, raw, doc),
            *_capped_steps(config, raw, doc)]


def _map(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _messages(content: SceneContentModel) -> Iterator[tuple[str, list[str]]]:
    """Each message of a scene's content (variants, the fallback, the
    fallbacks by locale) with its channel order."""
    for variant in content.variants:
        yield f"variant {variant.name!r}", variant.channels
    yield "the fallback", content.fallback.channels
    for locale, fallback in content.fallbacks.items():
        yield f"the {locale} fallback", fallback.channels


def _words(names: Iterable[str]) -> str:
    return ", ".join(sorted(set(names)))


def _scenes(config: AppConfig, raw: dict[Any, Any], doc: Doc) -> Iterator[Problem]:
    configured = set(config.channels)
    own = _map(_map(raw.get("content")).get("scenes"))
    for scene in config.scenes:
        content = config.content.scenes.get(scene)
        if content is None:
            continue  # the "no content" warning says it already
        path: Path = ("content", "scenes", scene) if scene in own else ("scenes", scene)
        dead = [(label, chans) for label, chans in _messages(content)
                if not configured & set(chans)]
        named = _words(c for _, chans in _messages(content) for c in chans)
        if len(dead) == len(list(_messages(content))):
            yield doc.problem(
                f"scene {scene!r}: its content names only channel(s) {named}, none of them "
                f"configured (channels: {_words(configured)}): every trigger is suppressed "
                "as no_channel", path, severity="warning")
        elif dead:
            yield doc.problem(
                f"scene {scene!r}: {', '.join(label for label, _ in dead)} name(s) only "
                f"channel(s) {_words(c for _, chans in dead for c in chans)}, none of them "
                f"configured (channels: {_words(configured)}): a user they are chosen for "
                "gets nothing (no_channel)", path, severity="warning")


def _send_channels(model: StrategyModel) -> Iterator[tuple[int, Any, list[str]]]:
    for number, step in enumerate(model.steps, 1):
        if step.send is not None:
            chans = list(step.send.channels or []) + ([step.send.channel]
                                                      if step.send.channel else [])
            yield number, step, chans


def _unused_channels(config: AppConfig, raw: dict[Any, Any], doc: Doc) -> Iterator[Problem]:
    used: set[str] = set()
    for scene in config.scenes:
        content = config.content.scenes.get(scene)
        if content is not None:
            used.update(c for _, chans in _messages(content) for c in chans)
    journeys = config.strategies.all_journeys()
    for model in journeys.values():
        for _, step, chans in _send_channels(model):
            used.update(chans)
            ref = config.content.journeys.get(step.send.content)
            if ref is not None and not chans:
                used.update(c for _, cs in _messages(ref) for c in cs)
    handoff = config.strategies.scoring.handoff
    if handoff is not None:
        used.add(handoff.channel)
    for name in config.channels:
        if name not in used:
            yield doc.problem(
                f"channel {name!r}: no scene's content and no strategy step names it (it "
                "never sends)", ("channels", name), severity="warning")


def _step_paths(raw: dict[Any, Any], doc: Doc) -> dict[str, tuple[Doc, Path]]:
    from config.xref import _strategies

    return {s.name: (s.doc, s.path) for s in _strategies(raw, doc)}


def _capped_steps(config: AppConfig, raw: dict[Any, Any], doc: Doc) -> Iterator[Problem]:
    caps = config.delivery.caps
    channel_caps = config.delivery.channel_caps
    paths = _step_paths(raw, doc)
    for name, model in config.strategies.all_journeys().items():
        where_doc, base = paths.get(name, (doc, ("strategies", "journeys", name)))
        # Sends that happen at one instant: from the entry (the scene's own
        # message, when the entry is a scene) until a wait or a branch (it goes
        # on after an event or its window).
        together: list[str | None] = [None] if model.entry.scene else []
        for number, step in enumerate(model.steps, 1):
            if step.wait is not None or step.branch is not None:
                together = []
            if step.send is None:
                continue
            chans = list(step.send.channels or []) + ([step.send.channel]
                                                      if step.send.channel else [])
            why = _why_capped(chans, together, caps.per_day, caps.per_week, channel_caps)
            if why is not None:  # it sends nothing, so it counts for no later step
                yield where_doc.problem(
                    f"strategy {name!r}, {step_label(number, step.id)}: the caps always "
                    f"suppress it ({why})", (*base, "steps", number - 1),
                    severity="warning")
            else:
                together.append(chans[0] if len(chans) == 1 else None)


def _why_capped(chans: list[str], before: list[str | None], per_day: int | None,
                per_week: int | None, channel_caps: dict[str, Any]) -> str | None:
    """Why a send on ``chans`` is over a cap whatever else the user got, given
    the sends ``before`` it at the same instant (their channel when only one)."""
    for label, limit in (("caps.per_day", per_day), ("caps.per_week", per_week)):
        if limit is not None and len(before) >= limit:
            return (f"{label} {limit}, and {len(before)} message(s) go to the user at the "
                    "same moment before it" if limit else f"{label} is 0")
    reasons = []
    for chan in chans:
        cap = channel_caps.get(chan)
        limit = None if cap is None else min(x for x in (cap.per_day, cap.per_week, 1 << 30)
                                             if x is not None)
        same = sum(1 for b in before if b == chan)
        if limit is None or same < limit:
            return None
        reasons.append(f"channel_caps.{chan} {limit}" + (f" with {same} {chan} message(s) at "
                                                          "the same moment" if limit else ""))
    return "; ".join(reasons) if reasons else None


def product_variants(config: AppConfig) -> dict[str, list[str]]:
    """Per scene (and ``journey:REF``), the variants whose templates name
    products: without a catalog hit they fall back to the generic message."""
    from config.content_models import PRODUCT_NAMES
    from config.safe_template import compile_template

    out: dict[str, list[str]] = {}
    for scene in config.scenes:
        content = config.content.scenes.get(scene)
        for variant in content.variants if content is not None else []:
            texts = [t for t in (variant.subject, variant.text, variant.html) if t]
            if any(compile_template(t).names & PRODUCT_NAMES for t in texts):
                out.setdefault(scene, []).append(variant.name)
    return out


def catalog_problems(config: AppConfig, raw: dict[Any, Any], doc: Doc,
                     source: str | None, products: int) -> list[Problem]:
    """A warning per scene with product variants when no catalog is given
    (``source`` None) or the one given holds no products."""
    own = _map(_map(raw.get("content")).get("scenes"))
    out = []
    for scene, names in product_variants(config).items():
        path: Path = ("content", "scenes", scene) if scene in own else ("scenes", scene)
        if source is None:
            said = ("no catalog source is given (--catalog FILE, or --redis-url URL after "
                    "`scenetrigger catalog load`)")
        elif products == 0:
            said = f"the catalog {source} holds no products"
        else:
            continue
        out.append(doc.problem(
            f"scene {scene!r}: variant(s) {', '.join(names)} show products and {said}: "
            "they always fall back to the generic message", path, severity="warning"))
    return out
