"""``scenetrigger preview NAME``: every variant of a scene's (or, with
``--journey``, a journey step's content ref's) content rendered in full,
subject, text and HTML, for one user profile: a user of a recorded event file
(``--events FILE --user ID``, replayed in memory) or a synthetic one
(``--style``, ``--segment``, ``--locale``, ``--tag``). No Redis: products come
from ``--catalog FILE`` or a sample product."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from typing import Any

import orjson

from channels.assembly import file_catalog
from channels.audience.recipient import open_recipient
from channels.content.catalog import MemoryCatalog, Product
from channels.content.select import ContentSelector, VariantPreview
from config.check import close_name
from config.loader import load_config
from config.models import AppConfig
from scenetrigger.runtime.replay import new_engine, replay
from scenetrigger.runtime.sources import FORMATS, open_input, pick_format, read_events
from triggers.classify import SEGMENTS, STYLES, Segmentation
from triggers.errors import SceneTriggerError
from triggers.events import Trigger
from triggers.state import UserState

SAMPLE = Product("sample-1", "Sample product", 9_900, "https://shop.example/p/sample-1",
                 "https://shop.example/img/sample-1.jpg", "sample category", "Sample brand")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "preview", help="render every content variant of a scene or journey step for a user",
        description="Render every variant (subject, text, HTML) of a scene's content, or of "
                    "a journey content ref with --journey, for a user from recorded events "
                    "or a synthetic profile. Needs no Redis.")
    parser.add_argument("name", help="scene name (or content ref with --journey)")
    parser.add_argument("--config", help="config file (default: the shipped scenes)")
    parser.add_argument("--journey", action="store_true",
                        help="NAME is a journey send step's content ref (content.journeys)")
    parser.add_argument("--events", help="replay this events file to get --user's profile")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="--events format")
    parser.add_argument("--user", default="preview-user", help="user id (with --events: whose "
                        "profile; default preview-user)")
    parser.add_argument("--style", choices=STYLES, help="browsing style (overrides the profile's)")
    parser.add_argument("--segment", choices=SEGMENTS,
                        help="value segment (overrides the profile's)")
    parser.add_argument("--tag", action="append", default=[],
                        help="a habit tag the user holds, e.g. tod:evening (repeatable)")
    parser.add_argument("--locale", help="the user's locale: picks `when: {locale: [...]}` "
                                         "variants and fills ${user.locale}")
    parser.add_argument("--key", help="the trigger's key, e.g. a product id (default: the "
                        "profile's last product)")
    parser.add_argument("--catalog", help="product catalog file (default: one sample product)")
    parser.add_argument("--json", action="store_true", help="print the variants as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _check_name(config, args.name, args.journey)
    state, now_ms = _profile(config, args)
    profile = state.profile if state is not None else None
    key = args.key or (profile.last_product if profile is not None else None)
    catalog = file_catalog(args.catalog)
    if catalog is None:  # the sample product stands in for the user's product and category
        key = key or SAMPLE.product_id
        catalog = MemoryCatalog([replace(
            SAMPLE, product_id=key,
            category=(profile.last_category if profile else None) or SAMPLE.category)])
    selector = ContentSelector(config.content, catalog, config.delivery.default_timezone)
    seg = selector.segment(state, now_ms)
    seg = Segmentation(args.style or seg.style, args.segment or seg.segment,
                       tuple(dict.fromkeys([*seg.tags, *args.tag])))
    trigger = Trigger(args.name, args.user, None if args.journey else key, now_ms)
    recipient = open_recipient(args.user, profile=profile, locale=args.locale)
    previews = asyncio.run(selector.every_variant(trigger, state, seg, args.journey,
                                                  recipient))
    user = {"user.id": args.user, **({"user.locale": args.locale} if args.locale else {})}
    rendered = [_as_dict(p, user) for p in previews]
    if args.json:
        out = {"name": args.name, "journey": args.journey, "user_id": args.user,
               "style": seg.style, "segment": seg.segment, "tags": list(seg.tags),
               "locale": args.locale, "key": trigger.key, "variants": rendered}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    what = "journey content" if args.journey else "scene"
    print(f"{what} {args.name!r} for user {args.user!r}: style {seg.style}, segment "
          f"{seg.segment}, tags {', '.join(seg.tags) or '-'}, locale {args.locale or '-'}, "
          f"key {trigger.key or '-'}")
    if args.catalog is None:
        print("(products: a sample product stands in; --catalog FILE for real ones. Without a "
              "catalog, replay and deliver\n skip a variant that needs products: the next one, "
              "or the generic message, goes out)")
    for item in rendered:
        print(_render(item))
    return 0


def _check_name(config: AppConfig, name: str, journey: bool) -> None:
    known = list(config.content.journeys) if journey else list(config.scenes)
    if name in known:
        return
    hint = close_name(name, known)
    section = "content.journeys" if journey else "scenes"
    raise SceneTriggerError(f"no {'content ref' if journey else 'scene'} {name!r} in "
                            f"{section}" + (f" (did you mean {hint!r}?)" if hint else ""))


def _profile(config: AppConfig, args: argparse.Namespace) -> tuple[UserState | None, int]:
    """The user's state after replaying ``--events`` (and the clock then), or none."""
    if args.events is None:
        return None, 0
    engine = new_engine(config, profiles=True)
    with open_input(args.events) as (stream, _size):
        fmt, lines = pick_format(args.format, stream, args.events)
        replay(read_events(lines, fmt, config.engine.max_line_bytes, config.id_limits()),
               engine, lambda _t: None)
    state = engine.store.get(args.user)
    if state is None:
        raise SceneTriggerError(f"user {args.user!r} has no events in {args.events}")
    return state, engine.clock


def _as_dict(preview: VariantPreview, user: dict[str, str]) -> dict[str, Any]:
    choice = preview.choice
    content = choice.render(user=user)
    return {"variant": choice.variant, "fallback": choice.fallback,
            "matches": preview.matches, "chosen": preview.chosen,
            "channels": list(choice.channels),
            "products": [p.product_id for p in choice.products],
            "no_products": preview.no_products,
            "subject": content.subject, "text": content.text, "html": content.html}


def _render(item: dict[str, Any]) -> str:
    marks = []
    if item["chosen"]:
        marks.append("CHOSEN: this user gets it")
    elif not item["matches"]:
        marks.append("its when does not hold for this user")
    elif item["no_products"]:
        marks.append("passed over: the catalog has no products for it")
    head = f"== {item['variant']}{' (fallback)' if item['fallback'] else ''}"
    lines = [head + (f"  [{'; '.join(marks)}]" if marks else ""),
             f"   channels: {', '.join(item['channels'])}",
             f"   subject:  {item['subject']}", "   text:"]
    lines += [f"     {line}" for line in item["text"].splitlines() or [""]]
    if item["html"] is not None:
        lines.append("   html:")
        lines += [f"     {line}" for line in item["html"].splitlines() or [""]]
    return "\n".join(lines)
