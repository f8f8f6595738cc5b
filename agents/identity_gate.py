"""Who may say that two ids are one person (docs/security.md, "Identity").

An ``identify`` is a statement of the shop's backend, never of a browser:
the collector, ``produce`` and ``serve`` let one in only with the backend's
credential (``$SCENETRIGGER_IDENTIFY_TOKEN``): sent by a caller that holds
it (the collector's bearer token, an operator's ``produce --allow-identify``)
or signed with it (:func:`config.tokens.identify_signature` in the event's
``identify_sig`` field). Anything else is refused with
:data:`REASON_IDENTIFY_UNAUTHORIZED`. The admin merge of two known users
(:data:`triggers.merge.ADMIN_MERGE`) is a reserved type no client may send
(:mod:`agents.producer`).
"""

from __future__ import annotations

from config.tokens import IDENTIFY_TOKEN_ENV, identify_signed
from triggers.errors import EventRejected
from triggers.events import Event
from triggers.host import IDENTIFY

REASON_IDENTIFY_UNAUTHORIZED = "identify_unauthorized"
REASON_SYSTEM_TYPE = "system_type"
# Facts a browser cannot know and may not state about anyone: what
# scenetrigger records about its own messages and the catalog (a delivery or
# an on-site slot impression, a failure, an open or click from the signed
# pixel and redirect of `serve`, a share or conversion a provider reports, a
# bounce, a catalog change), a consent change (`serve`'s unsubscribe routes,
# `users set`), and the directory's date attributes (`date` scenes fire on
# them). From a browser, under any user id, they would forge another user's
# funnel, timeline, consent or birthday message, so only the backend may.
SYSTEM_TYPES = frozenset({"delivered", "failed", "opened", "clicked", "shared", "converted",
                          "bounced", "subscribed", "unsubscribed", "attributes",
                          "catalog_change"})


def identify_refused(event: Event, secret: str | None, trusted: bool) -> EventRejected | None:
    """Why ``event`` may not be let in (None: it may): an identify from an
    untrusted caller without a valid signature. ``trusted``: the caller
    proved it holds the backend's credential."""
    if event.type != IDENTIFY or trusted or identify_signed(event.fields, secret):
        return None
    return EventRejected(REASON_IDENTIFY_UNAUTHORIZED,
                         "identify is a backend statement: send it with the identify token "
                         f"(${IDENTIFY_TOKEN_ENV}) or signed with it (identify_sig)")


def system_type_refused(event: Event, trusted: bool) -> EventRejected | None:
    """Why ``event`` may not come from an untrusted caller (None: it may):
    it is of a type only scenetrigger itself (or the backend) writes."""
    if event.type not in SYSTEM_TYPES or trusted:
        return None
    return EventRejected(REASON_SYSTEM_TYPE,
                         f"type {event.type!r} is a fact of the product, a provider or the "
                         f"directory, not of a browser (docs/security.md): send it with "
                         f"the identify token (${IDENTIFY_TOKEN_ENV})")
