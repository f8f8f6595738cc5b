"""Keyed hashes of what must stay unreadable: do-not-contact entries and
erasure receipts (docs/security.md, "What is hashed").

They used to be plain SHA-256 of the address or of the id: an erased user's
phone number came back from ``st:dnc:*`` by trying a million numbers in
1.4 s (issue 19). Now each is an HMAC-SHA256 under a secret key from the
environment, over the old digest (so an old entry can be re-keyed without
the address it hides)::

    dnc     = hex(HMAC-SHA256(K, "dnc\\n"     + hex(SHA256(kind + "\\n" + normal_address))))
    receipt = hex(HMAC-SHA256(K, "erasure\\n" + hex(SHA256("erasure\\n" + user_id))))
    key id  = hex(HMAC-SHA256(K, "scenetrigger hash key id"))[:8]

``K`` is ``$SCENETRIGGER_HASH_KEY`` (UTF-8). Rotation: the new key there, the
old ones in ``$SCENETRIGGER_HASH_KEY_PREVIOUS`` (comma-separated): lookups
also try them and the unkeyed digest, and a do-not-contact entry found that
way moves under the current key. ``scenetrigger hash-keys migrate`` re-keys
every unkeyed entry at once; ``hash-keys status`` counts entries per key id.

Unset: a loud warning and the documented development key
:data:`DEVELOPMENT_KEY` (``make demo`` needs no setup); with
``$SCENETRIGGER_REQUIRE_HASH_KEY=1`` (the shipped compose sets it) the
commands that write or read these entries refuse to start instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from triggers.errors import SceneTriggerError

HASH_KEY_ENV = "SCENETRIGGER_HASH_KEY"
HASH_KEY_PREVIOUS_ENV = "SCENETRIGGER_HASH_KEY_PREVIOUS"
REQUIRE_HASH_KEY_ENV = "SCENETRIGGER_REQUIRE_HASH_KEY"
# Public, so no secret: entries made with it are as guessable as unkeyed ones.
DEVELOPMENT_KEY = "scenetrigger-development-hash-key-not-secret"
LEGACY = "unkeyed"  # the key id of an entry from before keyed hashes


class HashKeyMissing(SceneTriggerError):
    """$SCENETRIGGER_HASH_KEY unset while $SCENETRIGGER_REQUIRE_HASH_KEY=1."""


def legacy_dnc(kind_and_normal: str) -> str:
    """The unkeyed digest (``channels.audience.directory.address_hash``'s formula)."""
    return hashlib.sha256(kind_and_normal.encode()).hexdigest()


def legacy_subject(user_id: str) -> str:
    """The unkeyed digest an erasure receipt was named by before."""
    return hashlib.sha256(f"erasure\n{user_id}".encode()).hexdigest()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class HashKeys:
    current: bytes
    previous: tuple[bytes, ...] = ()
    development: bool = False  # the key is DEVELOPMENT_KEY (none was set)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HashKeys:
        environ = os.environ if env is None else env
        key = environ.get(HASH_KEY_ENV, "")
        previous = tuple(p.strip().encode() for p in
                         environ.get(HASH_KEY_PREVIOUS_ENV, "").split(",") if p.strip())
        if key:
            return cls(key.encode(), previous)
        return cls(DEVELOPMENT_KEY.encode(), previous, development=True)

    @staticmethod
    def key_id_of(key: bytes) -> str:
        return _mac(key, "scenetrigger hash key id")[:8]

    @property
    def key_id(self) -> str:
        return self.key_id_of(self.current)

    def previous_ids(self) -> list[str]:
        return [self.key_id_of(k) for k in self.previous]

    def dnc(self, inner: str, key: bytes | None = None) -> str:
        """The do-not-contact name of ``inner`` (an ``address_hash``)."""
        return _mac(key or self.current, f"dnc\n{inner}")

    def dnc_candidates(self, inner: str) -> list[str]:
        """Where an entry may be: current key, previous keys, then unkeyed."""
        return [self.dnc(inner), *(self.dnc(inner, k) for k in self.previous), inner]

    def subject(self, user_id: str, key: bytes | None = None) -> str:
        """The erasure receipt's name for the user."""
        return self.subject_of_legacy(legacy_subject(user_id), key)

    def subject_of_legacy(self, legacy: str, key: bytes | None = None) -> str:
        return _mac(key or self.current, f"erasure\n{legacy}")

    def subject_candidates(self, user_id: str) -> list[str]:
        return [self.subject(user_id), *(self.subject(user_id, k) for k in self.previous),
                legacy_subject(user_id)]


def startup_check(command: str, env: Mapping[str, str] | None = None) -> HashKeys:
    """The keys for a command that writes or reads do-not-contact entries or
    receipts: refuses (:class:`HashKeyMissing`) when none is set and one is
    required; prints a warning when the development key stands in."""
    import sys

    environ = os.environ if env is None else env
    keys = HashKeys.from_env(environ)
    if keys.development:
        if environ.get(REQUIRE_HASH_KEY_ENV, "") not in ("", "0"):
            raise HashKeyMissing(
                f"{command}: {HASH_KEY_ENV} is not set and {REQUIRE_HASH_KEY_ENV}=1: "
                "set a secret key (e.g. `openssl rand -hex 32`) in every process that "
                "reads or writes do-not-contact entries (docs/security.md)")
        print(f"scenetrigger {command}: WARNING {HASH_KEY_ENV} is not set: do-not-contact "
              "entries and erasure receipts are hashed with the public development key, "
              "as guessable as no key (set it in production; docs/security.md)",
              file=sys.stderr, flush=True)
    return keys
