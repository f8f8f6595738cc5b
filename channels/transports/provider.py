"""A generic HTTP provider adapter for SMS, WeChat template messages and app push.

The request shape comes from config: method, URL, static headers, headers
and query parameters read from environment variables (secrets), and a body
template. Placeholders (``${name}``, see :mod:`config.safe_template`) are
filled from the message: ``message_id``, ``trigger_id``, ``user_id``,
``scene``, ``channel``, ``subject``, ``text``, ``html``, ``created_ms`` and
``data.<key>`` (nested keys dotted). Values are escaped for where they land:
JSON string content, form or URL encoding. A structured ``body`` (mapping or
list) is filled leaf by leaf and then encoded, so no value can break out of
its string.

Success: the status is in ``success_status`` (default any 2xx) and, if
``success_json`` is set, the JSON answer's field equals the expected value.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message, MissingSecret
from channels.transports.retry import Attempt, RetryPolicy, Sleep, run_attempts
from channels.transports.webhook import classify_status, exception_attempt, pooled_session
from config.channel_models import ProviderModel, SuccessJsonModel
from config.safe_template import (
    Template,
    TemplateError,
    compile_template,
    flatten_values,
    json_escape,
)

# Example request shapes; a config names one by ``type`` and overrides fields.
PRESETS: dict[str, dict[str, Any]] = {
    # A typical SMS gateway: JSON with the phone number and the text.
    "sms": {
        "method": "POST",
        "headers": {"Accept": "application/json"},
        "body_format": "json",
        "body": {"to": "${data.phone}", "text": "${text}", "reference": "${message_id}"},
        "success_status": [200, 201, 202],
    },
    # WeChat Official Account template message (cgi-bin/message/template/send):
    # the access token goes in the query (query_env: {access_token: ENV}).
    "wechat": {
        "method": "POST",
        "headers": {},
        "body_format": "json",
        "body": {
            "touser": "${data.openid}",
            "template_id": "${data.template_id}",
            "client_msg_id": "${message_id}",  # WeChat drops a repeated id
            "url": "${data.url}",
            "data": {
                "first": {"value": "${subject}"},
                "remark": {"value": "${text}"},
            },
        },
        "success_status": [200],
        "success_json": {"field": "errcode", "equals": 0, "retry_on": [-1]},
    },
    # An FCM-like push: device token, title and body, plus ids for the app.
    "push": {
        "method": "POST",
        "headers": {},
        "body_format": "json",
        "body": {
            "to": "${data.device_token}",
            "notification": {"title": "${subject}", "body": "${text}"},
            "data": {"message_id": "${message_id}", "scene": "${scene}"},
        },
        "success_status": [200],
    },
}


def message_values(message: Message) -> dict[str, str]:
    """The placeholder values of a message: a flat mapping of plain strings."""
    values = {
        "message_id": message.message_id, "trigger_id": message.trigger_id,
        "user_id": message.user_id, "scene": message.scene, "channel": message.channel,
        "subject": message.subject, "text": message.text, "html": message.html or "",
        "created_ms": str(message.created_ms),
    }
    values.update(flatten_values(message.data, prefix="data."))
    return values


@dataclass(frozen=True, slots=True)
class RequestShape:
    method: str
    url: Template
    headers: Mapping[str, str]
    body: Any  # a compiled structure: Template leaves inside dicts/lists, or a Template
    body_format: str
    success_status: frozenset[int] | None
    success_json: SuccessJsonModel | None
    # Push: one request per device token in ``data.device_tokens`` (the user
    # directory's tokens), each with its own ``data.device_token``/``platform``.
    fan_out: bool = False

    def render_body(self, values: Mapping[str, str]) -> tuple[bytes | None, str | None]:
        if self.body is None:
            return None, None
        if isinstance(self.body, Template):
            escape = {"json": json_escape, "form": _form_escape}.get(self.body_format)
            return self.body.render(values, escape).encode(), _CONTENT_TYPES[self.body_format]
        filled = _fill(self.body, values)
        if self.body_format == "form":
            if not isinstance(filled, dict):
                raise TemplateError("a form body must be a mapping")
            return urlencode({k: _scalar(v) for k, v in filled.items()}).encode(), \
                _CONTENT_TYPES["form"]
        if self.body_format == "text":
            raise TemplateError("a text body must be a string template")
        return orjson.dumps(filled), _CONTENT_TYPES["json"]


_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded",
                  "text": "text/plain; charset=utf-8"}


def _form_escape(value: str) -> str:
    return quote(value, safe="")


def _compile(value: Any) -> Any:
    if isinstance(value, str):
        return compile_template(value)
    if isinstance(value, dict):
        return {key: _compile(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_compile(item) for item in value]
    return value


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, Template):
        return value.render(values)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    return value


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def build_shape(model: ProviderModel, env: Mapping[str, str]) -> RequestShape:
    """Merge ``model`` over its preset and read the env-held secrets.
    Raises :class:`KeyError` naming a missing environment variable."""
    preset = PRESETS[model.type]
    headers = dict(model.headers if model.headers is not None else preset["headers"])
    for header, var in model.headers_env.items():
        headers[header] = env[var]
    url = model.url
    if model.query_env:
        query = urlencode({param: env[var] for param, var in model.query_env.items()})
        url += ("&" if "?" in url else "?") + query  # urlencode escapes "$" too
    body = model.body if model.body is not None else preset["body"]
    success_json = model.success_json
    # An explicit ``success_json: null`` turns the preset's rule off.
    if "success_json" not in model.model_fields_set and "success_json" in preset:
        success_json = SuccessJsonModel.model_validate(preset["success_json"])
    statuses = model.success_status if model.success_status is not None \
        else preset.get("success_status")
    return RequestShape(
        method=model.method or preset["method"],
        url=compile_template(url),
        headers=headers,
        body=_compile(body),
        body_format=model.body_format or preset["body_format"],
        success_status=frozenset(statuses) if statuses else None,
        success_json=success_json,
        fan_out=model.type == "push",
    )


def judge(shape: RequestShape, status: int, headers: Mapping[str, str], body: bytes) -> Attempt:
    """Did the provider accept the message? Shared rules for status, then JSON."""
    if shape.success_status is not None and status in shape.success_status:
        outcome = Attempt(True, status=status)
    else:
        outcome = classify_status(status, headers)
        if outcome.ok:  # a 2xx the config does not count as success
            return Attempt(False, f"HTTP {status} not in success_status", False, status)
    if not outcome.ok or shape.success_json is None:
        return outcome
    rule = shape.success_json
    try:
        found: Any = orjson.loads(body)
        for key in rule.field.split("."):
            found = found[key] if isinstance(found, dict) else None
    except orjson.JSONDecodeError:
        return Attempt(False, f"HTTP {status} with a non-JSON answer", False, status)
    if found == rule.equals and type(found) is type(rule.equals):
        return outcome
    text = f"{rule.field}={found!r} (want {rule.equals!r}): {body[:200].decode(errors='replace')}"
    return Attempt(False, text, found in rule.retry_on, status)


@dataclass(slots=True)
class ProviderChannel:
    name: str
    shape: RequestShape
    timeout_ms: int = 5_000
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_connections: int = 100
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)  # once: seeding is slow
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    retries_internally = True

    def _client(self) -> aiohttp.ClientSession:
        self._session = pooled_session(self._session, self.max_connections, self.timeout_ms)
        return self._session

    async def send(self, message: Message) -> DeliveryResult:
        tokens = message.data.get("device_tokens") if self.shape.fan_out else None
        if not isinstance(tokens, list) or len(tokens) < 2:
            return await self._send_one(message, message.message_id)
        # Every device of the user: delivered when one got it (a stale token of an
        # uninstalled app fails for good and must not fail the others).
        results = [await self._send_one(
            replace(message, data={**message.data, "device_token": str(t.get("token", "")),
                                   "platform": str(t.get("platform", ""))}),
            f"{message.message_id}:{n}") for n, t in enumerate(tokens) if isinstance(t, dict)]
        ok = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        if ok and not failed:
            return ok[0]
        errors = "; ".join(f"token {n}: {r.error}" for n, r in enumerate(results) if not r.ok)
        first = (ok or failed)[0]
        return DeliveryResult(bool(ok), self.name, message.message_id,
                              max(r.attempts for r in results), errors or None,
                              not ok and any(r.retryable for r in failed), first.status)

    async def _send_one(self, message: Message, idempotency_key: str) -> DeliveryResult:
        values = message_values(message)
        try:
            url = self.shape.url.render(values, _form_escape)
            body, content_type = self.shape.render_body(values)
        except TemplateError as exc:  # e.g. no phone number for this user
            return DeliveryResult(False, self.name, message.message_id, 1, str(exc), False)
        # The same on every retry and redelivery: the provider may drop a repeat.
        headers = {"Idempotency-Key": idempotency_key, **self.shape.headers}
        if content_type is not None:
            headers["Content-Type"] = content_type
        session = self._client()

        async def attempt() -> Attempt:
            try:
                async with session.request(self.shape.method, url, data=body,
                                           headers=headers) as response:
                    answer = await response.read()
                    return judge(self.shape, response.status, response.headers, answer)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return exception_attempt(exc, self.timeout_ms)

        return await run_attempts(message, self.name, attempt, self.policy,
                                  sleep=self.sleep, rng=self.rng)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(name: str, model: ProviderModel, context: BuildContext) -> ProviderChannel:
    """A ``type: sms | wechat | push`` channel: the preset of its type with
    the config's fields over it (headers and query secrets from the environment)."""
    for field_name, names in (("headers_env", model.headers_env),
                              ("query_env", model.query_env)):
        for var in names.values():
            context.secret(field_name, var)
    try:
        shape = build_shape(model, context.env)
    except KeyError as exc:
        var = str(exc.args[0])
        where = "headers_env" if var in model.headers_env.values() else "query_env"
        raise MissingSecret(where, var) from None
    return ProviderChannel(name, shape, model.timeout, RetryPolicy.of(model.retry),
                           model.max_connections)


def _phone(contact: Any) -> dict[str, Any]:
    return {"phone": contact.phone} if contact.phone is not None else {}


def _openid(contact: Any) -> dict[str, Any]:
    return {"openid": contact.openid} if contact.openid is not None else {}


def _push(contact: Any) -> dict[str, Any]:
    """The newest token and its platform, and every token (the fan-out above)."""
    if not contact.push:
        return {}
    return {"device_token": contact.push[-1].token, "platform": contact.push[-1].platform,
            "device_tokens": [{"platform": t.platform, "token": t.token} for t in contact.push]}


# SMS marketing needs an opt-in with most carriers; the others start allowed.
KINDS = (
    ChannelKind("sms", ProviderModel, build, address_field="phone", default_consent="opt_in",
                template_fields=_phone),
    ChannelKind("wechat", ProviderModel, build, address_field="openid",
                default_consent="opt_out", template_fields=_openid),
    ChannelKind("push", ProviderModel, build, address_field="push", default_consent="opt_out",
                template_fields=_push),
)
