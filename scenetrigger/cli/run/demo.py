"""``scenetrigger demo``: the embedded engine on a live synthetic clickstream.

No Kafka and no Redis: persona events are generated in-process, the scenes
run on an accelerated clock, every trigger is printed with the persona and
the message that would be sent, and a live page plus ``/metrics`` are served.
``--deliver live`` sends the messages for real (Redis inbox, a webhook the
demo receives itself: :mod:`scenetrigger.demo.live`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from channels.pipeline import Outcome
from channels.policy.decide import Calendar
from config.loader import load_config
from config.strategy_models import StrategyModel
from config.tokens import CATALOG_TOKEN_ENV
from scenetrigger.demo.content import (
    CONTENT_SOURCES,
    PipelineContent,
    demo_journeys,
    pick_content,
)
from scenetrigger.demo.live import DEMO_LIVE_CONFIG, LiveDelivery, RedisUnavailable, start_live
from scenetrigger.demo.personas import PERSONA_LABELS, PERSONAS, Clickstream
from scenetrigger.runtime.catalog_join import catalog_join
from scenetrigger.runtime.embedded import EmbeddedRuntime, RuntimeStats, TriggerRecord
from scenetrigger.runtime.replay import new_host
from strategies.actions import (
    Action,
    AudienceAction,
    EnrolAction,
    ExitAction,
    HandoffAction,
    ScoreAction,
    SendAction,
    TagAction,
)
from strategies.embedded import DEFAULT_OPEN_SHARE, JourneySubscriber, SimulatedOpens
from strategies.metrics import StrategyMetrics
from triggers.errors import SceneTriggerError
from triggers.events import Event

DEFAULT_JOURNEY_SCALE = 96.0  # 2 days of a strategy's wait = 30 simulated minutes


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="live demo: the engine on a synthetic persona clickstream (no Kafka/Redis)"
    )
    parser.add_argument("--users", type=_positive_int, default=200,
                        help="shoppers in the pool, personas assigned in turn (default 200)")
    parser.add_argument("--rate", type=_positive_float, default=15.0,
                        help="events per real second, on average (default 15)")
    parser.add_argument("--speed", type=_positive_float, default=600.0,
                        help="simulated seconds per real second (default 600: 30 min in 3 s)")
    parser.add_argument("--duration", type=_positive_float, default=None,
                        help="stop after this many real seconds (default: run until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--start-ms", type=int, default=None,
                        help="simulated start, ms since the epoch (default: today 01:00 UTC)")
    parser.add_argument("--config", help="config: scenes, content, delivery (default: shipped)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port of the live page and /metrics (default 8080; 0 = any free)")
    parser.add_argument("--no-web", action="store_true", help="do not serve the page and metrics")
    parser.add_argument("--content", choices=CONTENT_SOURCES, default="pipeline",
                        help="pipeline: the content and delivery pipeline in dry run (default); "
                             "builtin: one fixed line per scene and persona")
    parser.add_argument("--strategies", default="auto",
                        help="strategies to run: auto (the config's, else the shipped "
                             "reactivation), none, or include refs separated by commas")
    parser.add_argument("--journey-scale", type=_positive_float, default=DEFAULT_JOURNEY_SCALE,
                        help="divide strategy waits by this (default 96: 2 days = 30 "
                             "simulated minutes); 1 = as configured")
    parser.add_argument("--deliver", choices=("dry-run", "live"), default="dry-run",
                        help="dry-run: nothing is sent (default); live: send through the "
                             "config's channels (default config: config/demo.yaml): the "
                             "inbox in Redis, webhooks to the demo's own sink")
    parser.add_argument("--redis-url",
                        help="live: Redis of the inbox and the policy (default: "
                             "$SCENETRIGGER_REDIS_URL, else redis://127.0.0.1:6379/0)")
    parser.add_argument("--decisions", metavar="FILE",
                        help="write the decision log (each delivery outcome with its deciding "
                             "rule and figures, JSON lines) to FILE (rotates at 64 MiB)")
    parser.add_argument("--webhook-port", type=int, default=8081,
                        help="live: port of the demo's webhook sink, POST /hook (default "
                             "8081; 0 = any free); local webhook channels are sent there")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.users < len(PERSONAS):
        raise SceneTriggerError(f"--users must be at least {len(PERSONAS)} (one per persona)")
    if args.deliver == "live" and args.content != "pipeline":
        raise SceneTriggerError("--deliver live needs --content pipeline")
    try:
        return asyncio.run(_main(args))
    except RedisUnavailable as exc:
        print(f"scenetrigger: {exc}", file=sys.stderr)
        return 2


async def _main(args: argparse.Namespace) -> int:
    live_mode = args.deliver == "live"
    config = load_config(args.config or (DEMO_LIVE_CONFIG if live_mode else None))
    registry = CollectorRegistry()  # the demo's own: /metrics shows only this run
    if not live_mode:
        return await _run_demo(args, config, registry, None)
    live = await start_live(config, registry, redis_url=args.redis_url, host=args.host,
                            webhook_port=args.webhook_port)
    try:
        return await _run_demo(args, config, registry, live)
    finally:
        await live.close()


async def _run_demo(args: argparse.Namespace, config: Any, registry: CollectorRegistry,
                    live: LiveDelivery | None, clock: Any = None) -> int:
    out = sys.stdout
    start_ms = args.start_ms if args.start_ms is not None else default_start_ms()
    stream = Clickstream(args.users, args.seed, start_ms, rate=args.rate / args.speed)
    models = demo_journeys(config, args.strategies, args.journey_scale)
    content = (live.content if live is not None
               else pick_content(config, args.content, registry, models.values()))
    if isinstance(content, PipelineContent):
        # Journey waits are divided by the journey scale: the policy's days,
        # weeks and nights are too, or the compressed journey runs into a
        # day's caps and one night's quiet hours that real time spreads out.
        content.pipeline.policy.calendar = Calendar(start_ms, args.journey_scale)
    runtime = EmbeddedRuntime(  # profiles on: content previews read them
        new_host(config, profiles=True), stream, start_ms=start_ms, speed=args.speed,
        persona_of=stream.persona_of, content=content, registry=registry,
        catalog=catalog_join(config), **({} if clock is None else {"clock": clock}),
    )
    if live is not None:
        live.attach(runtime)
    decisions = None
    if args.decisions:
        if not isinstance(content, PipelineContent):
            raise SceneTriggerError("--decisions needs --content pipeline")
        from channels.feedback.decisions import FileDecisionLog

        decisions = content.pipeline.decisions = FileDecisionLog(args.decisions)
    printer = ConsolePrinter(out, runtime.stop, runtime.persona,
                             "" if live is not None else "-dry-run")
    runtime.subscribe(printer)
    journeys = _wire_journeys(runtime, config, args, printer, registry, models)
    served = None
    # POST /api/catalog's token: the catalog feed's, or one for this run.
    catalog_token = os.environ.get(CATALOG_TOKEN_ENV) or secrets.token_urlsafe(24)
    if not args.no_web:
        from scenetrigger.demo.page import serve

        try:
            served = await serve(runtime, args.host, args.port, catalog_token,
                                 config.engine.max_id_chars)
        except OSError as exc:
            hint = " (try --port 0 for any free port)" if exc.errno == errno.EADDRINUSE else ""
            raise SceneTriggerError(f"cannot listen on {args.host}:{args.port}: "
                                    f"{exc.strerror or exc}{hint}") from None
    _print_banner(out, args, served.url if served else None, runtime, journeys, live,
                  None if os.environ.get(CATALOG_TOKEN_ENV) else catalog_token)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.stop)
    try:
        stats = await runtime.run(args.duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runtime.close()
        if served is not None:
            await served.runner.cleanup()
        if decisions is not None:
            decisions.close()
    if not printer.closed:
        with contextlib.suppress(BrokenPipeError):
            _print_summary(out, stats, runtime, journeys, live)
    return 0


def _wire_journeys(runtime: EmbeddedRuntime, config: Any, args: argparse.Namespace,
                   printer: ConsolePrinter, registry: CollectorRegistry,
                   models: dict[str, StrategyModel] | None = None) -> JourneySubscriber | None:
    """The strategies on the runtime's clock, with simulated opens (the
    shoppers are simulated, so their opens are made up: see SimulatedOpens).
    With the pipeline content, every send step goes through the same delivery
    policy as the scenes' messages (caps, quiet hours, dedupe)."""
    if models is None:
        models = demo_journeys(config, args.strategies, args.journey_scale)
    if not models:
        return None
    content = runtime.content
    pipeline = content.pipeline if isinstance(content, PipelineContent) else None
    subscriber = JourneySubscriber(config, printer.action, StrategyMetrics.create(registry),
                                   journeys=models, opens=SimulatedOpens(args.seed),
                                   on_feedback=printer.feedback,
                                   states=runtime.engine.store.get,
                                   delivery=pipeline, on_held=printer.held,
                                   on_audience=runtime.note_audience)
    if isinstance(content, PipelineContent):
        content.on_order_release = subscriber.released
    runtime.subscribe(subscriber)
    runtime.add_ticker(subscriber.tick)
    runtime.add_panel("journeys", subscriber.snapshot)
    return subscriber


