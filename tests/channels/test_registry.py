"""Building channels from config and the ChannelSender (unit: fake channels
behind the same interface)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import cast

import orjson
import pytest
from prometheus_client import CollectorRegistry

from channels.base import DeliveryResult, Message
from channels.errors import ChannelError
from channels.transports.deadletter import DeadLetterStore
from channels.transports.email import EmailChannel
from channels.transports.inbox import InboxChannel
from channels.transports.logchannel import LogChannel
from channels.transports.provider import ProviderChannel
from channels.transports.registry import (
    ChannelRegistry,
    ChannelSender,
    DeliveryMetrics,
    UnknownChannelError,
    build_registry,
    redis_url_or_env,
)
from channels.transports.retry import RetryPolicy
from channels.transports.webhook import WebhookChannel
from config.loader import load_config_text
from tests.channels.receivers import message
from triggers.errors import ConfigError

CONFIG = """
scenes: {}
channels:
  crm: {type: webhook, url: "https://crm.example/hook", secret_env: CRM_SECRET, timeout: 2s,
        retry: {max_attempts: 5, base_backoff: 50ms, max_backoff: 2s}}
  inbox: {type: inbox, max_messages: 50}
  mail: {type: email, host: smtp.example, sender: "Shop <news@shop.example>",
         username_env: SMTP_USER, password_env: SMTP_PASSWORD,
         postal_address: "Shop Ltd, 1 Main St, Springfield"}
  sms: {type: sms, url: "https://sms.example/send", headers_env: {Authorization: SMS_TOKEN}}
  wechat: {type: wechat, url: "https://wx.example/send", query_env: {access_token: WX_TOKEN}}
  push: {type: push, url: "https://push.example/send"}
  dry: {type: log}
