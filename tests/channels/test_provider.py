"""Provider adapters (SMS, WeChat, push) against a fake provider: a real
aiohttp server on loopback that records what it gets."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from channels.transports.provider import PRESETS, ProviderChannel, build_shape, message_values
from channels.transports.retry import RetryPolicy
from config.channel_models import ProviderModel
from tests.channels.receivers import Receiver, message, running_receiver

pytestmark = pytest.mark.integration

ENV = {"SMS_TOKEN": "tok-123", "WECHAT_ACCESS_TOKEN": "wx$tok&x=1"}
OK_JSON = (200, {"Content-Type": "application/json"}, b'{"errcode":0,"errmsg":"ok"}')


def provider(config: dict[str, Any], rx: Receiver) -> ProviderChannel:
    fields = {k: v for k, v in config.items() if k != "path"}
    model = ProviderModel.model_validate({**fields, "url": rx.base + config.get("path", "/p")})

    async def no_wait(_seconds: float) -> None:
        return None

    return ProviderChannel(model.type, build_shape(model, ENV), model.timeout,
                           RetryPolicy(max_attempts=3), sleep=no_wait, rng=random.Random(2))


async def test_sms_preset_sends_the_configured_shape() -> None:
    async with running_receiver(Receiver(default=202)) as rx:
        sms = provider({"type": "sms", "headers_env": {"Authorization": "SMS_TOKEN"}}, rx)
        msg = message(text='Cart: "shoes" \\ 50% off\n${text}')
        result = await sms.send(msg)
        await sms.close()
    assert (result.ok, result.status, result.attempts) == (True, 202, 1)
    got = rx.requests[0]
    assert (got.method, got.path) == ("POST", "/p")
    assert got.headers["Authorization"] == "tok-123"
    assert got.headers["Content-Type"] == "application/json"
    # The value is carried verbatim: quotes, backslashes, newlines and a
    # placeholder-looking text are data, never re-substituted.
    assert orjson.loads(got.body) == {"to": "+8613800000000", "text": msg.text,
                                      "reference": "m-1"}


async def test_wechat_errcode_decides_success_and_retry() -> None:
    busy: tuple[int, dict[str, str], bytes] = (200, {}, b'{"errcode":-1,"errmsg":"busy"}')
    bad: tuple[int, dict[str, str], bytes] = (200, {}, b'{"errcode":40003,"errmsg":"bad"}')
    config = {"type": "wechat", "query_env": {"access_token": "WECHAT_ACCESS_TOKEN"}}
    data = {"openid": "o-abc", "template_id": "T1", "url": "https://shop.example/c"}
    async with running_receiver(Receiver(script=[busy, OK_JSON, bad])) as rx:
        wechat = provider(config, rx)
        first = await wechat.send(message(data=data))
        second = await wechat.send(message(2, data=data))
        await wechat.close()
    assert (first.ok, first.attempts) == (True, 2)  # -1 is "busy": retried
    assert (second.ok, second.attempts, second.retryable) == (False, 1, False)
    assert "errcode=40003" in (second.error or "")
    assert rx.requests[0].query == {"access_token": "wx$tok&x=1"}  # escaped in the URL
    body = orjson.loads(rx.requests[0].body)
    assert body["touser"] == "o-abc" and body["template_id"] == "T1"
    assert body["data"]["first"]["value"] == "Still thinking?"


async def test_push_form_and_text_bodies() -> None:
    form = {"type": "push", "body_format": "form", "method": "PUT", "path": "/push/${user_id}",
            "body": {"token": "${data.device_token}", "title": "${subject}", "n": 3}}
    text = {"type": "sms", "body_format": "json", "success_status": [200],
            "body": '{"to": "${data.phone}", "msg": "${text}"}'}
    hostile = 'a", "admin": true, "x": "'
    async with running_receiver(Receiver()) as rx:
        push = provider(form, rx)
        sms = provider(text, rx)
        pushed = await push.send(message(user_id="u 1/2", data={"device_token": "d&t=1"}))
        texted = await sms.send(message(text=hostile))
        await push.close()
        await sms.close()
    assert pushed.ok and texted.ok
    form_req, text_req = rx.requests
    assert (form_req.method, form_req.raw_path) == ("PUT", "/push/u%201%2F2")  # escaped
    assert parse_qs(form_req.body.decode()) == {"token": ["d&t=1"], "title": ["Still thinking?"],
                                                "n": ["3"]}
    # A string template with JSON-escaped values: the hostile text stays one value.
    assert orjson.loads(text_req.body) == {"to": "+8613800000000", "msg": hostile}


async def test_status_outside_success_and_4xx_5xx() -> None:
    script = [201, 503, 200, 404]
    async with running_receiver(Receiver(script=script)) as rx:
        sms = provider({"type": "sms", "success_status": [200]}, rx)
        unexpected = await sms.send(message(1))
        retried = await sms.send(message(2))
        missing = await sms.send(message(3))
        await sms.close()
    assert (unexpected.ok, unexpected.retryable, unexpected.attempts) == (False, False, 1)
    assert (retried.ok, retried.attempts) == (True, 2)
    assert (missing.ok, missing.retryable, missing.status) == (False, False, 404)
    assert len(rx.requests) == 4


async def test_missing_placeholder_value_fails_without_a_request() -> None:
    async with running_receiver(Receiver()) as rx:
        sms = provider({"type": "sms"}, rx)
        result = await sms.send(message(data={}))  # no phone number for this user
        await sms.close()
    assert (result.ok, result.retryable) == (False, False)
    assert "data.phone" in (result.error or "")
    assert rx.requests == []


async def test_hostile_templates_cannot_reach_attributes_or_code() -> None:
    body = {"a": "${__class__}", "b": "{{7*7}}", "c": "${text.__class__}",
            "d": "{0.__class__.__mro__}", "e": "$${data.phone}", "f": "${a.b}"}
    async with running_receiver(Receiver()) as rx:
        sms = provider({"type": "sms", "body": body}, rx)
        refused = await sms.send(message())
        safe = provider({"type": "sms", "body": {k: body[k] for k in "bde"}}, rx)
        sent = await safe.send(message(data={"a": {"b": "nested"}}))
        await sms.close()
        await safe.close()
    assert not refused.ok and "__class__" in (refused.error or "")
    assert sent.ok
    assert orjson.loads(rx.requests[0].body) == {
        "b": "{{7*7}}", "d": "{0.__class__.__mro__}", "e": "${data.phone}"}
    assert len(rx.requests) == 1


def test_presets_validate_and_values_are_flat_strings() -> None:
    for kind in PRESETS:
        model = ProviderModel.model_validate({"type": kind, "url": "http://127.0.0.1:9/x"})
        shape = build_shape(model, ENV)
        assert shape.method == "POST" and shape.body_format == "json"
    values = message_values(message(data={"a": {"b": 1, "c": [1, 2]}, "ok": True, "n": None}))
    assert values["data.a.b"] == "1" and values["data.a.c"] == "[1,2]"
    assert values["data.ok"] == "true" and "data.n" not in values
    assert all(isinstance(v, str) for v in values.values())


async def test_push_goes_to_every_device_token_of_the_user() -> None:
    tokens = [{"platform": "ios", "token": "t-ios"}, {"platform": "android", "token": "t-old"},
              {"platform": "web", "token": "t-web"}]
    async with running_receiver(Receiver(script=[200, 400, 200])) as rx:
        push = provider({"type": "push"}, rx)
        msg = message(data={"device_token": "t-web", "platform": "web", "device_tokens": tokens})
        result = await push.send(msg)
        single = await push.send(message(data={"device_token": "t-only"}))
        await push.close()
    sent = [orjson.loads(r.body)["to"] for r in rx.requests]
    assert sent == ["t-ios", "t-old", "t-web", "t-only"]
    keys = [r.headers["Idempotency-Key"] for r in rx.requests]
    assert keys == ["m-1:0", "m-1:1", "m-1:2", "m-1"]  # one per device; a single one as before
    # A stale token fails for good; the user got it on the others.
    assert result.ok and result.error is not None and "token 1" in result.error
    assert single.ok and single.error is None
