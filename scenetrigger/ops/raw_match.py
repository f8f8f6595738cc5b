"""Does a stored value that does not parse belong to a user? Its raw bytes say.

Erasure and ``export-user`` read most values through their models; a value
that does not parse (a truncated trigger record in the dead-letter, a
damaged deferred payload or message-index entry) used to be skipped, and
stayed after ``erase`` (issue 19). :class:`RawMatcher` matches such bytes on
the user's id and contact points instead:

* the id, case-sensitive, as it is and JSON-escaped, between quotes, ``|``
  (trigger ids), ``/``, white space or the ends of the value: ``u1`` does not
  match ``u10`` nor ``u1@example.com``, and a short id such as ``1`` does not
  match the number in ``{"v":1}``;
* each contact point (email, phone, openid, push token), case-insensitive,
  as stored and normalised (``channels.audience.directory.normal_address``), as a
  whole token (not inside a longer address).
 Only values nothing can parse are matched so:
they can never be redriven, so a wider match loses nothing a redrive needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

from channels.audience.directory import normal_address

# Characters that continue a token: an id or address inside a longer one.
_WORD = rb"A-Za-z0-9_@.+\-"


def _token(needle: bytes) -> bytes:
    return rb"(?<![" + _WORD + rb"])" + re.escape(needle) + rb"(?![" + _WORD + rb"])"


def _delimited(needle: bytes) -> bytes:
    return rb"(?:^|(?<=[\"|/\s]))" + re.escape(needle) + rb"(?=[\"|/\s]|$)"


class RawMatcher:
    def __init__(self, user_id: str, addresses: Iterable[tuple[str, str]] = ()) -> None:
        ids = {user_id.encode(), orjson.dumps(user_id)[1:-1]}
        points = {v for kind, value in addresses
                  for v in (value.strip(), normal_address(kind, value)) if v}
        self._id = re.compile(b"|".join(_delimited(n) for n in sorted(ids)))
        self._points = (re.compile(b"|".join(_token(p.encode()) for p in sorted(points)),
                                   re.IGNORECASE) if points else None)

    def __call__(self, raw: bytes | str | None) -> bool:
        if raw is None:
            return False
        data = raw.encode(errors="surrogateescape") if isinstance(raw, str) else raw
        if self._id.search(data):
            return True
        return self._points is not None and self._points.search(data) is not None
