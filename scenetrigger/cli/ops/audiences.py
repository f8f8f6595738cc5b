"""``scenetrigger audiences sync | status | export``: live audience
membership to the ad platforms of the config's ``ads:`` section
(docs/ads.md, "Syncing to ad platforms").

``sync`` reads membership records (enter / exit) from the compacted topic
``PREFIX.audiences`` (``--broker``; from the beginning, then, with
``--follow``, as they come; an erasure's tombstone is an exit, reason
``erased``) or from a replay output file (``--from``: its
``"kind": "audience"`` lines) and adds or removes each user on every sink
that maps the audience. ``--dry-run`` builds and counts the batches and
sends nothing. ``--directory FILE`` reads contact points from a JSON-lines
file instead of Redis (tests, dry runs). ``status`` prints the sync's
counters; ``export`` every synced membership as JSON lines (ids, never
contact points); ``import-spend`` the ad spend ``report --by channel`` reads
(:mod:`scenetrigger.cli.ops.ad_spend`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from channels.transports.registry import DEFAULT_REDIS_URL, redis_url_or_env
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("audiences", help="sync live audiences to ad platforms; "
                                              "status; export; import ad spend")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (its ads: section and "
                                         "delivery.redis_prefix)")
    common.add_argument("--redis-url", default=None, help="Redis URL (default: "
                        f"$SCENETRIGGER_REDIS_URL or {DEFAULT_REDIS_URL})")
    common.add_argument("--json", action="store_true", help="print JSON")
    sync = actions.add_parser("sync", parents=[common],
                              help="add and remove audience members on the ad platforms")
    source = sync.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", metavar="FILE",
                        help="a replay output file (JSON lines; - for stdin)")
    source.add_argument("--broker", help="Kafka bootstrap: read PREFIX.audiences")
    sync.add_argument("--topic-prefix", help="PREFIX of PREFIX.audiences (as the worker's)")
    sync.add_argument("--follow", action="store_true",
                      help="with --broker: keep reading after the end (Ctrl-C stops)")
    sync.add_argument("--dry-run", action="store_true",
                      help="build and count batches; send nothing, record nothing")
    sync.add_argument("--directory", metavar="FILE",
                      help="contacts as JSON lines ({user_id, email, phone, consent: "
                           "{ads: true}}) instead of the Redis directory and consent")
    sync.set_defaults(run=run_sync)
    status = actions.add_parser("status", parents=[common],
                                help="batches and members sent, per sink, audience and op")
    status.set_defaults(run=run_status)
    export = actions.add_parser("export", parents=[common],
                                help="every synced membership as JSON lines")
    export.add_argument("--out", default="-", help="file to write (default: stdout)")
    export.set_defaults(run=run_export)
    from scenetrigger.cli.ops.ad_spend import register_import

    register_import(actions, common)


def _config(args: argparse.Namespace) -> Any:
    from config.loader import load_config

    config = load_config(args.config)
    if not config.ads.sinks:
        raise SceneTriggerError("the config has no ads: sinks (docs/ads.md)")
    return config


def _directory_file(path: str) -> tuple[Any, Any]:
    """Contacts (and their ``consent`` object, as ``users import`` reads it)
    from a JSON-lines file."""
    from channels.audience.consent import ConsentRecord, MemoryConsentStore
    from channels.audience.directory import ContactError, MemoryDirectory, contact_from

    directory, consent = MemoryDirectory(), MemoryConsentStore()
    number = 0
    try:
        with open(path, "rb") as fh:
            for line in fh:
                number += 1
                if line.strip():
                    data = orjson.loads(line)
                    granted = data.pop("consent", None) or {}  # as `users import` reads it
                    contact = contact_from(data.pop("user_id", ""), data)
                    directory.users[contact.user_id] = contact
                    for channel, yes in granted.items():
                        consent.records.setdefault(contact.user_id, {})[
                            f"{channel}:marketing"] = ConsentRecord(bool(yes), 0, "import")
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (orjson.JSONDecodeError, ContactError, AttributeError) as exc:
        raise SceneTriggerError(f"{path}:{number}: {exc}") from None
    return directory, consent


def run_sync(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    summary = run_async(_sync(args), args.redis_url)
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        mode = "dry run: " if summary["dry_run"] else ""
        print(f"{mode}{summary['records']:,} records ({summary['bad_records']} unreadable)")
        for name, n in sorted(summary["outcomes"].items()):
            print(f"  {name}: {n:,}")
        for key, row in sorted(summary["sinks"].items()):
            print(f"  {key}: {row['batches']} batches, {row['members']:,} members"
                  + (f", {row['failed_members']:,} failed" if row["failed_members"] else ""))
        if summary["pending"]:
            print(f"  pending (not sent; the records send them again): {summary['pending']:,}")
        if summary["resumed_removals"] or summary["unsent_removals_kept"]:
            print(f"  removals left by erasures: {summary['resumed_removals']:,} resumed, "
                  f"{summary['unsent_removals_kept']:,} still unsent (kept)")
    failed = any(row["failed_members"] for row in summary["sinks"].values())
    if summary["pending"] or failed or summary["unsent_removals_kept"]:
        print("scenetrigger: some members were not synced (see above)", file=sys.stderr)
        return 1
    return 0


async def _sync(args: argparse.Namespace) -> dict[str, Any]:
    from channels.ads.build import build_sync
    from channels.ads.membership import MembershipError
    from channels.ads.state import MemorySyncState, RedisSyncState
    from channels.audience.consent import RedisConsentStore

    config = _config(args)
    prefix = config.delivery.redis_prefix
    client = None
    if args.directory:
        directory, consent = _directory_file(args.directory)
        state: Any = MemorySyncState()
    else:
        from channels.audience.directory import RedisDirectory
        from channels.redis_client import redis_client

        client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)
        directory, consent = RedisDirectory(client, prefix), RedisConsentStore(client, prefix)
        state = MemorySyncState() if args.dry_run else RedisSyncState(client, prefix)
    sync = build_sync(config, directory, consent, state, dry_run=args.dry_run)
    records = bad = 0
    results = []
    try:
        resumed = await sync.resume_pending()  # removals an erasure could not send
        async for item in _records(args):
            if item is None:  # the topic was polled: batches past their linger go
                results.extend(await sync.flush(due_only=True))
                continue
            if isinstance(item, MembershipError):
                bad += 1
                print(f"scenetrigger: unreadable membership record: {item}", file=sys.stderr)
                continue
            records += 1
            await sync.apply(item)
            if records % 1000 == 0:
                results.extend(await sync.flush(due_only=True))
        results.extend(await sync.drain())
        unsent = await sync.keep_unsent()
    finally:
        await sync.close()
        if client is not None:
            await client.aclose()
    sinks: dict[str, dict[str, int]] = {}
    for r in results:
        row = sinks.setdefault(f"{r.sink} {r.audience} {r.op}",
                               {"batches": 0, "members": 0, "failed_members": 0, "retried": 0})
        if r.requeued:  # kept: a later flush (or the pending count) says how it ended
            row["retried"] += 1
            continue
        row["batches"] += 1
        row["members" if r.ok else "failed_members"] += r.members
    return {"dry_run": bool(args.dry_run), "records": records, "bad_records": bad,
            "resumed_removals": resumed, "unsent_removals_kept": unsent,
            "outcomes": dict(sorted(sync.outcomes.items())), "sinks": sinks,
            "pending": sync.pending(), "batches": [r.to_dict() for r in results]}


async def _records(args: argparse.Namespace) -> AsyncIterator[Any]:
    from channels.ads.membership import read_jsonl

    if args.source is not None:
        from scenetrigger.runtime.sources import open_input

        with open_input(args.source) as (stream, _size):
            for _number, item in read_jsonl(iter(stream)):
                yield item
        return
    async for item in _topic(args):
        yield item


async def _topic(args: argparse.Namespace) -> AsyncIterator[Any]:
    """Every record of PREFIX.audiences from the beginning to the end it had
    when we started (then on, with --follow)."""
    from aiokafka import TopicPartition

    from agents.faust_compat import refresh_metadata
    from agents.kafka_clients import started_reader
    from agents.topics import bootstrap_servers
    from channels.ads.membership import MembershipError, decode_record
    from triggers.audiences.record import AudienceTombstone

    if not args.topic_prefix:
        raise SceneTriggerError("--broker needs --topic-prefix (the topic is PREFIX.audiences)")
    topic = f"{args.topic_prefix}.audiences"
    bootstrap = bootstrap_servers(args.broker)
    consumer = await started_reader(bootstrap)
    try:
        deadline = time.monotonic() + 10
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise SceneTriggerError(f"no topic {topic} on {bootstrap}")
            await refresh_metadata(consumer)
            await asyncio.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        while args.follow or await _behind(consumer, assigned, ends):
            batch = await consumer.getmany(timeout_ms=500)
            yield None  # a poll: the caller sends what lingered long enough
            for records in batch.values():
                for record in records:
                    try:
                        found = decode_record(record.key, record.value)
                    except MembershipError as exc:
                        yield exc
                        continue
                    if isinstance(found, AudienceTombstone):  # an erasure: out where synced
                        yield found.as_exit(record.timestamp / 1000)
                    else:
                        yield found
    finally:
        await consumer.stop()


async def _behind(consumer: Any, assigned: list[Any], ends: dict[Any, int]) -> bool:
    for tp in assigned:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False


async def _state(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from channels.ads.state import RedisSyncState
    from channels.redis_client import redis_client

    config = _config(args)
    client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)
    return config, client, RedisSyncState(client, config.delivery.redis_prefix)


def run_status(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    async def main() -> dict[str, Any]:
        config, client, state = await _state(args)
        try:
            counters = await state.status()
            members: dict[str, int] = {}
            async for _user, name, _ts in state.entries():
                members[name] = members.get(name, 0) + 1
        finally:
            await client.aclose()
        rows = []
        for name, model in sorted(config.ads.sinks.items()):
            for audience, platform_id in sorted(model.audiences.items()):
                base = f"{name}|{platform_id}"
                rows.append({"sink": name, "type": model.type, "audience": audience,
                             "platform_audience": platform_id,
                             "synced_members": members.get(f"{name}|{audience}", 0),
                             **{f"{op}_{what}": counters.get(f"{base}|{op}|{what}", 0)
                                for op in ("add", "remove")
                                for what in ("batches", "members", "failed_members")}})
        return {"sinks": rows}

    status = run_async(main(), args.redis_url)
    if args.json:
        print(orjson.dumps(status).decode())
        return 0
    for row in status["sinks"]:
        print(f"{row['sink']} ({row['type']}) {row['audience']} -> {row['platform_audience']}: "
              f"{row['synced_members']:,} synced; added {row['add_members']:,} in "
              f"{row['add_batches']} batches, removed {row['remove_members']:,} in "
              f"{row['remove_batches']}; failed {row['add_failed_members']:,}+"
              f"{row['remove_failed_members']:,}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    async def main() -> list[bytes]:
        config, client, state = await _state(args)
        lines = []
        try:
            async for user, name, ts in state.entries():
                sink, _, audience = name.partition("|")
                model = config.ads.sinks.get(sink)
                lines.append(orjson.dumps({
                    "user_id": user, "sink": sink, "audience": audience,
                    "platform_audience": model.audiences.get(audience) if model else None,
                    "since_ms": ts}) + b"\n")
        finally:
            await client.aclose()
        return lines

    lines = run_async(main(), args.redis_url)
    if args.out == "-":
        sys.stdout.buffer.writelines(lines)
        sys.stdout.flush()
        return 0
    try:
        with open(args.out, "wb") as out:
            out.writelines(lines)
    except OSError as exc:
        raise SceneTriggerError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"{len(lines):,} memberships to {args.out}", file=sys.stderr)
    return 0
