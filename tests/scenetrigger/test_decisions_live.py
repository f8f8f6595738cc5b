"""Every kind of decision record, written by the process that makes it in a
live deployment (real Kafka, Redis, SMTP and HTTP; worker, journeys, deliver
and serve as processes), read back through ``explain --broker``, the
console's user lookup and recent decisions, and ``report --decisions``:
the worker's fires and refusals, sends, suppressions, journey steps, opens,
clicks, unsubscribes through the link's page, one-click POST and SMS reply,
and an erasure. ``explain`` says when and how each user unsubscribed and
that the next message was refused for it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from scenetrigger.cli.main import main
from tests.agents.worker_support import send_events, start_cli, start_worker, unique, wait_for
from tests.channels.receivers import Receiver, SmtpSink, running_receiver
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SECRET = "tracking-secret-for-tests"
CALLBACK = "callback-token-for-tests"
ADMIN = "admin-token-for-tests"


def config_text(run: str, smtp_port: int, sms_url: str, serve_port: int) -> str:
    return f"""
scenes:
  arrive: {{kind: arrival, when: {{type: cart}}, per: product_id}}
  picky: {{kind: arrival, when: {{type: cart}}, per: product_id,
          user: {{segment: {{in: [champion]}}}}}}
channels:
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
          sender: "Shop <news@shop.example>", postal_address: "Shop Ltd, 1 Main St"}}
  sms: {{type: sms, url: "{sms_url}"}}
content:
  inherit: false
  scenes:
    arrive:
      fallback:
        channels: [mail, sms]
        subject: "Your cart"
        text: "Still there."
        html: '<p>Still there: <a href="https://shop.example/p/1">see it</a></p>'
  journeys:
    follow_note: {{fallback: {{channels: [mail], subject: "A note", text: "A note."}}}}
strategies:
  control: {{share: 0}}
  journeys:
    follow_up:
      entry: {{scene: arrive}}
      steps:
        - id: note
          send: {{channel: mail, content: follow_note}}
delivery:
  default_timezone: UTC
  caps: {{per_day: 50, per_week: 50}}
  quiet_hours: {{enabled: false}}
  redis_prefix: "{run}:"
  tracking: {{base_url: "http://127.0.0.1:{serve_port}"}}
