"""Membership records in, sink calls out: :class:`AudienceSync`.

An ``enter`` adds the user to the audience on every sink that maps it,
when the user has a contact point, consent for ads and no do-not-contact
entry; an ``exit`` removes them where they were added. :meth:`forget` (an
ads unsubscribe, an erasure) removes the user from every synced audience on
every platform and returns a receipt. :class:`AdsConsentWatch` calls it when
ads consent is withdrawn through any consent path.

Consent for ads is the ``ads`` channel type's record (``ads:marketing``,
set like any other: ``PUT /users/{id}/consent/ads``); with none, the
configured default (``delivery.audience.consent.ads``, ``opt_out`` when not
set) decides.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.ads.sink import AudienceSink, BatchResult, HashedMember, Member
from channels.ads.state import SyncState, entry
from channels.audience.consent import ConsentRecord, ConsentStore
from channels.audience.directory import Contact, Directory, address_hash
from channels.policy.control import bucket
from config.ads_models import ADS_CONSENT
from config.clock import wall_ms
from config.hash_keys import HashKeys
from triggers.audiences.record import AudienceChange

log = logging.getLogger("scenetrigger.ads")
CHANNEL_TYPE = ADS_CONSENT  # consent for ads is this channel type's
OUTCOMES = ("added", "removed", "unmapped", "holdout", "no_contact", "no_identifier", "no_consent",
            "do_not_contact", "not_synced", "already_synced")


@dataclass(slots=True)
class AudienceSync:
    sinks: Mapping[str, AudienceSink]
    routes: Mapping[str, Mapping[str, str]]  # sink -> {audience: the platform's id}
    directory: Directory
    consent: ConsentStore
    state: SyncState
    consent_default: str = "opt_out"
    keys: HashKeys | None = None  # receipt names; default: from the environment
    holdout: float = 0.0  # ads.holdout: members never synced, the report's baseline
    salt: str = "scenetrigger"  # strategies.control.salt
    unchecked: frozenset[str] = frozenset()  # audiences of `consent: none` (no consent check)
    outcomes: Counter[str] = field(default_factory=Counter)
    # What waits for its batch, by (sink, platform id, user): the state says
    # "synced" only once the platform took it, so a crash before that sends it
    # again on the next run, and an enter after a queued exit is not skipped.
    _to_mark: dict[tuple[str, str, str], tuple[str, int]] = field(default_factory=dict)
    _to_unmark: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def targets(self, audience: str) -> list[tuple[str, str]]:
        return [(sink, ids[audience]) for sink, ids in self.routes.items() if audience in ids]

    async def may_sync(self, user_id: str, contact: Contact,
                       consent: bool = True) -> str | None:
        """None when the user may be synced, else the reason; ``consent``
        False (an audience of ``consent: none``): do-not-contact alone."""
        if consent:
            # Ads are marketing: another purpose's record (the hash's order) says nothing.
            record = (await self.consent.all(user_id)).get(f"{CHANNEL_TYPE}:marketing")
            allowed = record.granted if record is not None else self.consent_default == "opt_out"
            if not allowed:
                return "no_consent"
        hashes = [address_hash(k, v) for k, v in contact.addresses() if k in ("email", "phone")]
        if hashes and any(await self.consent.blocked(hashes)):
            return "do_not_contact"
        return None

    async def apply(self, record: AudienceChange) -> str:
        outcome = await (self._enter(record) if record.op == "enter" else self._exit(record))
        self.outcomes[outcome] += 1
        return outcome

    async def _enter(self, record: AudienceChange) -> str:
        targets = self.targets(record.audience)
        if not targets:
            return "unmapped"
        if held_out(self.salt, self.holdout, record.audience, record.user_id):
            return "holdout"
        contact = await self.directory.get(record.user_id)
        if contact is None:
            return "no_contact"
        if contact.email is None and contact.phone is None:
            return "no_identifier"
        refused = await self.may_sync(record.user_id, contact,
                                      record.audience not in self.unchecked)
        if refused is not None:  # withdrawn since (e.g. `users set`): out where synced
            await self._remove_where_synced(record)
            return refused
        user = record.user_id
        synced = await self.state.synced(user)
        targets = [(s, p) for s, p in targets if entry(s, record.audience) not in synced
                   or (s, p, user) in self._to_unmark]
        if not targets:  # a re-read of the compacted topic: sent before
            return "already_synced"
        member = Member(user, contact.email, contact.phone)
        for sink, platform_id in targets:
            await self.sinks[sink].add(platform_id, [member])
            self._to_unmark.pop((sink, platform_id, user), None)
            self._to_mark[(sink, platform_id, user)] = (record.audience, int(record.ts * 1000))
        return "added"

    async def _exit(self, record: AudienceChange) -> str:
        return "removed" if await self._remove_where_synced(record) else "not_synced"

    async def _remove_where_synced(self, record: AudienceChange) -> bool:
        user = record.user_id
        synced = await self.state.synced(user)
        targets = [(s, p) for s, p in self.targets(record.audience)
                   if entry(s, record.audience) in synced or (s, p, user) in self._to_mark]
        if not targets:
            return False
        member = _member(user, await self.directory.get(user))
        for sink, platform_id in targets:
            self._to_mark.pop((sink, platform_id, user), None)
            if member is not None:
                await self.sinks[sink].remove(platform_id, [member])
                self._to_unmark[(sink, platform_id, user)] = record.audience
            else:  # nothing to send it with (the contact is gone): forget it here
                await self.state.unmark(user, sink, record.audience)
        return True

    async def flush(self, *, due_only: bool = False) -> list[BatchResult]:
        out = []
        for sink in self.sinks.values():
            out.extend(await sink.flush(due_only=due_only))
        await self._count(out)
        await self._settle(out)
        return out

    async def _settle(self, results: Iterable[BatchResult]) -> None:
        """The state follows what the platforms took; a batch that failed for
        good leaves it as it was (the failure is counted)."""
        for r in results:
            if r.requeued:
                continue
            for user in r.user_ids:
                key = (r.sink, r.audience, user)
                if r.op == "add":
                    marked = self._to_mark.pop(key, None)
                    if r.ok and marked is not None:
                        await self.state.mark(user, r.sink, marked[0], marked[1])
                else:
                    audience = self._to_unmark.pop(key, None)
                    if r.ok and audience is not None:
                        await self.state.unmark(user, r.sink, audience)

    async def drain(self, rounds: int = 20) -> list[BatchResult]:
        """Flush until nothing waits (failed batches are kept and sent again),
        at most ``rounds`` times."""
        out: list[BatchResult] = []
        for _ in range(rounds):
            out.extend(await self.flush())
            if self.pending() == 0:
                break
        return out

    def pending(self) -> int:
        return sum(sink.pending() for sink in self.sinks.values())

    async def _count(self, results: Iterable[BatchResult]) -> None:
        counts: Counter[str] = Counter()
        for r in results:
            base = f"{r.sink}|{r.audience}|{r.op}"
            if r.requeued:  # kept and sent again: counted when it is done
                counts[f"{base}|requeued_batches"] += 1
                continue
            counts[f"{base}|batches"] += 1
            counts[f"{base}|{'members' if r.ok else 'failed_members'}"] += r.members
        if counts:
            await self.state.count(counts)

    async def forget(self, user_id: str, reason: str, contact: Contact | None = None,
                     now_ms: int | None = None) -> dict[str, Any]:
        """Remove the user from every audience synced anywhere; the receipt
        names sinks and audiences and batch ids, never an identifier."""
        now = wall_ms() if now_ms is None else now_ms
        synced = set(await self.state.synced(user_id))
        for (sink, _, user), (audience, _) in list(self._to_mark.items()):
            if user == user_id:  # queued here, not sent yet: the remove cancels it
                synced.add(entry(sink, audience))
        self._to_mark = {k: v for k, v in self._to_mark.items() if k[2] != user_id}
        if contact is None:
            contact = await self.directory.get(user_id)
        member = _member(user_id, contact)
        removals, not_removed = [], []
        for name in sorted(synced):
            sink, _, audience = name.partition("|")
            platform_id = self.routes.get(sink, {}).get(audience)
            where = {"sink": sink, "audience": audience}
            if member is not None and platform_id is not None and sink in self.sinks:
                await self.sinks[sink].remove(platform_id, [member])
                removals.append(where)
            else:  # no contact points left, or the sink is no longer configured
                not_removed.append(where)
        # A short try: this runs inside an erasure or an unsubscribe request.
        results = await self.drain(rounds=2) if removals else []
        mine = [r for r in results if r.op == "remove" and user_id in r.user_ids]
        # What is still queued is kept, hashed, for the next `audiences sync`:
        # the contact points may be erased right after this.
        # The id itself is not kept: an erased user's removal names the
        # receipt's keyed hash instead (the webhook receives that).
        subject = (self.keys or HashKeys.from_env()).subject(user_id)
        kept = [{"sink": name, "audience": audience, "user_id": subject,
                 "email": member.email, "phone": member.phone}
                for name, sink in self.sinks.items()
                for audience, member in sink.take_removals(user_id)]
        await self.state.put_pending(kept)
        left = len(kept)
        receipt = {"reason": reason, "at_ms": now, "removed_from": removals,
                   "not_removed": not_removed,
                   "batches": [{"batch_id": r.batch_id, "sink": r.sink, "ok": r.ok}
                               for r in mine],
                   "complete": left == 0 and not not_removed, "pending": left}
        await self.state.forget(user_id)
        await self.state.put_receipt(subject, receipt)
        log.info("ads forget (%s): %d audience(s), complete=%s", reason, len(removals),
                 left == 0)
        return receipt

    async def resume_pending(self) -> int:
        """Queue the removals an erasure or unsubscribe could not send."""
        items = await self.state.take_pending()
        unknown = []
        for item in items:
            sink = self.sinks.get(item["sink"])
            if sink is None:  # no longer configured here: kept for a sync that has it
                unknown.append(item)
                continue
            await sink.remove_hashed(item["audience"], [HashedMember(
                item["user_id"], item.get("email"), item.get("phone"))])
        await self.state.put_pending(unknown)
        return len(items) - len(unknown)

    async def keep_unsent(self) -> int:
        """Put resumed removals still unsent back where the next sync finds them."""
        kept = [{"sink": name, "audience": audience, "user_id": member.user_id,
                 "email": member.email, "phone": member.phone}
                for name, sink in self.sinks.items()
                for audience, member in sink.take_removals(None)]
        await self.state.put_pending(kept)
        return len(kept)

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.close()


def held_out(salt: str, share: float, audience: str, user_id: str) -> bool:
    """The user is in the audience's holdout: never synced anywhere (the
    control-group hash, name ``ads:AUDIENCE``; docs/ads.md)."""
    return share > 0.0 and bucket(salt, f"ads:{audience}", user_id) < share


def _member(user_id: str, contact: Contact | None) -> Member | None:
    if contact is None or (contact.email is None and contact.phone is None):
        return None
    return Member(user_id, contact.email, contact.phone)


Forget = Callable[[str, Contact | None, int], Awaitable[dict[str, Any]]]


class AdsConsentWatch:
    """A consent store whose ads withdrawals take the user out of every
    synced audience (whichever path set it: the admin API, the preference
    page, a one-click unsubscribe). ``forget(user, contact, now_ms)``."""

    def __init__(self, inner: ConsentStore, forget: Forget) -> None:
        self.inner = inner
        self._forget = forget
        self.receipts: list[dict[str, Any]] = []

    async def all(self, user_id: str) -> dict[str, ConsentRecord]:
        return await self.inner.all(user_id)

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None:
        await self.inner.set(user_id, channel_type, purpose, record)
        if channel_type == CHANNEL_TYPE and not record.granted:
            self.receipts.append(await self._forget(user_id, None, record.ts))

    async def forget(self, user_id: str) -> bool:
        return await self.inner.forget(user_id)

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None:
        await self.inner.do_not_contact(hashes, ts, source)

    async def blocked(self, hashes: Sequence[str]) -> list[bool]:
        return await self.inner.blocked(hashes)
