"""``scenetrigger users merge OLD NEW``: two known users are one person (an
admin action; docs/security.md, "Identity").

No event from a client or the shop's backend moves a known user: an
``identify`` only names an anonymous id's known user. This command sends the
one statement that may, a ``merge_users`` event (a reserved type no client
can send), to the events topic keyed by OLD: the worker folds OLD's state
into NEW's, OLD then stands for NEW, and the ids that stood for OLD stand for
NEW. A merge that would close a cycle (NEW already stands for OLD) is refused
by the worker and dead-lettered with the reason ``identity_cycle``.

It needs an admin token (``$SCENETRIGGER_TOKEN``, one of the configured
``$SCENETRIGGER_ADMIN_TOKEN(S)``); the decision log gets a record under
both ids (``outcome: merged``, ``rule: admin_merge``, who and when): on the
decisions topic, and in ``--decisions FILE`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import orjson

from channels.feedback.decisions import DecisionRecord, FileDecisionLog
from config.clock import wall_ms
from config.versions import TOKEN_ENV, author_of
from triggers.errors import SceneTriggerError
from triggers.events import DEFAULT_MAX_ID_CHARS
from triggers.merge import ADMIN_MERGE

OUTCOME_MERGED = "merged"
RULE_ADMIN_MERGE = "admin_merge"


def register(actions: Any) -> None:
    merge = actions.add_parser(
        "merge", help="merge known user OLD into known user NEW (admin; decision-logged)",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    merge.add_argument("old", help="the known user id that goes away (it stands for NEW after)")
    merge.add_argument("new", help="the known user id that stays")
    merge.add_argument("--broker", required=True,
                       help="Kafka bootstrap (the worker applies the merge)")
    merge.add_argument("--topic-prefix", help="PREFIX.events and PREFIX.decisions "
                                              "(as the worker's --topic-prefix)")
    merge.add_argument("--decisions", metavar="FILE",
                       help="also append the decision records to this decision log file")
    merge.add_argument("--json", action="store_true", help="print the result as one JSON line")
    merge.set_defaults(run=run)


def merge_statement(old: str, new: str, author: str, ts: int) -> tuple[dict[str, Any],
                                                                      list[DecisionRecord]]:
    """The event the worker applies and the decision records of the merge."""
    for name, value in (("OLD", old), ("NEW", new)):
        if not value or len(value) > DEFAULT_MAX_ID_CHARS or not value.isprintable():
            raise SceneTriggerError(f"{name}: a user id of 1 to {DEFAULT_MAX_ID_CHARS} "
                                    "printable characters")
    if old == new:
        raise SceneTriggerError("OLD and NEW are the same id: nothing to merge")
    event = {"user_id": old, "ts": ts, "type": ADMIN_MERGE, "known_id": new, "by": author}
    figures = f"{old} merged into {new} by {author}"
    records = [DecisionRecord(ts, user, f"merge:{old}:{new}:{ts}", "identity", OUTCOME_MERGED,
                              RULE_ADMIN_MERGE, figures) for user in (old, new)]
    return event, records


def run(args: argparse.Namespace) -> int:
    author = author_of(os.environ.get(TOKEN_ENV))
    event, records = merge_statement(args.old, args.new, author, wall_ms())
    asyncio.run(_send(args, event, records))
    if args.decisions:
        log = FileDecisionLog(args.decisions)
        for record in records:
            log.write(record)
        log.close()
    result = {"merged": args.old, "into": args.new, "by": author, "ts": event["ts"],
              "event": event, "decisions": [r.to_dict() for r in records]}
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"sent: {args.old} merged into {args.new} by {author} (the worker applies it; a "
              "cycle is dead-lettered as identity_cycle)", file=sys.stderr)
    return 0


async def _send(args: argparse.Namespace, event: dict[str, Any],
                records: list[DecisionRecord]) -> None:
    from agents.kafka_clients import new_producer
    from agents.topics import bootstrap_servers, topic_name

    producer = new_producer(bootstrap_servers(args.broker))
    await producer.start()
    try:
        await producer.send_and_wait(topic_name(args.topic_prefix, "events"),
                                     orjson.dumps(event), key=args.old.encode())
        for record in records:
            await producer.send_and_wait(topic_name(args.topic_prefix, "decisions"),
                                         record.encode(), key=record.user_id.encode())
    finally:
        await producer.stop()