"""
ENV = {"CRM_SECRET": "s", "SMTP_USER": "u", "SMTP_PASSWORD": "p", "SMS_TOKEN": "t",
       "WX_TOKEN": "w"}


class FakeChannel:
    """A channel that answers from a script (and may raise)."""

    def __init__(self, name: str, script: list[DeliveryResult | Exception]) -> None:
        self.name = name
        self.script = script
        self.sent: list[Message] = []
        self.closed = False

    async def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def close(self) -> None:
        self.closed = True


class FakeDeadLetters:
    def __init__(self, fail: bool = False) -> None:
        self.added: list[tuple[Message, str, DeliveryResult]] = []
        self.fail = fail

    async def add(self, message: Message, channel: str, result: DeliveryResult,
                  redrives: int = 0) -> str:
        if self.fail:
            raise ConnectionError("redis down")
        self.added.append((message, channel, result))
        return "1-0"


def failed(retryable: bool, error: str = "HTTP 503") -> DeliveryResult:
    return DeliveryResult(False, "fake", "m-1", 1, error, retryable)


def ok() -> DeliveryResult:
    return DeliveryResult(True, "fake", "m-1")


def sender_for(channel: FakeChannel, dead: FakeDeadLetters | None = None,
               metrics: CollectorRegistry | None = None) -> ChannelSender:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return ChannelSender(ChannelRegistry({channel.name: channel}),
                         cast(DeadLetterStore, dead), RetryPolicy(max_attempts=3),
                         metrics or CollectorRegistry(), sleep, random.Random(5))


def test_build_registry_from_config() -> None:
    config = load_config_text(CONFIG)
    registry = build_registry(config.channels, env=ENV)
    assert registry.names() == ["crm", "inbox", "mail", "sms", "wechat", "push", "dry"]
    crm = registry.get("crm")
    assert isinstance(crm, WebhookChannel)
    assert (crm.secret, crm.timeout_ms, crm.policy.max_attempts, crm.policy.base_backoff_ms) == \
        (b"s", 2_000, 5, 50)
    assert isinstance(registry.get("inbox"), InboxChannel)
    mail = registry.get("mail")
    assert isinstance(mail, EmailChannel) and mail.settings.password == "p"
    sms = registry.get("sms")
    assert isinstance(sms, ProviderChannel) and sms.shape.headers["Authorization"] == "t"
    wechat = registry.get("wechat")
    assert isinstance(wechat, ProviderChannel)
    assert wechat.shape.url.source == "https://wx.example/send?access_token=w"
    assert isinstance(registry.get("dry"), LogChannel)
    assert "crm" in registry and "nope" not in registry
    with pytest.raises(UnknownChannelError, match="crm, dry, inbox"):
        registry.get("nope")


def test_missing_secrets_name_channel_and_field() -> None:
    config = load_config_text(CONFIG)
    with pytest.raises(ConfigError) as err:
        build_registry(config.channels, env={"SMTP_USER": "u"})
    assert err.value.problems == [
        "channel 'crm', field 'secret_env': environment variable 'CRM_SECRET' is not set",
        "channel 'mail', field 'password_env': environment variable 'SMTP_PASSWORD' is not set",
        "channel 'sms', field 'headers_env': environment variable 'SMS_TOKEN' is not set",
        "channel 'wechat', field 'query_env': environment variable 'WX_TOKEN' is not set",
    ]


def test_empty_or_multiline_secrets_are_refused() -> None:
    config = load_config_text(CONFIG)
    env = {**ENV, "CRM_SECRET": "", "SMS_TOKEN": "t\r\nX-Evil: 1"}
    with pytest.raises(ConfigError) as err:
        build_registry(config.channels, env=env)
    assert err.value.problems == [
        "channel 'crm', field 'secret_env': environment variable 'CRM_SECRET' is empty",
        "channel 'sms', field 'headers_env': environment variable 'SMS_TOKEN' is not one line",
    ]


def test_the_documented_example_config_is_valid() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "channels.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config_text("scenes: {}\n" + example)
    assert sorted(config.channels) == ["app_inbox", "app_push", "crm", "dry", "mail", "sms_cn",
                                       "wechat"]
    env = {"CRM_WEBHOOK_SECRET": "x", "SMTP_USER": "u", "SMTP_PASSWORD": "p",
           "SMS_API_TOKEN": "t", "WECHAT_ACCESS_TOKEN": "w", "PUSH_SERVER_KEY": "k"}
    assert len(build_registry(config.channels, env=env).names()) == 7


def test_redrive_needs_a_config_with_channels(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from scenetrigger.cli.main import main

    config = tmp_path / "no-channels.yaml"
    config.write_text("scenes: {}\n")
    assert main(["redrive", "--config", str(config), "--dry-run"]) == 2
    assert "no 'channels' section" in capsys.readouterr().err


def test_an_empty_channels_section_is_the_default() -> None:
    assert load_config_text("scenes: {}").channels == {}


async def test_sender_retries_channels_without_their_own_retries() -> None:
    fake = FakeChannel("fake", [failed(True), failed(True), ok()])
    dead = FakeDeadLetters()
    metrics = CollectorRegistry()
    result = await sender_for(fake, dead, metrics).send(message(channel="fake"))
    assert (result.ok, result.attempts) == (True, 3)
    assert len(fake.sent) == 3 and dead.added == []
    assert metrics.get_sample_value("scenetrigger_deliveries_total",
                                    {"channel": "fake", "result": "ok"}) == 1


async def test_sender_dead_letters_final_failures() -> None:
    fake = FakeChannel("fake", [failed(False, "HTTP 400"), failed(True), failed(True),
                                failed(True)])
    dead = FakeDeadLetters()
    metrics = CollectorRegistry()
    sender = sender_for(fake, dead, metrics)
    rejected = await sender.send(message(1), "fake")
    exhausted = await sender.send(message(2), "fake")
    assert (rejected.attempts, rejected.retryable) == (1, False)
    assert (exhausted.attempts, exhausted.retryable) == (3, True)
    assert [(m.message_id, ch, r.error) for m, ch, r in dead.added] == \
        [("m-1", "fake", "HTTP 400"), ("m-2", "fake", "HTTP 503")]
    for label in ("rejected", "retry_exhausted"):
        assert metrics.get_sample_value("scenetrigger_deliveries_total",
                                        {"channel": "fake", "result": label}) == 1
    assert metrics.get_sample_value("scenetrigger_dead_letters_total", {"channel": "fake"}) == 2
    # dead_letter=False (redrive) leaves the dead-letter alone.
    fake.script = [failed(False)]
    await sender.send(message(3), "fake", dead_letter=False)
    assert len(dead.added) == 2


async def test_a_raising_channel_does_not_stop_the_sender_and_a_lost_dead_letter_raises(
) -> None:
    fake = FakeChannel("fake", [RuntimeError("bug"), failed(True), failed(True), failed(True)])
    metrics = CollectorRegistry()
    letters = FakeDeadLetters()
    sender = sender_for(fake, letters, metrics)
    result = await sender.send(message(), "fake")
    assert not result.ok and result.error == "channel raised RuntimeError: bug"
    assert len(letters.added) == 1
    letters.fail = True
    assert metrics.get_sample_value("scenetrigger_deliveries_total",
                                    {"channel": "fake", "result": "error"}) == 1
    # The dead-letter Redis is down: raised (an infrastructure fault), so the
    # delivery's lease stays and it is tried again; it used to be logged only (lost).
    with pytest.raises(ConnectionError):
        await sender.send(message(2), "fake")
    assert metrics.get_sample_value("scenetrigger_dead_letter_write_failures_total",
                                    {"channel": "fake"}) == 1
    with pytest.raises(UnknownChannelError):
        await sender.send(message(), "nope")


def test_metrics_register_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert DeliveryMetrics.on(registry) is DeliveryMetrics.on(registry)
    assert DeliveryMetrics.on(CollectorRegistry()) is not DeliveryMetrics.on(registry)


async def test_log_channel_records_and_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "deliveries.jsonl"
    path.parent.mkdir()
    log = LogChannel("dry", path, max_records=2)
    for n in range(3):
        assert (await log.send(message(n))).ok
    await log.close()
    assert [m.message_id for m in log.records] == ["m-1", "m-2"]
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["message_id"] for line in lines] == ["m-0", "m-1", "m-2"]
    broken = LogChannel("dry", tmp_path / "missing-dir" / "x.jsonl")
    result = await broken.send(message())
    assert not result.ok and "cannot write" in (result.error or "")


async def test_registry_close_goes_on_after_an_error() -> None:
    class Broken(FakeChannel):
        async def close(self) -> None:
            raise RuntimeError("close failed")

    first, second = Broken("a", []), FakeChannel("b", [])
    await ChannelRegistry({"a": first, "b": second}).close()
    assert second.closed


@pytest.mark.parametrize("url", ["localhost:6379", "127.0.0.1", "http://127.0.0.1:6379/0"])
def test_a_redis_url_without_a_redis_scheme_is_a_clear_error(url: str) -> None:
    with pytest.raises(ChannelError, match="redis://HOST:PORT/DB"):
        redis_url_or_env(url)


def test_the_redis_url_from_the_environment_is_checked_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENETRIGGER_REDIS_URL", "notaurl")
    with pytest.raises(ChannelError, match="SCENETRIGGER_REDIS_URL"):
        redis_url_or_env(None)
    assert redis_url_or_env("rediss://h:1/0") == "rediss://h:1/0"
