"""Cross-references between config sections, checked on the raw mapping.

What the section models cannot see alone: a strategy's entry scene, branch
targets, enrolments, content refs and channels, tags that nothing sets,
control-group names, content for scenes that do not exist and scenes with no
content of their own. Each finding has its document path (for the line) and a
close name when one exists. Works on raw data so that a schema error in one
section hides nothing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from config.ads_models import ADS_CONSENT
from config.channel_models import CHANNEL_TYPES
from config.content_models import shipped_names
from config.strategy_models import EXIT, NEXT, step_label
from config.yaml_load import Path
from triggers.churn import CHURN_RISK_HIGH, CHURNED
from triggers.classify import BEHAVIOUR_TAGS

if TYPE_CHECKING:
    from config.check import Doc, Problem

PREFERS = "prefers_"  # the tag a user's most-opened channel sets (strategies/tags.py)
# Event types SEMANTICS.md names and those the product itself puts on the
# stream. Only for hints: any type is allowed, but one a letter away from
# these (`purchse`) never matches, and an `unless` that never matches spams.
COMMON_EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "page", "favorite",
                      "search", "identify", "subscribed", "unsubscribed", "opened", "clicked",
                      "delivered", "failed", "converted")
PREDICATE_FIELDS = ("when", "unless", "start", "cancel", "first", "then")


def _map(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _names(value: Any, path: Path) -> Iterator[tuple[Any, Path]]:
    """``x``, ``[x, y]`` or ``{in: [x, y]}``: each name with its path."""
    if isinstance(value, dict) and "in" in value:
        value, path = value["in"], (*path, "in")
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield item, (*path, i)
    elif value is not None:
        yield value, path


class _Strategy:
    """One strategy's raw body and the document it was written in."""

    def __init__(self, name: str, body: Any, doc: Doc, path: Path) -> None:
        self.name, self.body, self.doc, self.path = name, _map(body), doc, path

    def steps(self) -> Iterator[tuple[int, dict[Any, Any], Path]]:
        steps = self.body.get("steps")
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, dict):
                yield i + 1, step, (*self.path, "steps", i)

    def where(self, number: int | None = None, step: Any = None) -> str:
        text = f"strategy {self.name!r}"
        if number is not None:
            step_id = _map(step).get("id")
            text += ", " + step_label(number, step_id if isinstance(step_id, str) else None)
        return text


def _strategies(raw: dict[Any, Any], doc: Doc) -> list[_Strategy]:
    """Inline journeys and those of included files (each with its own lines)."""
    section = _map(raw.get("strategies"))
    found: dict[str, _Strategy] = {}
    from config.check import included_files

    for sub, body in included_files(section):
        for name, strategy in body.items():
            found[str(name)] = _Strategy(str(name), strategy, sub, (name,))
    for name, strategy in _map(section.get("journeys")).items():
        found[str(name)] = _Strategy(str(name), strategy, doc,
                                     ("strategies", "journeys", name))
    return list(found.values())


