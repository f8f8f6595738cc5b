"""A :class:`~channels.base.Message` as JSON: the webhook body, the inbox
entry and the dead-letter record all use this one shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from channels.base import Message
from channels.errors import ChannelError

_REQUIRED = ("message_id", "trigger_id", "user_id", "scene", "channel", "subject", "text")


class MessageDecodeError(ChannelError):
    """Stored bytes that are not a message this version can read."""


def message_to_dict(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "trigger_id": message.trigger_id,
        "user_id": message.user_id,
        "scene": message.scene,
        "channel": message.channel,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "data": _plain(message.data),
        "created_ms": message.created_ms,
    }


def message_to_json(message: Message) -> bytes:
    # default=str: a stray non-JSON value in ``data`` must not fail a delivery.
    return orjson.dumps(message_to_dict(message), default=str)


def message_from_dict(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise MessageDecodeError("a message must be a JSON object")
    for key in _REQUIRED:
        if not isinstance(raw.get(key), str):
            raise MessageDecodeError(f"message field {key!r} must be a string")
    html = raw.get("html")
    data = raw.get("data") or {}
    created = raw.get("created_ms", 0)
    if html is not None and not isinstance(html, str):
        raise MessageDecodeError("message field 'html' must be a string or null")
    if not isinstance(data, dict):
        raise MessageDecodeError("message field 'data' must be an object")
    if not isinstance(created, int) or isinstance(created, bool):
        raise MessageDecodeError("message field 'created_ms' must be an integer")
    return Message(
        message_id=raw["message_id"], trigger_id=raw["trigger_id"], user_id=raw["user_id"],
        scene=raw["scene"], channel=raw["channel"], subject=raw["subject"], text=raw["text"],
        html=html, data=data, created_ms=created,
    )


def message_from_json(raw: bytes | str) -> Message:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"not JSON: {exc}") from None
    return message_from_dict(parsed)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    # orjson serialises dict but not other Mapping types (e.g. MappingProxyType).
    return {key: _plain(value) if isinstance(value, Mapping) else value
            for key, value in data.items()}
