"""The ``scenetrigger`` command line. Each subcommand lives in its own module
under :mod:`scenetrigger.cli` and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scenetrigger import __version__
from scenetrigger.cli.logs import setup_logging
from triggers.errors import SceneTriggerError

# Subcommand modules, imported lazily so `scenetrigger replay` never loads Faust.
COMMANDS: dict[str, str] = {
    "replay": "scenetrigger.cli.run.replay",
    "check-config": "scenetrigger.cli.change.check_config",
    "demo": "scenetrigger.cli.run.demo",
    "worker": "scenetrigger.cli.run.worker",
    "fanout": "scenetrigger.cli.run.fanout",
    "produce": "scenetrigger.cli.run.produce",
    "collector": "scenetrigger.cli.run.collector",
    "redrive": "scenetrigger.cli.ops.redrive",
    "catalog": "scenetrigger.cli.ops.catalog",
    "serve": "scenetrigger.cli.run.serve",
    "report": "scenetrigger.cli.ops.report",
    "journeys": "scenetrigger.cli.run.journeys",
    "deliver": "scenetrigger.cli.run.deliver",
    "profiles": "scenetrigger.cli.run.profiles",
    "export": "scenetrigger.cli.ops.export",
    "users": "scenetrigger.cli.ops.users",
    "diff": "scenetrigger.cli.change.diff",
    "explain": "scenetrigger.cli.ops.explain",
    "console": "scenetrigger.cli.run.console",
    "erase": "scenetrigger.cli.ops.erase",
    "export-user": "scenetrigger.cli.ops.export_user",
    "migrate": "scenetrigger.cli.ops.migrate",
    "preview": "scenetrigger.cli.change.preview",
    "config": "scenetrigger.cli.change.config_cmd",
    "hash-keys": "scenetrigger.cli.ops.hash_keys",
    "audiences": "scenetrigger.cli.ops.audiences",
    "slot-sig": "scenetrigger.cli.sign.slot_sig",
    "inbox-token": "scenetrigger.cli.sign.inbox_token",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenetrigger", description="Real-time scene triggers for e-commerce clickstreams."
    )
    parser.add_argument("--version", action="version", version=f"scenetrigger {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="log level (default: WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, module_name in COMMANDS.items():
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=f"see scenetrigger {name} --help")
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    setup_logging(args.log_level)
    try:
        code: int = args.run(args)
    except SceneTriggerError as exc:
        print(f"scenetrigger: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = unreachable_service(exc)
        if message is None:
            raise
        print(f"scenetrigger: {message}", file=sys.stderr)
        return 1
    return code


def unreachable_service(exc: BaseException) -> str | None:
    """One line for a Kafka or Redis that cannot be reached, wherever a
    command first touches it; None for anything else (a bug: its traceback
    stays). Checked through sys.modules: a command that never loaded the
    client library cannot have raised its error, and ``--help`` stays fast."""
    kafka_errors = sys.modules.get("aiokafka.errors")
    if kafka_errors is not None and isinstance(exc, kafka_errors.KafkaConnectionError):
        return (f"cannot reach Kafka ({exc}): is the broker running and is --broker "
                "(or $SCENETRIGGER_KAFKA) its HOST:PORT?")
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is not None and isinstance(exc, redis_errors.ConnectionError):
        return (f"cannot reach Redis ({exc}): is it running and is --redis-url "
                "(or $SCENETRIGGER_REDIS_URL) its redis://HOST:PORT/DB?")
    return None


if __name__ == "__main__":
    raise SystemExit(main())