def cross_references(raw: dict[Any, Any], doc: Doc) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of the references between sections."""
    return _Checker(raw, doc).run()


class _Checker:
    def __init__(self, raw: dict[Any, Any], doc: Doc) -> None:
        self.raw, self.doc = raw, doc
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.scenes = [str(s) for s in _map(raw.get("scenes"))]
        self.strategies = _strategies(raw, doc)
        defined = [str(c) for c in _map(raw.get("channels"))]
        self.channels_defined = bool(defined)
        content = raw.get("content")
        self.own_content = _map(content)
        self.content_scenes = {str(s) for s in _map(self.own_content.get("scenes"))}
        self.content_refs = {str(r) for r in _map(self.own_content.get("journeys"))}
        if self.own_content.get("inherit", True) is True:  # layered on the shipped content
            self.content_scenes.update(shipped_names("scenes"))
            self.content_refs.update(shipped_names("journeys"))
        # Without a channels section every name a content variant uses is a channel
        # (dry runs); with one, only the channels it defines.
        self.channel_names = defined or sorted({*CHANNEL_TYPES, *self._content_channels()})
        self.tags_set = self._tags_set()

    def run(self) -> tuple[list[Problem], list[Problem]]:
        for strategy in self.strategies:
            self._strategy(strategy)
        self._content()
        self._event_types()
        self._control()
        self._channel_caps()
        self._audience()
        self._audiences()
        return self.errors, self.warnings

    # -- helpers ---------------------------------------------------------------

    def _report(self, doc: Doc, text: str, path: Path, name: Any, known: list[str],
                warning: bool = False) -> None:
        from config.check import close_name

        problem = doc.problem(text, path, close_name(name, known),
                              "warning" if warning else "error")
        (self.warnings if warning else self.errors).append(problem)

    def _content_channels(self) -> set[str]:
        found: set[str] = set()
        for body in _map(self.own_content.get("scenes")).values():
            for variant in _list(_map(body).get("variants")):
                found.update(c for c in _list(_map(variant).get("channels")) if isinstance(c, str))
        return found

    def _tags_set(self) -> set[str]:
        tags = set(BEHAVIOUR_TAGS) | {CHURN_RISK_HIGH, CHURNED}  # the churn model sets these
        for strategy in self.strategies:
            for _, step, _ in strategy.steps():
                tag_step = _map(step.get("tag"))
                tags.update(t for t in _list(tag_step.get("add")) if isinstance(t, str))
        return tags

    def _tag(self, doc: Doc, where: str, field: str, tag: Any, path: Path) -> None:
        if not isinstance(tag, str) or tag in self.tags_set:
            return
        if tag.startswith(PREFERS) and (not self.channels_defined
                                        or tag[len(PREFERS):] in self.channel_names):
            return
        self._report(doc, f"{where}, field {field!r}: nothing sets tag {tag!r} (not a "
                     "behaviour tag, and no strategy's tag step adds it)", path, tag,
                     sorted(self.tags_set), warning=True)

    def _channel(self, doc: Doc, where: str, field: str, name: Any, path: Path,
                 listed: bool = False) -> None:
        """A warning, not an error: a deployment may leave a channel out on
        purpose (its sends are suppressed as ``no_channel``). A content
        variant's or cap's list may name any channel type not set up here."""
        if not isinstance(name, str) or name in self.channel_names or \
                (listed and name in CHANNEL_TYPES):
            return
        known = "the channels section" if self.channels_defined else "channel types"
        self._report(doc, f"{where}, field {field!r}: no channel named {name!r} (in {known}: "
                     f"{', '.join(self.channel_names)})", path, name, self.channel_names,
                     warning=True)

    # -- sections --------------------------------------------------------------

    def _strategy(self, s: _Strategy) -> None:
        names = [x.name for x in self.strategies]
        entry = _map(s.body.get("entry"))
        for scene, path in _names(entry.get("scene"), (*s.path, "entry", "scene")):
            if scene not in self.scenes:
                self._report(s.doc, f"{s.where()}, field 'entry.scene': no scene named "
                             f"{scene!r}", path, scene, self.scenes)
        for group in ("all", "any", "none"):
            for tag, path in _names(_map(entry.get("tags")).get(group),
                                    (*s.path, "entry", "tags", group)):
                self._tag(s.doc, s.where(), f"entry.tags.{group}", tag, path)
        ids = [str(step["id"]) for _, step, _ in s.steps() if "id" in step]
        targets = [*ids, EXIT, NEXT]
        for number, step, path in s.steps():
            where = s.where(number, step)
            send = _map(step.get("send"))
            for channel, cpath in [*_names(send.get("channel"), (*path, "send", "channel")),
                                   *_names(send.get("channels"), (*path, "send", "channels"))]:
                self._channel(s.doc, where, "send.channel", channel, cpath)
            ref = send.get("content")
            if isinstance(ref, str) and ref not in self.content_refs:
                self._report(s.doc, f"{where}, field 'send.content': no content "
                             f"{ref!r} in content.journeys (the generic message would go "
                             "out)", (*path, "send", "content"), ref, sorted(self.content_refs))
            enrol = step.get("enrol")
            if isinstance(enrol, str) and enrol not in names:
                self._report(s.doc, f"{where}, field 'enrol': no strategy named {enrol!r}",
                             (*path, "enrol"), enrol, names)
            self._branch(s, where, _map(step.get("branch")), (*path, "branch"), targets)

    def _branch(self, s: _Strategy, where: str, branch: dict[Any, Any], path: Path,
                targets: list[str]) -> None:
        for ci, case in enumerate(_list(branch.get("when"))):
            case = _map(case)
            cpath = (*path, "when", ci)
            goto = case.get("goto")
            if isinstance(goto, str) and goto not in targets:
                self._report(s.doc, f"{where}, field 'branch.when.{ci}.goto': no step with id "
                             f"{goto!r}", (*cpath, "goto"), goto, targets)
            self._channel(s.doc, where, f"branch.when.{ci}.channel", case.get("channel"),
                          (*cpath, "channel"))
            self._tag(s.doc, where, f"branch.when.{ci}.tag", case.get("tag"), (*cpath, "tag"))
        other = branch.get("else")
        if isinstance(other, str) and other not in targets:
            self._report(s.doc, f"{where}, field 'branch.else': no step with id {other!r}",
                         (*path, "else"), other, targets)

    def _content(self) -> None:
        doc = self.doc
        for scene in self.scenes:
            if scene not in self.content_scenes:
                doc_path: Path = ("scenes", scene)
                self.warnings.append(doc.problem(
                    f"scene {scene!r}: no content in content.scenes, shipped or "
                    "this config's (its triggers get the generic message)", doc_path,
                    severity="warning"))
        scenes = _map(self.own_content.get("scenes"))
        for name, body in scenes.items():
            path: Path = ("content", "scenes", name)
            if name not in self.scenes:
                self._report(doc, f"content.scenes {name!r}: no scene named {name!r} (this "
                             "content is never used)", path, name, self.scenes, warning=True)
            self._variants(f"content.scenes {name!r}", body, path)
        for ref, body in _map(self.own_content.get("journeys")).items():
            self._variants(f"content.journeys {ref!r}", body, ("content", "journeys", ref))

    def _variants(self, where: str, body: Any, path: Path) -> None:
        for i, variant in enumerate(_list(_map(body).get("variants"))):
            variant = _map(variant)
            vpath = (*path, "variants", i)
            label = f"{where}, variant {variant.get('name', i + 1)!r}"
            for j, channel in enumerate(_list(variant.get("channels"))):
                self._channel(self.doc, label, "channels", channel, (*vpath, "channels", j),
                              listed=True)
            when = _map(variant.get("when"))
            for group in ("tags_any", "tags_all"):
                for j, tag in enumerate(_list(when.get(group))):
                    self._tag(self.doc, label, f"when.{group}", tag, (*vpath, "when", group, j))

    def _event_types(self) -> None:
        from config.check import close_name

        for scene, body in _map(self.raw.get("scenes")).items():
            for field in PREDICATE_FIELDS:
                for etype, path in _types(_map(body).get(field), ("scenes", scene, field)):
                    if etype not in COMMON_EVENT_TYPES and close_name(etype,
                                                                      COMMON_EVENT_TYPES):
                        self._report(self.doc, f"scene {scene!r}, field '{field}.type': "
                                     f"{etype!r} is not an event type the stream is known to carry "
                                     "(a misspelt type never matches)", path, etype,
                                     list(COMMON_EVENT_TYPES), warning=True)

    def _control(self) -> None:
        per = _map(_map(_map(self.raw.get("strategies")).get("control")).get("per"))
        known = [*self.scenes, *(s.name for s in self.strategies)]
        for name in per:
            if name not in known:
                self._report(self.doc, f"section 'strategies', field 'control.per': no scene or "
                             f"strategy named {name!r}", ("strategies", "control", "per", name),
                             name, known)

    def _audience(self) -> None:
        audience = _map(_map(self.raw.get("delivery")).get("audience"))
        for i, name in enumerate(_list(audience.get("transactional_scenes"))):
            if isinstance(name, str) and name not in self.scenes:
                self._report(self.doc, f"section 'delivery', field 'audience."
                             f"transactional_scenes': no scene named {name!r}",
                             ("delivery", "audience", "transactional_scenes", i), name,
                             self.scenes, warning=True)
        types = (*CHANNEL_TYPES, ADS_CONSENT)  # ads: the ad-platform sync's (docs/ads.md)
        for kind in _map(audience.get("consent")):
            if kind not in types:
                self._report(self.doc, f"section 'delivery', field 'audience.consent': "
                             f"{kind!r} is not a channel type (consent is per type: "
                             f"{', '.join(types)})", ("delivery", "audience", "consent",
                                                      kind), kind, list(types))

    def _audiences(self) -> None:
        """``audiences:``: the scenes ``fired`` names exist; a journey's
        audience step names a ``journey: true`` audience (docs/ads.md)."""
        section = _map(self.raw.get("audiences"))
        for name, body in section.items():
            fired = _map(_map(body).get("fired"))
            for scene, path in _names(fired.get("scene"), ("audiences", name, "fired", "scene")):
                if scene not in self.scenes:
                    self._report(self.doc, f"audience {name!r}, field 'fired.scene': no scene "
                                 f"named {scene!r}", path, scene, self.scenes)
        journey = [str(n) for n, body in section.items() if _map(body).get("journey") is True]
        for s in self.strategies:
            for number, step, path in s.steps():
                for op in ("add", "remove"):
                    name = _map(step.get("audience")).get(op)
                    if not isinstance(name, str) or name in journey:
                        continue
                    why = ("has conditions: only a journey: true audience takes steps"
                           if name in section else "no journey audience of that name")
                    self._report(s.doc, f"{s.where(number, step)}, field 'audience.{op}': "
                                 f"{name!r}: {why}", (*path, "audience", op), name, journey)

    def _channel_caps(self) -> None:
        caps = _map(_map(self.raw.get("delivery")).get("channel_caps"))
        for name in caps:
            self._channel(self.doc, "section 'delivery'", "channel_caps", name,
                          ("delivery", "channel_caps", name), listed=True)
        handoff = _map(_map(_map(self.raw.get("strategies")).get("scoring")).get("handoff"))
        path: Path = ("strategies", "scoring", "handoff")
        self._channel(self.doc, "section 'strategies'", "scoring.handoff.channel",
                      handoff.get("channel"), (*path, "channel"))
        ref = handoff.get("content", "lead_handoff" if handoff else None)
        if isinstance(ref, str) and ref not in self.content_refs:
            self._report(self.doc, f"section 'strategies', field 'scoring.handoff.content': no "
                         f"content {ref!r} in content.journeys (the generic message is used)",
                         (*path, "content"), ref, sorted(self.content_refs), warning=True)


def _types(predicate: Any, path: Path) -> Iterator[tuple[str, Path]]:
    """The event types a predicate names (``type: x`` or ``type: {in: [...]}``),
    also inside nested conditions, each with its document path."""
    if isinstance(predicate, list):
        for i, item in enumerate(predicate):
            yield from _types(item, (*path, i))
    elif isinstance(predicate, dict):
        for key, value in predicate.items():
            if key != "type":
                yield from _types(value, (*path, key))
            elif isinstance(value, str):
                yield value, (*path, key)
            else:
                for i, item in enumerate(_list(_map(value).get("in"))):
                    if isinstance(item, str):
                        yield item, (*path, key, "in", i)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
