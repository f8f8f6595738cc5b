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


def identify_refused(event: Event, secret: str | None, trusted: bool) -> EventRejected | None:
    """Why ``event`` may not be let in (None: it may): an identify from an
    untrusted caller without a valid signature. ``trusted``: the caller
    proved it holds the backend's credential."""
    if event.type != IDENTIFY or trusted or identify_signed(event.fields, secret):
        return None
    return EventRejected(REASON_IDENTIFY_UNAUTHORIZED,
                         "identify is a backend statement: send it with the identify token "
                         f"(${IDENTIFY_TOKEN_ENV}) or signed with it (identify_sig)")
