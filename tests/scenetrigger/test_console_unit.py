"""The console's app with its state fed by hand: read-only views, and admin
actions refused without a token, refused with a wrong one, done with it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.feedback.decisions import DecisionRecord
from config.loader import DEFAULT_CONFIG_PATH, load_config_text
from config.versions import DirectoryStore
from scenetrigger.console.app import Console, create_app
from scenetrigger.console.state import ConsoleState, Limits
from triggers.events import Event, Trigger

CONFIG = load_config_text("""
scenes:
  arrive: {kind: arrival, when: {type: cart}}
""")
T0 = 1_700_000_000_000


def _state() -> ConsoleState:
    state = ConsoleState(CONFIG, Limits(buckets=2, recent=2, records=100))
    for i, user in enumerate(("a", "b", "c")):
        ts = T0 + i * 60_000
        state.event(Event(user, ts, "cart", {"user_id": user, "ts": ts, "type": "cart"}))
        trig = Trigger("arrive", user, None, ts)
        state.trigger(trig)
        rule = "control" if user == "b" else None
        state.write(DecisionRecord(ts, user, trig.trigger_id, "arrive",
                                   "suppressed" if rule else "delivered", rule,
                                   "bucket" if rule else "local 10:00 UTC"))
    return state


def test_state_counts_per_minute_bounded_and_joins_decisions_to_lines() -> None:
    state = _state()
    rates = state.rates()
    minute = T0 - T0 % 60_000
    assert rates["t"] == [(minute + 60_000) // 1000, (minute + 120_000) // 1000]  # 2 kept
    assert rates["series"]["trigger:arrive"] == [1, 1]
    assert [d["user_id"] for d in state.recent_decisions()] == ["c", "b"]
    held = next(line for line in state.lines.values() if line["user_id"] == "b")
    assert held["group"] == "control" and held["delivery"] == "suppressed"
    rows = {row["name"]: row for row in state.funnels()()}
    assert (rows["arrive"]["treated"], rows["arrive"]["control"]) == (2, 1)
    assert state.timeline("a")().decisions[0].figures == "local 10:00 UTC"
    assert state.erase("a") == 3
    assert state.timeline("a")().triggers == []


async def _client(token: str | None, versions: DirectoryStore | None = None
                  ) -> TestClient[web.Request, web.Application]:
    env = {} if token is None else {"SCENETRIGGER_ADMIN_TOKENS": f"ops={token}"}
    app = create_app(Console(_state(), CONFIG, None, env, versions=versions))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_views_are_open_and_admin_needs_the_token() -> None:
    client = await _client(None)
    try:
        assert (await client.get("/api/summary")).status == 200
        shown = await (await client.get("/api/config")).json()  # no --config: the shipped file
        assert shown["path"] == "(the shipped scenes)"
        assert shown["sha256"] == hashlib.sha256(DEFAULT_CONFIG_PATH.read_bytes()).hexdigest()
        page = await client.get("/")
        assert "script-src 'self' 'sha256-" in page.headers["Content-Security-Policy"]
        assert (await client.get("/vendor/uplot/uPlot.iife.min.js")).status == 200
        assert (await client.get("/vendor/uplot/../console.html")).status == 404
        assert (await client.get("/api/rates")).status == 200
        assert (await client.get("/api/funnels")).status == 200
        assert await (await client.get("/api/journeys")).json() == []  # no strategies
        kpis = (await (await client.get("/api/kpis")).json())["kpis"]["all"]
        assert (kpis["people"], kpis["carted"], kpis["buyers"]) == (3, 3, 0)
        got = await client.post("/api/admin/validate", data="scenes: {}")
        assert got.status == 403 and "SCENETRIGGER_ADMIN_TOKEN" in await got.text()
        for personal in ("/api/users/a", "/api/decisions"):  # per-user data: closed too
            got = await client.get(personal, headers={"Authorization": "Bearer x"})
            assert got.status == 403, personal
        assert (await client.post("/api/admin/push", data="scenes: {}")).status == 403
    finally:
        await client.close()
    client = await _client("s3cret")
    try:
        for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
            got = await client.post("/api/admin/erase/a", headers=header)
            assert got.status == 401
            for personal in ("/api/users/a", "/api/decisions"):
                assert (await client.get(personal, headers=header)).status == 401, personal
        auth = {"Authorization": "Bearer s3cret"}
        timeline = await (await client.get("/api/users/a", headers=auth)).json()
        assert "user a:" in timeline["text"]
        decided = await (await client.get("/api/decisions", headers=auth)).json()
        assert [d["user_id"] for d in decided] == ["c", "b"]
        ok = await client.post("/api/admin/validate", data="scenes:\n  x: {kind: nope}\n",
                               headers={"Authorization": "Bearer s3cret"})
        body = await ok.json()
        assert ok.status == 200 and not body["ok"] and "scene 'x'" in body["errors"][0]
        erased = await client.post("/api/admin/erase/a",
                                   headers={"Authorization": "Bearer s3cret"})
        assert (await erased.json())["removed"] == {"console_records": 3}
        whatif = await client.post("/api/admin/whatif", data="scenes: {}",
                                   headers={"Authorization": "Bearer s3cret"})
        assert whatif.status == 409  # no recorded sample given
        nostore = await client.post("/api/admin/push", data="scenes: {}",
                                    headers={"Authorization": "Bearer s3cret"})
        assert nostore.status == 409
    finally:
        await client.close()


async def test_push_and_rollback_through_the_version_store(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "versions")
    client = await _client("s3cret", store)
    admin = {"Authorization": "Bearer s3cret"}
    good = "scenes:\n  arrive: {kind: arrival, when: {type: cart}}\n"
    try:
        bad = await client.post("/api/admin/push?message=oops", headers=admin,
                                data="scenes:\n  arrive: {kind: arrival, when: 3}\n")
        assert bad.status == 422 and "scene 'arrive'" in (await bad.json())["errors"][0]
        assert (await client.post("/api/admin/push?message=x", data=good)).status == 401
        for message in ("first", "second"):
            text = good if message == "first" else good.replace("cart", "view")
            pushed = await client.post(f"/api/admin/push?message={message}", headers=admin,
                                       data=text)
            assert pushed.status == 200, await pushed.text()
        back = await client.post("/api/admin/rollback/1", headers=admin)
        assert (await back.json())["pushed"]["rollback_of"] == 1
        listed = await (await client.get("/api/config")).json()
        assert listed["current"] == 3
        assert [(v["version"], v["author"], v["message"]) for v in listed["versions"]] == [
            (3, "ops", "rollback to v1"), (2, "ops", "second"), (1, "ops", "first")]
        shown = await (await client.get("/api/config/versions/2")).json()
        assert "-  arrive: {kind: arrival, when: {type: cart}}" in shown["diff"]
    finally:
        await client.close()


async def test_the_embedded_console_runs_the_strategies_on_the_replay(tmp_path: Path) -> None:
    from scenetrigger.console.sources import run_embedded
    from tests.paths import REES46_SAMPLE

    config = load_config_text("""
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m, unless: {type: purchase}, cooldown: 24h}
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
delivery: {quiet_hours: {enabled: false}}
strategies: {include: [reactivation], control: {share: 0.2}}
""")
    state = ConsoleState(config)
    await run_embedded(state, config, str(REES46_SAMPLE), rate=1e9)
    assert state.done
    totals = state.totals
    assert totals["trigger:repeat_view_no_purchase"] == 424
    assert totals["enrolled:journey:reactivation"] > 0
    assert totals["step:journey:reactivation"] == totals["enrolled:journey:reactivation"]
    # each send step was decided by the policy too (a second record under its message id)
    steps = [r for r in state.decisions.records if r.outcome == "step"]
    decided = {r.trigger_id for r in state.decisions.records
               if r.scene == "journey:reactivation" and r.outcome in ("delivered", "suppressed",
                                                                       "deferred")}
    assert {s.message_id for s in steps} <= decided
    # the journey step funnel (report --journey's) on what the console kept
    funnel = next(f for f in state.journeys()() if f["strategy"] == "reactivation")
    first = funnel["steps"][0]
    assert funnel["enrolled"] - funnel["enrolled_control"] == \
        totals["enrolled:journey:reactivation"]
    assert (first["step"], first["entered"]) == ("push_1", funnel["enrolled"])
    assert first["sent"] == len(steps)  # the sample is shorter than the first wait
    refused: dict[str, int] = {}
    for r in state.decisions.records:
        if r.scene == "journey:reactivation" and r.message_id and \
                r.outcome in ("suppressed", "deferred"):
            label = r.rule if r.outcome == "suppressed" else f"deferred:{r.rule}"
            refused[str(label)] = refused.get(str(label), 0) + 1
    assert funnel["enrolled_control"] and first["suppressed"] == {
        **refused, **({"control": funnel["enrolled_control"]}
                      if funnel["enrolled_control"] else {})}


async def test_a_non_utf8_admin_token_is_refused_not_a_server_error() -> None:
    client = await _client("s3cret")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"POST /api/admin/erase/a HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer \xff\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"401"
        writer.close()
    finally:
        await client.close()


def test_an_erasure_drops_the_users_audience_records() -> None:
    from triggers.audiences.record import AudienceChange

    state = ConsoleState(CONFIG)
    state.membership(AudienceChange("a", "ann", "enter", 1.0, "condition"))
    state.membership(AudienceChange("a", "bob", "enter", 2.0, "condition"))
    state.erase("ann")
    assert [(m.user_id, m.ts) for m in state.memberships] == [("bob", 2.0)]
    state.erased["bob"] = 5_000  # a record older than bob's erasure is not kept again
    state.membership(AudienceChange("a", "bob", "exit", 4.0, "condition"))
    assert [m.op for m in state.memberships] == ["enter"]


def test_consent_changes_and_erasures_are_not_counted_as_a_scene() -> None:
    from channels.feedback.decisions import erasure_record, feedback_record
    from channels.feedback.events import FeedbackEvent

    state = _state()
    for i, kind in enumerate(("unsubscribed", "unsubscribed", "subscribed")):
        state.write(feedback_record(FeedbackEvent(kind, "a", T0 + i, "", "email", "",
                                                  source="link")))
    state.write(erasure_record("c", T0 + 5, "api"))
    summary = state.summary()
    assert set(summary["scenes"]) == {"arrive"}
    assert summary["consent_changes"] == {"unsubscribed": 2, "subscribed": 1, "erased": 1}
    assert not any(name.endswith(":consent") for name in state.rates()["series"])
