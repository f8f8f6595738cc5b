"""An on-site slot's impression as a message id, so the feedback routes
count it with no index entry: the open pixel (the snippet's beacon) and the
click redirect of ``GET /slots`` answers are signed for this id, and the id
itself says whose impression of which slot and variant it is.

``slot:<slot>:<variant>:<ms>:<user>``, each part percent-encoded. Only signed ids are
ever looked up (both routes check the signature first), so a browser cannot
make one up for another visitor.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from channels.feedback.events import MessageIndex, MessageMeta

SLOT_CHANNEL = "slot"
_PREFIX = "slot:"


def impression_user(user_id: str) -> str:
    """The user as an impression id ends with it (no glob character: erasure
    finds the impressions' once-markers by it)."""
    return quote(user_id, safe="")


def impression_id(slot: str, variant: str, ts: int, user_id: str) -> str:
    # Each part percent-encoded: a variant (a default's name) may hold ":".
    return f"{_PREFIX}{quote(slot, safe='')}:{quote(variant, safe='')}:{ts}:" \
           f"{impression_user(user_id)}"


def impression_meta(message_id: str) -> MessageMeta | None:
    """The impression's user, slot and variant; None for any other id."""
    if not message_id.startswith(_PREFIX):
        return None
    parts = message_id[len(_PREFIX):].split(":", 3)
    if len(parts) != 4 or not all(parts) or not parts[2].isdigit():
        return None
    slot, variant, _ts, user = parts
    return MessageMeta(unquote(user), "", SLOT_CHANNEL, slot=unquote(slot),
                       variant=unquote(variant))


class SlotAwareIndex:
    """A message index that also knows slot impressions (by their id)."""

    def __init__(self, inner: MessageIndex) -> None:
        self._inner = inner

    async def remember(self, message_id: str, meta: MessageMeta) -> None:
        await self._inner.remember(message_id, meta)

    async def lookup(self, message_id: str) -> MessageMeta | None:
        found = impression_meta(message_id)
        return found if found is not None else await self._inner.lookup(message_id)

    async def first(self, kind: str, message_id: str, part: str = "") -> bool:
        return await self._inner.first(kind, message_id, part)
