"""``scenetrigger demo --deliver live``: messages really reach the webhook sink and
Redis inboxes (real redis-server, the demo as a subprocess), one per trigger,
different content for different shoppers."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from redis.asyncio import Redis

from channels.pipeline import message_id_for
from channels.transports.inbox import InboxStore
from channels.transports.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from scenetrigger.demo.live import redacted
from tests.scenetrigger.demo_process import REPO, DemoProcess, http_get, start_demo

DEMO_YAML = REPO / "config" / "demo.yaml"
SECRET_ENV = "SCENETRIGGER_WEBHOOK_SECRET"
SINK_URL = re.compile(r"webhook → (http://\S+/hook) \(demo sink")


def _without_channels(content: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(content))
    for scene in out["scenes"].values():
        for variant in [*scene["variants"], scene["fallback"],
                        *scene.get("fallbacks", {}).values()]:
            variant.pop("channels", None)
    return out


def test_demo_config_is_the_shipped_content_and_scenes_but_for_channel_order() -> None:
    from config.loader import load_config

    demo = yaml.safe_load(DEMO_YAML.read_text(encoding="utf-8"))
    shipped = yaml.safe_load((REPO / "config" / "content.yaml").read_text(encoding="utf-8"))
    scenes = yaml.safe_load((REPO / "config" / "scenes.yaml").read_text(encoding="utf-8"))
    assert demo["scenes"] == scenes["scenes"]
    # It holds only what differs (layered on the shipped content): the scenes'
    # content, whose channel order is its own; the rest is the shipped one.
    assert list(demo["content"]) == ["scenes"]
    assert _without_channels(demo["content"]) == _without_channels(
        {"scenes": shipped["content"]["scenes"]})
    # ... and the content in force is the shipped content but for that order.
    layered = load_config(DEMO_YAML).content.model_dump()
    plain = load_config(REPO / "config" / "scenes.yaml").content.model_dump()
    assert _without_channels(layered) == _without_channels(plain)
    assert layered["journeys"] == plain["journeys"] and layered["scenes"] != plain["scenes"]
    firsts = {name: {v["channels"][0] for v in [*scene["variants"], scene["fallback"],
                                                *scene.get("fallbacks", {}).values()]}
              for name, scene in demo["content"]["scenes"].items()}
    assert firsts == {"repeat_view_no_purchase": {"inbox"}, "cart_abandonment": {"webhook"},
                      "promo_arrival": {"webhook"}}


def _config(tmp_path: Path, prefix: str) -> Path:
    """config/demo.yaml with keys of this test's own."""
    raw = yaml.safe_load(DEMO_YAML.read_text(encoding="utf-8"))
    raw["channels"]["inbox"]["key_prefix"] = f"{prefix}:inbox"
    raw["delivery"]["redis_prefix"] = f"{prefix}:"
    path = tmp_path / "demo-live.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def _inboxes(redis_url: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every user's inbox under ``prefix``, read through InboxStore."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        store = InboxStore(client, prefix)
        users = []
        async for key in client.scan_iter(match=f"{prefix}:{{*}}"):
            if key.endswith("}"):  # the stream; not the :acked set or :m: markers
                users.append(key[len(prefix) + 2:-1])
        return {user: [item.message for item in await store.list(user, unread_only=False,
                                                                  limit=1000)]
                for user in users}
    finally:
        await client.aclose()


def _summary_count(lines: list[str], pattern: str) -> int:
    for line in lines:
        if match := re.match(pattern, line):
            return int(match.group(1).replace(",", ""))
    raise AssertionError(f"no summary line {pattern!r}:\n" + "\n".join(lines))