"""


def _get(url: str, token: str | None = None) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=30) as resp:
        return json.loads(resp.read())


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request, no redirect followed (the click redirect leaves the machine)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def test_every_kind_reads_back_everywhere(kafka_bootstrap: str, redis_url: str,
                                          tmp_path: Path) -> None:
    asyncio.run(_run(kafka_bootstrap, redis_url, tmp_path))


async def _run(bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    prefix = unique("t-dec")
    users = tmp_path / "users.csv"
    users.write_text("user_id,email,phone,locale,consent.sms\n"
                     f"{prefix}-ann,ann@example.com,,en,\n"
                     f"{prefix}-cat,cat@example.com,,en,\n"
                     f"{prefix}-bob,,+8613800000001,zh-CN,yes\n"
                     f"{prefix}-dan,dan@example.com,,en,\n", encoding="utf-8")
    assert await asyncio.to_thread(main, ["users", "import", str(users), "--redis-url",
                                          redis_url, "--prefix", f"{prefix}:"]) == 0
    ann, cat, bob, dan = (f"{prefix}-{n}" for n in ("ann", "cat", "bob", "dan"))
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    serve_port = free_port()
    procs = []
    try:
        async with running_receiver(Receiver()) as sms:
            config = tmp_path / "config.yaml"
            config.write_text(config_text(prefix, smtp.port, sms.url, serve_port))
            env = {"SCENETRIGGER_TRACKING_SECRET": SECRET,
                   "SCENETRIGGER_CALLBACK_TOKEN": CALLBACK,
                   "SCENETRIGGER_ADMIN_TOKEN": ADMIN}
            common = ["--config", str(config), "--broker", bootstrap, "--topic-prefix", prefix]
            worker = start_worker(tmp_path, "w", bootstrap, prefix, prefix,
                                  ["--clock", "event", "--store", "memory"], config)
            procs.append(worker)
            port = free_port()
            procs.append(start_cli(tmp_path / "journeys.log", "journeys", [
                "journeys", *common, "--group", f"{prefix}-journeys", "--redis-url",
                redis_url, "--redis-prefix", f"{prefix}:", "--metrics-port", str(port)],
                port, env))
            port = free_port()
            deliver = start_cli(tmp_path / "deliver.log", "deliver", [
                "deliver", *common, "--group", f"{prefix}-deliver", "--redis-url", redis_url,
                "--metrics-port", str(port)], port, env)
            procs.append(deliver)
            serve = start_cli(tmp_path / "serve.log", "serve", [
                "serve", *common, "--redis-url", redis_url, "--port", str(serve_port),
                "--tags-prefix", f"{prefix}:"], serve_port, env)
            procs.append(serve)
            wait_for("4 partitions assigned",
                     lambda: worker.metric("scenetrigger_partitions") == 4, 150, procs)
            wait_for("serve up", lambda: _alive(serve_port), 60, procs)
            now = int(time.time() * 1000)

            async def carts(product: str, at: int, who: tuple[str, ...]) -> None:
                await asyncio.to_thread(send_events, bootstrap, f"{prefix}.events", [
                    (u.encode(), orjson.dumps({"user_id": u, "ts": at + i, "type": "cart",
                                               "product_id": product}))
                    for i, u in enumerate(who)], "one-event")

            await carts("p1", now, (ann, cat, bob))
            # ann and cat: the scene's email and the journey's; bob: the scene's SMS
            await _until("first messages", lambda: len(sink.received) >= 4
                         and len(sms.requests) >= 1, 120, procs)
            mails = {(rcpt[0], mail["Subject"]): mail for _f, rcpt, mail in sink.received}
            scene_mail = mails[("ann@example.com", "Your cart")]
            html = scene_mail.get_body(("html",))
            assert html is not None
            found = re.findall(r'src="([^"]+)"', html.get_content())
            pixel = next(u for u in found if "/t/o/" in u)
            status, _ = _request(serve_port, "GET", _path(pixel))
            assert status == 200
            # A click link as docs/content.md signs it (content links are product URLs).
            message_id = scene_mail["X-Scenetrigger-Message-Id"]
            target = "https://shop.example/p/1"
            sig = hmac.new(SECRET.encode(), f"{message_id}\n{target}".encode(),
                           hashlib.sha256).hexdigest()[:32]
            status, _ = _request(serve_port, "GET", f"/t/c/{urllib.parse.quote(message_id)}"
                                 f"?u={urllib.parse.quote(target, safe='')}&s={sig}")
            assert status in (302, 303, 307), status
            # ann: the link's page and its button; cat: one-click; bob: SMS reply STOP
            link = scene_mail["List-Unsubscribe"].strip("<>")
            status, page = _request(serve_port, "GET", _path(link))
            assert status == 200 and b'id="unsubscribe"' in page
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            status, _ = _request(serve_port, "POST", _path(link), b"action=unsubscribe", form)
            assert status == 200
            cat_link = mails[("cat@example.com", "Your cart")]["List-Unsubscribe"].strip("<>")
            status, said = _request(serve_port, "POST", _path(cat_link),
                                    b"List-Unsubscribe=One-Click", form)
            assert (status, said) == (200, b"unsubscribed\n")
            status, said = _request(serve_port, "POST", "/inbound/sms/gw", orjson.dumps(
                {"from": "+8613800000001", "text": "STOP"}),
                {"Authorization": f"Bearer {CALLBACK}", "Content-Type": "application/json"})
            assert status == 200 and orjson.loads(said)["known_user"] is True
            status, _ = _request(serve_port, "DELETE", f"/users/{dan}", None,
                                 {"Authorization": f"Bearer {ADMIN}"})
            assert status == 200
            # The next messages are refused for the unsubscribe.
            await carts("p2", int(time.time() * 1000), (ann, cat, bob))

            def explain(user: str) -> tuple[dict[str, Any], str]:
                base = [sys.executable, "-m", "scenetrigger.cli.main", "explain", user, *common,
                        "--app-id", prefix, "--redis-url", redis_url]
                done = subprocess.run([*base, "--json"], cwd=REPO, capture_output=True,
                                      timeout=120, check=False)
                assert done.returncode == 0, done.stderr
                text = subprocess.run(base, cwd=REPO, capture_output=True, timeout=120,
                                      check=False, text=True)
                assert text.returncode == 0, text.stderr
                return orjson.loads(done.stdout), text.stdout

            def refused_after(user: str) -> bool:
                got = explain(user)[0]["consent"]
                return bool(got) and got[0].get("refused_after", 0) >= 1

            await _until("the refusals recorded", lambda: all(
                refused_after(u) for u in (ann, cat, bob)), 120, procs)
            timelines = {u: explain(u) for u in (ann, cat, bob, dan)}

            console_port = free_port()
            console = start_cli(tmp_path / "console.log", "console", [
                "console", *common, "--app-id", prefix, "--port", str(console_port)],
                console_port, {"SCENETRIGGER_ADMIN_TOKENS": f"ops={ADMIN}"})
            procs.append(console)
            base = f"http://127.0.0.1:{console_port}"
            recent: list[dict[str, Any]] = []

            def console_read() -> bool:
                try:
                    recent[:] = _get(f"{base}/api/decisions", ADMIN)
                except OSError:
                    return False
                return sum(1 for d in recent if d["outcome"] == "unsubscribed") >= 3

            await _until("the console to read the decisions", console_read, 90, procs)
            looked_up = {u: _get(f"{base}/api/users/{u}", ADMIN) for u in (ann, cat, bob)}
            exported = tmp_path / "decisions.jsonl"
            assert await asyncio.to_thread(main, ["export", f"{prefix}.decisions", "--broker",
                                                  bootstrap, "--out", str(exported),
                                                  "--no-progress"]) == 0
            empty = tmp_path / "empty.jsonl"
            empty.write_text("")
            report = tmp_path / "report.json"
            assert await asyncio.to_thread(main, [
                "report", str(empty), str(empty), "--config", str(config), "--decisions",
                str(exported), "--json", str(report)]) == 0
    finally:
        for proc in procs:
            proc.stop()
        smtp.stop()

    ann_json, ann_text = timelines[ann]
    assert re.search(r"unsubscribed from email \(marketing\) at [0-9-]+ [0-9:]+ through the "
                     r"link's page; [1-9]\d* later message\(s\) refused for it "
                     r"\(unsubscribed\)", ann_text), ann_text
    assert "through a one-click POST (RFC 8058)" in timelines[cat][1]
    assert "unsubscribed from sms (marketing)" in timelines[bob][1]
    assert "through an SMS reply (STOP/TD)" in timelines[bob][1]
    outcomes = {d["outcome"] for d in ann_json["decisions"]}
    assert {"triggered", "refused", "delivered", "enrolled", "step", "opened", "clicked",
            "unsubscribed", "suppressed"} <= outcomes, outcomes
    assert any(d["rule"] == "unsubscribed" for d in ann_json["decisions"]
               if d["outcome"] == "suppressed")
    assert "consent  erased" in timelines[dan][1], timelines[dan][1]
    for user, view in looked_up.items():
        assert "unsubscribed from" in view["text"], (user, view["text"])
    kinds = {(d["scene"], d["outcome"]) for d in recent}
    assert {("consent", "unsubscribed"), ("consent", "erased")} <= kinds, kinds
    counts = orjson.loads(report.read_bytes())["decisions"]
    assert counts["versions"] == {"2": counts["records"]}
    every = {f"{scene} {outcome}" for scene, seen in counts["scenes"].items()
             for outcome in seen}
    for kind in ("arrive triggered:arrival", "picky refused:user_filter", "arrive delivered",
                 "arrive suppressed:unsubscribed", "journey:follow_up enrolled",
                 "journey:follow_up step", "arrive opened", "arrive clicked",
                 "consent unsubscribed", "consent erased"):
        assert kind in every, (kind, every)
    assert counts["consent"] == {"unsubscribed email via one_click": 1,
                                 "unsubscribed email via unsubscribe_link": 1,
                                 "unsubscribed sms via sms_reply": 1}


def _alive(port: int) -> bool:
    try:
        return _request(port, "GET", "/healthz")[0] == 200
    except OSError:
        return False


async def _until(what: str, check: Any, timeout_s: float, procs: list[Any]) -> None:
    """wait_for off the event loop: the SMTP sink and the SMS receiver run on it."""
    await asyncio.to_thread(wait_for, what, check, timeout_s, procs)