def default_start_ms(now_s: float | None = None) -> int:
    """Today 01:00 UTC (09:00 in Shanghai): most demo shoppers are awake, so
    quiet hours hold back only some messages at first."""
    day = int(time.time() if now_s is None else now_s) // 86_400
    return (day * 86_400 + 3_600) * 1000


class ConsolePrinter:
    """One line per trigger: sim time, scene, user, persona, key, message.

    When the reader goes away (``scenetrigger demo | head``) the demo stops
    quietly instead of failing on a broken pipe."""

    def __init__(self, out: TextIO, on_closed: Callable[[], None] | None = None,
                 persona_of: Callable[[str], str] | None = None,
                 channel_label: str = "-dry-run") -> None:
        self.out = out
        self.on_closed = on_closed
        self.persona_of = persona_of or (lambda _user: "unknown")
        self.channel_label = channel_label  # after a journey send's channel
        self.closed = False

    def __call__(self, record: TriggerRecord) -> None:
        self._write(format_record(record))

    def action(self, action: Action) -> None:
        line = format_action(action, self.persona_of(action.user_id), self.channel_label)
        if line is not None:
            self._write(line)

    def held(self, send: SendAction, outcome: Outcome) -> None:
        """A journey send the delivery policy held back (deferred or suppressed)."""
        line = format_action(send, self.persona_of(send.user_id), self.channel_label) or ""
        self._write(f"{line}  ({_held(outcome.status, outcome.reason, outcome.due_ms)})")

    def feedback(self, event: Event) -> None:
        self._write(format_feedback(event, self.persona_of(event.user_id)))

    def _write(self, line: str) -> None:
        if self.closed:
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.closed = True
            _silence(self.out)
            if self.on_closed is not None:
                self.on_closed()


