"""How a long-running command gets its config and follows changes: from the
versioned store (``--config-store kafka`` or a directory; :mod:`config.versions`)
or a ``--config`` file, through the one :class:`config.reload.ConfigReloader`.

The store's current version is the start; when there is none yet (or it does
not validate here) the ``--config`` file is. Every ``--reload-interval`` the
reloader takes a newer version (or a changed file) if it validates and the
process can apply it; else it keeps the config it runs and counts a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from config.loader import DEFAULT_CONFIG_PATH, load_config, load_config_text
from config.reload import ConfigReloader, ReloadMetrics
from config.versions import DirectoryStore, VersionStore, current, digest_of, running
from scenetrigger.cli.support import duration
from triggers.errors import ConfigError

log = logging.getLogger(__name__)
KAFKA = "kafka"


def add_arguments(parser: argparse.ArgumentParser, *, interval: bool = True) -> None:
    parser.add_argument("--config-store", metavar="STORE",
                        help="follow the versioned config: 'kafka' (the PREFIX.config topic on "
                             "--broker) or a directory (embedded mode); see `config push`")
    if interval:
        parser.add_argument("--reload-interval", type=duration, default=None,
                            help="check the store (or the --config file) this often "
                                 "(default 5s with --config-store, else off)")


def open_store(spec: str | None, broker: str | None = None, topic_prefix: str | None = None,
               replication: int | None = None) -> VersionStore | None:
    if not spec:
        return None
    if spec == KAFKA:
        from agents.config_store import KafkaVersionStore
        from agents.topics import bootstrap_servers, topic_name

        return KafkaVersionStore(bootstrap_servers(broker), topic_name(topic_prefix, "config"),
                                 replication)
    return DirectoryStore(spec)


async def initial_reloader(config_path: str | None, store: VersionStore | None,
                           metrics: ReloadMetrics | None) -> ConfigReloader:
    """The reloader holding the start config (see the module doc)."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    if store is not None:
        versions = await store.versions()
        latest = current(versions)
        found = running(versions) if latest is not None and latest.experiment else None
        if found is not None:  # an experiment: its base in force, its candidate beside
            reloader = ConfigReloader(path, load_config(path), store=store, metrics=metrics,
                                      digest="")
            if reloader.offer_experiment(*found):
                return reloader
            log.error("the running config experiment does not validate here; starting "
                      "with the --config file")
        elif latest is not None:
            try:
                config = load_config_text(latest.text, source=f"config v{latest.version}")
            except ConfigError as exc:
                log.error("the current config version does not validate here; starting "
                          "with the --config file", extra={"problems": exc.problems})
                if metrics is not None:
                    metrics.failures.inc()
            else:
                reloader = ConfigReloader(path, config, store=store, metrics=metrics,
                                          digest=latest.digest)
                reloader.status.stored_version = latest.version
                return reloader
    config = load_config(path)
    text = path.read_text(encoding="utf-8")
    return ConfigReloader(path, config, store=store, metrics=metrics, digest=digest_of(text))


def interval_ms(args: argparse.Namespace) -> int:
    given = getattr(args, "reload_interval", None)
    if given is not None:
        return int(given)
    return 5_000 if getattr(args, "config_store", None) else 0


async def check_once(reloader: ConfigReloader) -> bool:
    """One look at the source: the store if there is one, else the file."""
    if reloader.store is not None:
        return await reloader.follow()
    return reloader.poll()


@contextlib.asynccontextmanager
async def following(reloader: ConfigReloader, every_ms: int) -> AsyncIterator[None]:
    """Check the source every ``every_ms`` while the block runs (0: never)."""
    if every_ms <= 0:
        yield
        return

    from channels.infra_retry import stop_task

    async def loop() -> None:
        # A check whose client swallows the cancellation must not follow on.
        while not stopping.is_set():
            await asyncio.sleep(every_ms / 1000)
            try:
                await check_once(reloader)
            except Exception:  # following must never stop the process
                log.exception("config follow failed")

    stopping = asyncio.Event()
    task = asyncio.create_task(loop(), name="scenetrigger-config-follow")
    try:
        yield
    finally:
        stopping.set()
        await stop_task(task, "config follow")
        close = getattr(reloader.store, "close", None)
        if close is not None:  # e.g. the Kafka store's reader: bounded like the task
            await stop_task(asyncio.ensure_future(close()), "config store close", cancel=False)


def refusing(apply: Callable[[Any], Any]) -> Callable[[Any], None]:
    """A listener that turns a process's own refusal (any SceneTriggerError,
    e.g. a channel's missing secret) into the ConfigError the reloader reports."""
    from triggers.errors import SceneTriggerError

    def listener(config: Any) -> None:
        try:
            apply(config)
        except ConfigError:
            raise
        except SceneTriggerError as exc:
            raise ConfigError([str(exc)]) from None

    return listener
