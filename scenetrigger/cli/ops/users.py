"""``scenetrigger users import|get|set``: the user directory in Redis
(``users merge``: :mod:`scenetrigger.cli.ops.users_merge`).

``import FILE`` reads CSV (header row) or JSON lines and upserts each row:
the fields a row gives replace the stored ones, the others stay. CSV columns:
``user_id``, ``email``, ``phone``, ``openid``, ``locale``, ``timezone``,
``push`` (``platform:token`` pairs separated by ``;``), ``attr.<name>`` (free
attributes) and ``consent.<channel>`` (``yes``/``no``: marketing consent on
that channel type, source ``import``; ``cli`` for ``set``). A JSON line has the same fields, with
``push`` a list of ``{platform, token}``, ``attributes`` an object and
``consent`` an object of booleans. Bad rows are reported with their line and
reason (``--rejects FILE`` writes them as JSON lines) and never stop the import.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import orjson

from channels.audience.consent import ConsentRecord, ConsentStore, RedisConsentStore
from channels.audience.directory import Contact, ContactError, RedisDirectory, contact_from
from channels.redis_client import DEFAULT_REDIS_URL, redis_url_or_env
from config.clock import wall_ms
from scenetrigger.cli.ops import users_merge
from scenetrigger.cli.support import progress_bar
from scenetrigger.runtime.sources import open_input
from triggers.dates import ATTRIBUTES, NOT_ATTRIBUTES, parse_date
from triggers.errors import SceneTriggerError

_BATCH = 500
T = TypeVar("T")
_YES = {"yes", "true", "1", "y", "granted"}
_NO = {"no", "false", "0", "n", "withdrawn"}


def register(sub: Any) -> None:
    parser = sub.add_parser("users", help="the user directory: import, get, set; merge")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis-url", default=None, help="Redis URL (default: "
                        f"$SCENETRIGGER_REDIS_URL or {DEFAULT_REDIS_URL})")
    common.add_argument("--prefix", default="st:", help="Redis prefix (delivery.redis_prefix)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--broker", help="Kafka bootstrap: consent changes also go to the "
                                         "events topic (subscribed / unsubscribed events)")
    common.add_argument("--topic-prefix", help="PREFIX.events (as the worker's --topic-prefix)")
    imp = actions.add_parser("import", parents=[common],
                             help="upsert users from CSV or JSON lines")
    imp.add_argument("file", help="CSV (with a header) or JSONL file; - for stdin")
    imp.add_argument("--format", choices=("auto", "csv", "jsonl"), default="auto")
    imp.add_argument("--rejects", help="write rejected rows (line, reason) as JSON lines here")
    imp.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    imp.add_argument("--events", metavar="FILE",
                     help="also write an `attributes` event (JSON lines) per imported user "
                          "with date attributes (attr.birthday=1990-06-17), for the engine's "
                          "date scenes: produce or replay it (docs/timing.md)")
    imp.set_defaults(run=run_import)
    get = actions.add_parser("get", parents=[common], help="show one user's record and consent")
    get.add_argument("user", help="user id")
    get.set_defaults(run=run_get)
    put = actions.add_parser("set", parents=[common],
                             help="change fields of one user (creates the user)")
    put.add_argument("user", help="user id")
    put.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                     help="email=, phone=, openid=, locale=, timezone=, attr.NAME=, "
                          "push=platform:token;..., consent.CHANNEL=yes|no (empty value clears)")
    put.set_defaults(run=run_set)
    users_merge.register(actions)


@dataclass(slots=True)
class Row:
    line: int
    user_id: str
    fields: dict[str, Any]
    consent: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class Rejected:
    line: int
    reason: str


def parse_cells(cells: dict[str, str]) -> tuple[dict[str, Any], dict[str, bool]]:
    """CSV cells (or ``set``'s FIELD=VALUE) as directory fields and consent flags."""
    fields: dict[str, Any] = {}
    consent: dict[str, bool] = {}
    attrs: dict[str, Any] = {}
    for name, raw in cells.items():
        value = (raw or "").strip()
        if name.startswith("attr."):
            attrs[name[5:]] = value or None
        elif name.startswith("consent."):
            if value.lower() in _YES | _NO:
                consent[name[8:]] = value.lower() in _YES
            elif value:
                raise ContactError(f"{name}: say yes or no, not {value!r}")
        elif name == "push":
            fields["push"] = _push_cell(value)
        else:
            fields[name] = value or None
    if attrs:
        fields["attributes"] = attrs
    return fields, consent


def _push_cell(value: str) -> list[dict[str, str]]:
    out = []
    for pair in filter(None, (p.strip() for p in value.split(";"))):
        platform, sep, token = pair.partition(":")
        if not sep or not platform or not token:
            raise ContactError(f"push: {pair!r} is not platform:token")
        out.append({"platform": platform.strip(), "token": token.strip()})
    return out


def read_rows(lines: Iterator[bytes], fmt: str) -> Iterator[Row | Rejected]:
    if fmt == "jsonl":
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                item = orjson.loads(raw)
                if not isinstance(item, dict):
                    raise ContactError("not a JSON object")
                user_id = item.pop("user_id", None)
                consent = item.pop("consent", None) or {}
                if not isinstance(consent, dict) or not all(
                        isinstance(v, bool) for v in consent.values()):
                    raise ContactError("consent: must be an object of true/false")
                if user_id is None or user_id == "":
                    raise ContactError("user_id: missing")
                if not isinstance(user_id, str):
                    raise ContactError(f"user_id: must be a string, not {type(user_id).__name__}")
                yield Row(number, user_id, item, consent)
            except (orjson.JSONDecodeError, ContactError) as exc:
                yield Rejected(number, str(exc))
        return
    text = (line.decode("utf-8-sig" if n == 0 else "utf-8", errors="replace")
            for n, line in enumerate(lines))
    reader = csv.DictReader(text)
    if reader.fieldnames is not None and "user_id" not in reader.fieldnames:
        # Not a rejected row each: the file is not a user list (or not CSV at all).
        raise SceneTriggerError("users import: the CSV header has no user_id column (it has: "
                                f"{', '.join(reader.fieldnames)[:200]})")
    for cells in reader:
        number = reader.line_num
        try:
            user_id = (cells.pop("user_id", None) or "").strip()
            if not user_id:
                raise ContactError("user_id: missing")
            if None in cells:
                raise ContactError("more cells than header columns")
            fields, consent = parse_cells(cells)
            yield Row(number, user_id, fields, consent)
        except ContactError as exc:
            yield Rejected(number, str(exc))


async def upsert(directory: RedisDirectory, consent: ConsentStore, row: Row,
                 now_ms: int, source: str = "import") -> Contact:
    old = await directory.get(row.user_id)
    contact = (old.merged(row.fields) if old is not None
               else contact_from(row.user_id, row.fields))
    await directory.put(contact)
    for channel, granted in row.consent.items():
        await consent.set(row.user_id, channel, "marketing",
                          ConsentRecord(granted, now_ms, source))
    return contact


def run_async(main: Coroutine[Any, Any, T], url: str | None) -> T:
    """Run a command's coroutine; a Redis that cannot be reached is a clear error."""
    from redis.exceptions import RedisError

    try:
        return asyncio.run(main)
    except (RedisError, OSError) as exc:
        raise SceneTriggerError(f"Redis at {redis_url_or_env(url)}: {exc}") from None


def run_import(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        events = None
        if args.events:
            try:
                events = stack.enter_context(open(args.events, "wb"))
            except OSError as exc:
                raise SceneTriggerError(f"--events: cannot write {args.events}: "
                                        f"{exc.strerror or exc}") from None
        counts, rejects = run_async(_import(args, events), args.redis_url)
    if args.rejects:
        with open(args.rejects, "wb") as out:
            for rej in rejects:
                out.write(orjson.dumps({"line": rej.line, "reason": rej.reason}) + b"\n")
    if args.json:
        print(orjson.dumps({**counts, "rejects": [{"line": r.line, "reason": r.reason}
                                                  for r in rejects[:100]]}).decode())
    else:
        print(f"users: {counts['imported']:,} upserted, {counts['rejected']:,} rejected",
              file=sys.stderr)
        for rej in rejects[:20]:
            print(f"  line {rej.line}: {rej.reason}", file=sys.stderr)
        if len(rejects) > 20:
            print(f"  ... and {len(rejects) - 20:,} more (--rejects FILE lists all)",
                  file=sys.stderr)
    return 0 if not rejects else 2


async def _import(args: argparse.Namespace, events: IO[bytes] | None = None,
                  ) -> tuple[dict[str, int], list[Rejected]]:
    counts = {"imported": 0, "rejected": 0}
    rejects: list[Rejected] = []
    async with _stores(args) as (directory, consent):
        with open_input(args.file) as (stream, size):
            fmt = args.format
            if fmt == "auto":
                fmt = "jsonl" if args.file.endswith((".jsonl", ".json", ".ndjson")) else "csv"
            # A pipe has no size and no position: no bar for it.
            bar = progress_bar(size, args.no_progress or size is None, "users")
            batch: list[Row] = []
            now_ms = wall_ms()
            for item in read_rows(stream, fmt):
                if isinstance(item, Rejected):
                    rejects.append(item)
                    continue
                batch.append(item)
                if len(batch) >= _BATCH:
                    await _flush(directory, consent, batch, rejects, counts, now_ms, events)
                    if bar is not None:
                        bar.update_to(stream.tell())
            await _flush(directory, consent, batch, rejects, counts, now_ms, events)
            if bar is not None:
                bar.close()
    counts["rejected"] = len(rejects)
    return counts, rejects


async def _flush(directory: RedisDirectory, consent: ConsentStore, batch: list[Row],
                 rejects: list[Rejected], counts: dict[str, int], now_ms: int,
                 events: IO[bytes] | None = None) -> None:
    """One batch in three round trips: read the stored records, write the
    merged ones, write the consent flags. A row seen twice in a batch: the last wins."""
    from redis.exceptions import RedisError

    rows = list({row.user_id: row for row in batch}.values())
    try:
        olds = await directory.get_many([row.user_id for row in rows])
        good: list[tuple[Row, Contact, Contact | None]] = []
        for row, old in zip(rows, olds, strict=True):
            try:
                contact = (old.merged(row.fields) if old is not None
                           else contact_from(row.user_id, row.fields))
            except ContactError as exc:
                rejects.append(Rejected(row.line, str(exc)))
                continue
            good.append((row, contact, old))
        await directory.put_many([c for _, c, _ in good], [o for _, _, o in good])
        for row, contact, _old in good:
            for channel, granted in row.consent.items():
                await consent.set(row.user_id, channel, "marketing",
                                  ConsentRecord(granted, now_ms, "import"))
            event = attributes_event(row, contact, now_ms) if events is not None else None
            if event is not None:
                assert events is not None
                events.write(orjson.dumps(event) + b"\n")
    except (RedisError, OSError) as exc:
        raise SceneTriggerError(f"cannot write to Redis: {exc}") from None
    counts["imported"] += len(batch) - (len(rows) - len(good))
    batch.clear()


def attributes_event(row: Row, contact: Contact, now_ms: int) -> dict[str, Any] | None:
    """The engine's view of a row's date attributes (triggers.dates): an
    ``attributes`` event with each date (or ``null``: removed) and the
    user's zone; None when the row names no date attribute."""
    attrs = row.fields.get("attributes") or {}
    dates = {name: value for name, value in attrs.items()
             if name not in NOT_ATTRIBUTES and (value is None or parse_date(value) is not None)}
    if not dates:
        return None
    event: dict[str, Any] = {"user_id": row.user_id, "ts": now_ms, "type": ATTRIBUTES, **dates}
    if contact.timezone:
        event["tz"] = contact.timezone
    return event


@contextlib.asynccontextmanager
async def _stores(args: argparse.Namespace) -> AsyncIterator[tuple[RedisDirectory,
                                                                   ConsentStore]]:
    """The directory and consent in Redis; with ``--broker`` every consent
    change is also an event on the events topic. Closed on the way out."""
    from channels.redis_client import redis_client

    client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        consent: ConsentStore = RedisConsentStore(client, args.prefix)
        if args.broker:
            from agents.kafka_clients import new_producer
            from agents.topics import bootstrap_servers, topic_name
            from channels.audience.consent_http import StreamedConsent
            from channels.feedback.kafka_sink import KafkaFeedbackSink

            producer = new_producer(bootstrap_servers(args.broker))
            await producer.start()
            stack.push_async_callback(producer.stop)
            consent = StreamedConsent(consent, KafkaFeedbackSink(producer, [topic_name(
                args.topic_prefix, "events")]))
        yield RedisDirectory(client, args.prefix), consent


def run_get(args: argparse.Namespace) -> int:
    async def main() -> dict[str, Any] | None:
        async with _stores(args) as (directory, consent):
            contact = await directory.get(args.user)
            if contact is None:
                return None
            held = await consent.all(args.user)
            return {**contact.to_dict(), "consent": {k: v.to_dict() for k, v in held.items()}}

    found = run_async(main(), args.redis_url)
    if found is None:
        raise SceneTriggerError(f"no user {args.user!r} in the directory")
    print(orjson.dumps(found, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


def run_set(args: argparse.Namespace) -> int:
    cells = {}
    for item in args.fields:
        name, sep, value = item.partition("=")
        if not sep:
            raise SceneTriggerError(f"{item!r}: write FIELD=VALUE")
        cells[name] = value
    try:
        fields, flags = parse_cells(cells)
    except ContactError as exc:
        raise SceneTriggerError(str(exc)) from None

    async def main() -> dict[str, Any]:
        async with _stores(args) as (directory, consent):
            try:
                contact = await upsert(directory, consent, Row(0, args.user, fields, flags),
                                       wall_ms(), "cli")
            except ContactError as exc:
                raise SceneTriggerError(str(exc)) from None
            held = await consent.all(args.user)  # shown as `users get` shows the record
            return {**contact.to_dict(), "consent": {k: v.to_dict() for k, v in held.items()}}

    record = run_async(main(), args.redis_url)
    print(orjson.dumps(record, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0