def _silence(out: TextIO) -> None:
    """Point a closed pipe at /dev/null, so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def format_record(record: TriggerRecord) -> str:
    trig = record.trigger
    when = datetime.fromtimestamp(record.fired_ms / 1000 if record.via == "release"
                                  else trig.ts / 1000, UTC).strftime("%H:%M:%S")
    persona = PERSONA_LABELS.get(record.persona, record.persona)
    key = "-" if trig.key is None else trig.key
    scene = trig.scene if record.via != "release" else f"{trig.scene}*"
    line = f"{when}  {scene:<24} {trig.user_id:<5} {persona:<21} {key:<18}"
    for preview in record.content[:1]:
        text = _clip(" ".join(preview.text.split()), 48)
        line += f" → [{preview.channel}] {preview.subject}" + (f" | {text}" if text else "")
        tags = [t for t in (preview.variant, _segment(preview.style, preview.segment)) if t]
        if preview.status != "send":
            held = _held(preview.status, preview.reason, preview.due_ms)
            tags.insert(0, held.upper() if preview.status == "failed" else held)
        if tags:
            line += f"  ({'; '.join(tags)})"
    return line.rstrip()


def _held(status: str, reason: str | None, due_ms: int | None) -> str:
    """``deferred: quiet_hours until 08:00 UTC``, ``suppressed: cap_day``."""
    held = status + (f": {reason}" if reason else "")
    if due_ms is not None:
        held += f" until {datetime.fromtimestamp(due_ms / 1000, UTC).strftime('%H:%M')} UTC"
    return held


def _journey_prefix(ts: int, strategy: str, user: str, persona: str, step: str) -> str:
    when = datetime.fromtimestamp(ts / 1000, UTC).strftime("%H:%M:%S")
    label = PERSONA_LABELS.get(persona, persona)
    return f"{when}  {'» ' + strategy:<24} {user:<5} {label:<21} {step or '-':<18} "


def format_action(action: Action, persona: str, channel_label: str = "-dry-run") -> str | None:
    """One line per journey action (suppressed entries are only counted)."""
    if isinstance(action, EnrolAction):
        text = f"enrolled (via {action.via})"
        if action.control:
            text += ", control group: no messages"
        return _journey_prefix(action.ts, action.strategy, action.user_id, persona, "-") + text
    if isinstance(action, SendAction):
        return (_journey_prefix(action.ts, action.strategy, action.user_id, persona, action.step)
                + f"→ [{action.channel}{channel_label}] {action.content_ref}"
                + _rendered(action))
    if isinstance(action, TagAction):
        sign = "+" if action.add else "-"
        return (_journey_prefix(action.ts, action.strategy, action.user_id, persona, action.step)
                + f"tag {sign}{action.tag}")
    if isinstance(action, ExitAction):
        return (_journey_prefix(action.ts, action.strategy, action.user_id, persona, action.step)
                + f"exit ({action.reason})")
    if isinstance(action, ScoreAction):
        return (_journey_prefix(action.ts, action.strategy, action.user_id, persona, action.step)
                + f"score {action.delta:+g}")
    if isinstance(action, AudienceAction):
        return (_journey_prefix(action.ts, action.strategy, action.user_id, persona, action.step)
                + f"audience {'+' if action.add else '-'}{action.audience}")
    if isinstance(action, HandoffAction):
        return (_journey_prefix(action.ts, "lead", action.user_id, persona, "-")
                + f"→ [{action.channel}] handoff, score {action.score:.0f}")
    return None


def _rendered(send: SendAction) -> str:
    """` · subject — text` of a rendered journey message (one line, shortened)."""
    if send.subject is None:
        return ""
    text = " ".join((send.text or "").split())
    return f" · {send.subject} — {text[:70] + '…' if len(text) > 70 else text}"


def format_feedback(event: Event, persona: str) -> str:
    strategy = str(event.fields.get("strategy") or "-")
    return (_journey_prefix(event.ts, strategy, event.user_id, persona, "-")
            + f"opened on {event.fields.get('channel')} (simulated)")


def _segment(style: str | None, segment: str | None) -> str | None:
    parts = [p for p in (style, segment) if p]
    return "/".join(parts) if parts else None


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_banner(out: TextIO, args: argparse.Namespace, url: str | None,
                  runtime: EmbeddedRuntime, journeys: JourneySubscriber | None,
                  live: LiveDelivery | None = None, made_token: str | None = None) -> None:
    absence_s = 30 * 60 / args.speed
    source = runtime.content.name if runtime.content is not None else "none"
    mode = "live: messages are sent" if live is not None else "dry run, nothing is sent"
    lines = [
        f"scenetrigger demo: {args.users} shoppers ({', '.join(PERSONA_LABELS.values())})",
        f"  ~{args.rate:g} events/s, clock x{args.speed:g} (30 min of absence = {absence_s:.1f} s), "
        f"seed {args.seed}, content: {source} ({mode})",
    ]
    if live is not None:
        lines += live.banner_lines()
    if url is not None:
        lines += [f"  live page   {url}", f"  metrics     {url}metrics",
                  f"  state JSON  {url}api/state"]
    if url is not None and runtime.catalog is not None:
        token = made_token or f"${CATALOG_TOKEN_ENV}"
        lines += [f"  catalog     POST {url}api/catalog  (Authorization: Bearer {token}; "
                  "docs/demo.md)"]
    if journeys is not None:
        names = ", ".join(s.name for s in journeys.engine.registry.strategies())
        day_s = 86_400 / args.journey_scale / args.speed
        opens = ", ".join(f"{c} {p:.0%}" for c, p in DEFAULT_OPEN_SHARE.items())
        lines += [f"  strategies  {names}: waits /{args.journey_scale:g} "
                  f"(1 day = {day_s:.1f} s); simulated opens: {opens}"]
    stop = "Ctrl-C"
    if args.duration is not None:
        stop += f" (stops by itself after {args.duration:g} s)"
    lines.append(f"  stop        {stop}")
    lines.append("")
    legend = "(* = a message held back by quiet hours, sent now"
    lines.append(legend + ("; » = a strategy's step)" if journeys is not None else ")"))
    lines.append(f"{'sim UTC':<8}  {'scene':<24} {'user':<5} {'persona':<21} "
                 f"{'key':<18} → [channel] message  (variant; style/segment)")
    out.write("\n".join(lines) + "\n")
    out.flush()


def _print_summary(out: TextIO, stats: RuntimeStats, runtime: EmbeddedRuntime,
                   journeys: JourneySubscriber | None = None,
                   live: LiveDelivery | None = None) -> None:
    sent = "delivered (live)" if live is not None else "would be sent now (dry run)"
    lines = [
        "",
        f"demo summary: {stats.events:,} events in {stats.real_seconds:.1f} s real "
        f"({stats.events_per_second:,.1f} events/s), "
        f"{(stats.sim_ms - stats.started_ms) / 60_000:,.0f} simulated minutes",
        f"  rejected       {sum(stats.rejected.values()):>8,}",
        f"  triggers       {sum(stats.triggers.values()):>8,}",
    ]
    lines += [f"    {scene:<26}{n:>8,}" for scene, n in stats.triggers.items()]
    lines += [
        f"  messages       {stats.messages:>8,}  {sent}",
        *(live.delivered_lines() if live is not None else []),
        *(f"    {status:<26}{n:>8,}" for status, n in sorted(stats.held.items())),
        *(live.sink_lines() if live is not None else []),
        f"  users          {len(runtime.engine.store):>8,}",
        f"  pending timers {len(runtime.engine.pending_timers()):>8,}",
    ]
    if journeys is not None:
        lines.append(f"  journeys       {journeys.actions:>8,}  actions")
        lines += [f"    {what:<26}{n:>8,}" for what, n in sorted(journeys.counts.items())]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value

    return parse


_positive_int = _positive(int)
_positive_float = _positive(float)