def _watch(demo: DemoProcess, url: str, sink: str) -> tuple[dict[str, Any], int]:
    """Poll the state until the run ends; on the way, post one forged message
    once both channels have traffic. Returns the last state and the forgery's status."""
    state: dict[str, Any] = {}
    forged = 0
    deadline = time.monotonic() + 90
    while demo.proc.poll() is None and time.monotonic() < deadline:
        try:
            state = orjson.loads(http_get(url + "api/state")[2])
        except OSError:
            break  # the run ended between poll() and the request
        delivery = state["delivery"]
        if not forged and delivery["webhook"]["received"] and delivery["inbox"]["users"]:
            body = orjson.dumps({"message_id": "forged", "user_id": "u000", "subject": "x"})
            stamp = int(time.time() * 1000)
            forged = _post(sink, body, {TIMESTAMP_HEADER: str(stamp),
                                        SIGNATURE_HEADER: sign(b"not-the-secret", stamp, body)})
        time.sleep(0.3)
    return state, forged


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_live_demo_delivers_persona_messages_to_the_webhook_sink_and_redis(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)  # the demo makes one up and says so
    prefix = f"t{uuid.uuid4().hex[:8]}"
    demo = start_demo("--deliver", "live", "--redis-url", redis_url, "--config",
                      str(_config(tmp_path, prefix)), "--webhook-port", "0", "--duration", "20",
                      "--seed", "7", "--strategies", "none")
    try:
        url = demo.wait_ready()
        sink = next((m.group(1) for m in map(SINK_URL.search, demo.lines) if m), None)
        assert sink is not None and not sink.endswith(":0/hook"), demo.output()
        assert any(f"${SECRET_ENV} is not set: generated a random secret" in line
                   for line in demo.lines), demo.output()
        state, forged = _watch(demo, url, sink)
    finally:
        code = demo.wait(60)
    out = demo.output()
    assert code == 0, out
    assert forged == 401, out  # the sink checks signatures
    summary = demo.lines[next(i for i, line in enumerate(demo.lines)
                              if line.startswith("demo summary:")):]
    to_inbox = _summary_count(summary, r"^ +→ inbox +([\d,]+)$")
    to_webhook = _summary_count(summary, r"^ +→ webhook +([\d,]+)$")
    sink_took = _summary_count(summary, r"^  webhook sink +([\d,]+)  received")
    assert re.search(r"webhook sink .*\(1 rejected, 0 duplicates\)", out), out
    assert _summary_count(summary, r"^  messages +([\d,]+)  delivered \(live\)$") == \
        to_inbox + to_webhook
    # What the pipeline counted is what arrived: over HTTP at the sink ...
    assert to_webhook == sink_took > 0, out
    # ... and in Redis, read back through the inbox store.
    inboxes = asyncio.run(_inboxes(redis_url, f"{prefix}:inbox"))
    stored = [m for messages in inboxes.values() for m in messages]
    assert len(stored) == to_inbox > 0, (inboxes, out)
    # The console agrees line for line (held-back lines are not deliveries).
    sent = [line for line in demo.lines if "→ [" in line and "(deferred" not in line
            and "(suppressed" not in line and "(FAILED" not in line]
    assert sum("→ [webhook]" in line for line in sent) == to_webhook, out
    assert sum("→ [inbox]" in line for line in sent) == to_inbox, out
    for message in stored:
        assert message["channel"] == "inbox" and message["user_id"] in inboxes
        assert message["message_id"] == message_id_for(message["trigger_id"], "inbox")
        assert any(f" {message['user_id']} " in line and f"→ [inbox] {message['subject']}" in line
                   for line in sent), (message, out)

    # The live page's view: the sink's latest messages, inboxes as Redis has them.
    delivery = state["delivery"]
    assert delivery["mode"] == "live" and delivery["webhook"]["url"] == sink
    hooks = delivery["webhook"]["recent"]
    assert 0 < len(hooks) <= delivery["webhook"]["received"] <= sink_took
    assert all(h["channel"] == "webhook" and h["user_id"].startswith("u") for h in hooks)
    assert delivery["inbox"]["users"], state
    for user in delivery["inbox"]["users"]:
        redis_ids = {m["message_id"] for m in inboxes[user["user_id"]]}
        assert user["messages"] and {m["message_id"] for m in user["messages"]} <= redis_ids

    # One message per trigger (dedupe), on one channel.
    trigger_ids = [m["trigger_id"] for m in stored] + [h["trigger_id"] for h in hooks]
    assert len(trigger_ids) == len(set(trigger_ids))
    # 千人千面: different content for different shoppers, on both channels.
    inbox_variants = {m["data"]["variant"] for m in stored}
    hook_variants = {h["variant"] for h in hooks}
    assert len(inbox_variants) >= 2 and len(hook_variants) >= 2, (inbox_variants, hook_variants)
    styles = {m["data"]["style"] for m in stored} | {h["style"] for h in hooks}
    assert len(styles) >= 2, styles
    scenes = {m["scene"] for m in stored} | {h["scene"] for h in hooks}
    assert scenes == {"repeat_view_no_purchase", "cart_abandonment", "promo_arrival"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.integration
def test_unreachable_redis_is_a_one_line_error() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "demo", "--deliver", "live", "--redis-url",
         url, "--port", "0", "--webhook-port", "0", "--duration", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scenetrigger: cannot reach Redis at {url}")
    assert result.stdout == ""  # nothing started


def test_live_needs_the_pipeline_content() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "demo", "--deliver", "live", "--content",
         "builtin", "--no-web", "--duration", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "scenetrigger: --deliver live needs --content pipeline"


def test_a_redis_password_is_not_printed() -> None:
    assert redacted("redis://:pw@db.local:6380/1") == "redis://:***@db.local:6380/1"
    assert redacted("rediss://app:pw@db.local/0") == "rediss://app:***@db.local/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
