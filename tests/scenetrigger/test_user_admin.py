"""The admin user API of `serve` and `scenetrigger users get|set`, on real Redis."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from channels.feedback.events import ListSink
from config.loader import load_config_text
from config.tokens import ADMIN_TOKEN_ENV as TOKEN_ENV
from config.tokens import ADMIN_TOKENS_ENV, IDENTIFY_TOKEN_ENV
from scenetrigger.cli.main import main
from scenetrigger.cli.run.collector import TOKEN_ENV as COLLECTOR_TOKEN_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
ADMIN = "admin-token-for-tests"
BACKEND = "backend-identify-token-for-tests"


def _config(prefix: str) -> str:
    return f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{redis_prefix: "{prefix}"}}
"""


async def test_users_api_needs_the_token_and_validates(redis_url: str) -> None:
    prefix = f"ua{uuid.uuid4().hex[:8]}:"
    cfg = load_config_text(_config(prefix))
    redis = Redis.from_url(redis_url)
    try:
        closed = build_app(ServeParts(cfg, redis, ListSink(), env={}))
        async with TestClient(TestServer(closed)) as client:
            resp = await client.get("/users/ann", headers={"Authorization": "Bearer x"})
            assert resp.status == 403  # no token configured: every request refused
        events = ListSink()
        app = build_app(ServeParts(cfg, redis, events, env={TOKEN_ENV: ADMIN}))
        auth = {"Authorization": f"Bearer {ADMIN}"}
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/users/ann")).status == 401
            wrong = await client.get("/users/ann", headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401
            assert (await client.get("/users/ann", headers=auth)).status == 404
            put = await client.put("/users/ann", headers=auth, json={
                "email": "ann@example.com", "locale": "zh-CN",
                "push": [{"platform": "ios", "token": "tok-1"}],
                "attributes": {"first_name": "Ann"}})
            assert put.status == 200, await put.text()
            patch = await client.patch("/users/ann", headers=auth, json={
                "phone": "+8613800000000", "attributes": {"tier": "gold"}})
            body = await patch.json()
            assert body["email"] == "ann@example.com" and body["phone"] == "+8613800000000"
            assert body["attributes"] == {"first_name": "Ann", "tier": "gold"}
            bad = await client.patch("/users/ann", headers=auth, json={"timezone": "Mars/Base"})
            assert bad.status == 422 and "timezone" in (await bad.json())["error"]
            granted = await client.put("/users/ann/consent/sms", headers=auth,
                                       json={"granted": True, "source": "signup_form"})
            assert granted.status == 200, await granted.text()
            bad_consent = await client.put("/users/ann/consent/sms", headers=auth,
                                           json={"granted": "yes"})
            assert bad_consent.status == 422
            got = await (await client.get("/users/ann", headers=auth)).json()
            assert got["push"] == [{"platform": "ios", "token": "tok-1"}]
            assert got["consent"]["sms:marketing"]["granted"] is True
            assert got["consent"]["sms:marketing"]["source"] == "signup_form"
            assert [(e.kind, e.channel, e.source) for e in events.events] == [
                ("subscribed", "sms", "signup_form")]
            gone = await client.delete("/users/ann", headers=auth)
            receipt = await gone.json()
            assert receipt["removed"]["directory"] == 1 and "ann" not in orjson.dumps(
                receipt).decode()
            assert (await client.get("/users/ann", headers=auth)).status == 404
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_named_admin_tokens_open_every_serve_admin_route(redis_url: str) -> None:
    """The named tokens `scenetrigger config` and the console take
    ($SCENETRIGGER_ADMIN_TOKENS) open serve's admin routes too; with no
    admin variable at all every route is refused."""
    prefix = f"un{uuid.uuid4().hex[:8]}:"
    cfg = load_config_text(_config(prefix))
    redis = Redis.from_url(redis_url)
    routes = ["/users/ann", "/users/ann/tags", "/users/ann/score", "/inbox/ann"]
    try:
        env = {ADMIN_TOKENS_ENV: "alice=tok-alice, bob=tok-bob"}
        async with TestClient(TestServer(build_app(ServeParts(cfg, redis, ListSink(),
                                                              env=env)))) as client:
            for route in routes:
                for token in ("tok-alice", "tok-bob"):
                    got = await client.get(route, headers={"Authorization": f"Bearer {token}"})
                    assert got.status in (200, 404), (route, token, got.status)
                wrong = await client.get(route, headers={"Authorization": "Bearer tok-carol"})
                assert wrong.status == 401, route
                named = await client.get(route, headers={"Authorization": "Bearer alice"})
                assert named.status == 401, route  # a name is not a token
        async with TestClient(TestServer(build_app(ServeParts(cfg, redis, ListSink(),
                                                              env={})))) as client:
            for route in routes[:3]:
                got = await client.get(route, headers={"Authorization": "Bearer tok-alice"})
                assert got.status == 403, route
                assert ADMIN_TOKENS_ENV in await got.text()
            inbox = await client.get("/inbox/ann", headers={"Authorization": "Bearer tok-alice"})
            assert inbox.status == 401
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_users_set_and_get_commands(redis_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"uc{uuid.uuid4().hex[:8]}:"
    args = ["--redis-url", redis_url, "--prefix", prefix, "--json"]
    code = await asyncio.to_thread(main, ["users", "set", "bob", "email=bob@example.com",
                                          "attr.city=杭州", "consent.sms=yes", *args])
    assert code == 0
    set_shows = orjson.loads(capsys.readouterr().out)
    assert await asyncio.to_thread(main, ["users", "get", "bob", *args]) == 0
    out = capsys.readouterr().out
    assert out.endswith("}\n")  # a shell prompt after it starts on its own line
    shown = orjson.loads(out)
    assert await asyncio.to_thread(main, ["users", "get", "bob", *args[:-1]]) == 0
    pretty = capsys.readouterr().out
    assert pretty.endswith("}\n") and orjson.loads(pretty) == shown
    assert set_shows == shown  # set prints the record as get does, consent included
    assert shown["email"] == "bob@example.com" and shown["attributes"] == {"city": "杭州"}
    assert shown["consent"]["sms:marketing"]["granted"] is True
    assert shown["consent"]["sms:marketing"]["source"] == "cli"
    assert await asyncio.to_thread(main, ["users", "set", "bob", "email=nope", *args]) == 1
    assert await asyncio.to_thread(main, ["users", "get", "nobody", *args]) == 1
    redis = Redis.from_url(redis_url)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    await redis.delete(*keys)
    await redis.aclose()


async def test_an_import_of_thousands_upserts_in_batches(redis_url: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"ub{uuid.uuid4().hex[:8]}:"
    rows = ["user_id,email,attr.n"] + [f"b{n},b{n}@example.com,{n}" for n in range(1_200)]
    rows += ["b7,b7-new@example.com,again", "b8,broken,"]  # a later row wins; a bad one is reported
    users = tmp_path / "bulk.csv"
    users.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["--redis-url", redis_url, "--prefix", prefix, "--json"]
    code = await asyncio.to_thread(main, ["users", "import", str(users), *args])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 2 and report["rejected"] == 1 and report["rejects"][0]["line"] == 1_203
    redis = Redis.from_url(redis_url)
    try:
        assert len([k async for k in redis.scan_iter(match=f"{prefix}user:*")]) == 1_200
        b7 = orjson.loads(await redis.get(f"{prefix}user:{{b7}}") or b"null")
        assert b7["email"] == "b7-new@example.com" and b7["attributes"] == {"n": "again"}
        old_address = [k async for k in redis.scan_iter(match=f"{prefix}addr:email:*")]
        assert len(old_address) == 1_200  # b7's old address left the reverse index
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        await redis.delete(*keys)
        await redis.aclose()


async def test_consent_set_by_the_cli_is_an_event_in_the_stream(
        redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.agents.kafka_read import read_topic

    prefix = f"uk{uuid.uuid4().hex[:8]}:"
    topics = f"t-users-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()  # the topic exists before the CLI writes to it
    await producer.send_and_wait(f"{topics}.events", b'{"marker": 1}', key=b"m")
    await producer.stop()
    users = tmp_path / "u.jsonl"
    users.write_text('{"user_id": "li", "phone": "+8613800000001", "consent": {"sms": true}}\n',
                     encoding="utf-8")
    args = ["--redis-url", redis_url, "--prefix", prefix, "--broker", kafka_bootstrap,
            "--topic-prefix", topics]
    assert await asyncio.to_thread(main, ["users", "import", str(users), *args]) == 0
    assert await asyncio.to_thread(main, ["users", "set", "li", "consent.sms=no", *args]) == 0
    records = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap,
                                                               f"{topics}.events")]
    changes = [(r["type"], r["user_id"], r["channel"], r["detail"], r["source"])
               for r in records if "type" in r]
    assert changes == [("subscribed", "li", "sms", "marketing", "import"),
                       ("unsubscribed", "li", "sms", "marketing", "cli")]
    redis = Redis.from_url(redis_url)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    await redis.delete(*keys)
    await redis.aclose()


async def test_identify_api_publishes_the_identify_event(redis_url: str) -> None:
    cfg = load_config_text(_config(f"ui{uuid.uuid4().hex[:8]}:"))
    redis = Redis.from_url(redis_url)
    published: list[dict[str, object]] = []

    async def publish(event: dict[str, object]) -> None:
        published.append(event)

    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        without = build_app(ServeParts(cfg, redis, ListSink(), env={TOKEN_ENV: ADMIN}))
        async with TestClient(TestServer(without)) as client:
            resp = await client.post("/identify", headers=auth,
                                     json={"anonymous_id": "d1", "user_id": "u1"})
            assert resp.status == 503  # no broker: nowhere to send it
        app = build_app(ServeParts(cfg, redis, ListSink(), env={
            TOKEN_ENV: ADMIN, IDENTIFY_TOKEN_ENV: BACKEND, COLLECTOR_TOKEN_ENV: "public"},
            publish=publish))
        async with TestClient(TestServer(app)) as client:
            body = {"anonymous_id": "d1", "user_id": "u1", "ts": 5}
            # No token, the collector's public token, a wrong one: 403, nothing sent.
            for headers in ({}, {"Authorization": "Bearer public"},
                            {"Authorization": f"Bearer {BACKEND}x"}):
                refused = await client.post("/users/identify", headers=headers, json=body)
                assert refused.status == 403
                assert (await refused.json())["reason"] == "identify_unauthorized"
            assert (await client.post("/identify", json=body)).status == 403
            assert (await client.post("/identify", headers=auth,
                                      json={"anonymous_id": "u1", "user_id": "u1"})).status == 422
            ok = await client.post("/identify", headers=auth, json=body)
            assert ok.status == 202
            backend = await client.post("/users/identify", json=body,
                                        headers={"Authorization": f"Bearer {BACKEND}"})
            assert backend.status == 202
            metrics = await (await client.get("/metrics")).text()
            assert "scenetrigger_identify_refused_total 4.0" in metrics
    finally:
        await redis.aclose()
    assert published == [{"user_id": "d1", "ts": 5, "type": "identify", "known_id": "u1"}] * 2


def test_import_rows_say_what_is_wrong_with_the_file_or_the_id() -> None:
    from scenetrigger.cli.ops.users import Rejected, read_rows
    from triggers.errors import SceneTriggerError

    with pytest.raises(SceneTriggerError, match="no user_id column \\(it has: foo, bar\\)"):
        list(read_rows(iter([b"foo,bar\n", b"1,2\n"]), "csv"))
    with pytest.raises(SceneTriggerError, match="no user_id column"):
        list(read_rows(iter([b"\xff\xfe\x00\x01\n"]), "csv"))  # not text at all
    assert list(read_rows(iter([]), "csv")) == []  # an empty file: nothing to do
    got = list(read_rows(iter([b'{"user_id": 5}\n', b'{"email": "a@b.co"}\n']), "jsonl"))
    assert [(r.line, r.reason) for r in got if isinstance(r, Rejected)] == [
        (1, "user_id: must be a string, not int"), (2, "user_id: missing")]


def test_erase_says_what_became_of_the_engine_state(redis_url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "erase.yaml"  # the receipt goes under a prefix of this test's own
    config.write_text(f"scenes: {{}}\ndelivery: {{redis_prefix: 'ue{uuid.uuid4().hex[:8]}:'}}\n")
    assert main(["erase", "nobody", "--redis-url", redis_url, "--config", str(config),
                 "--tags-prefix", f"uet{uuid.uuid4().hex[:8]}:"]) == 0
    err = capsys.readouterr().err
    assert "erased: 0 items; engine state: not asked (no broker)" in err


async def test_users_import_writes_attributes_events_that_date_scenes_fire_on(
        redis_url: str, tmp_path: Path) -> None:
    prefix = f"ud{uuid.uuid4().hex[:8]}:"
    users = tmp_path / "users.jsonl"
    users.write_text(
        '{"user_id": "ann", "email": "ann@example.com", "timezone": "Europe/Berlin", '
        '"attributes": {"birthday": "1990-06-17", "tier": "gold"}}\n'
        '{"user_id": "bob", "email": "bob@example.com", "attributes": {"tier": "silver"}}\n'
        '{"user_id": "cid", "email": "cid@example.com", "attributes": {"birthday": "02-29"}}\n',
        encoding="utf-8")
    events = tmp_path / "attributes.jsonl"
    args = ["--redis-url", redis_url, "--prefix", prefix, "--events", str(events)]
    assert await asyncio.to_thread(main, ["users", "import", str(users), *args]) == 0
    written = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    now = written[0]["ts"]
    assert written == [
        {"user_id": "ann", "ts": now, "type": "attributes", "birthday": "1990-06-17",
         "tz": "Europe/Berlin"},
        {"user_id": "cid", "ts": now, "type": "attributes", "birthday": "02-29"}]
    # The engine takes them: a date scene arms a timer for each.
    from config.loader import validate_config
    from triggers import Engine
    from triggers.events import event_from_mapping

    engine = Engine(validate_config({"scenes": {"b": {"kind": "date",
                                                      "attribute": "birthday"}}}).scene_list())
    for event in written:
        engine.handle(event_from_mapping(event))
    assert sorted(p.user_id for p in engine.pending_timers()) == ["ann", "cid"]
    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"{prefix}*")])
    finally:
        await redis.aclose()
