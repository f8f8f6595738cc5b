"""The :class:`AudienceSink` interface (add / remove / flush) and the one
implementation every platform shares, :class:`BatchingSink`: batching by
size and time, the platform's rate limit, retries with back-off on 429 and
5xx (``Retry-After`` honoured), content-derived batch ids. A platform is a
:class:`PlatformClient`: it turns one :class:`Batch` into its request.

Members carry raw contact points only in memory; they are hashed when a
batch is built (send time). Nothing here logs an identifier: logs name
batches, audiences and counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from channels.ads.http import RateLimiter, Sleep
from channels.ads.identifiers import Style, hashed_email, hashed_phone
from channels.transports.retry import Attempt, RetryPolicy

log = logging.getLogger("scenetrigger.ads")
BatchOp = Literal["add", "remove"]


@dataclass(frozen=True, slots=True)
class Member:
    """A user and their contact points from the directory (never in a repr)."""

    user_id: str
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class HashedMember:
    user_id: str
    email: str | None  # SHA-256 hex of the platform's normal form
    phone: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    sink: str
    audience: str  # the platform's audience id
    op: BatchOp
    members: tuple[HashedMember, ...]
    batch_id: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    batch_id: str
    sink: str
    audience: str
    op: BatchOp
    members: int
    ok: bool
    attempts: int
    error: str | None = None
    status: int | None = None
    requeued: bool = False  # failed but kept: the next flush sends it again
    user_ids: tuple[str, ...] = ()  # whose identifiers the batch carried (not printed)

    def to_dict(self) -> dict[str, object]:
        return {"batch_id": self.batch_id, "sink": self.sink, "audience": self.audience,
                "op": self.op, "members": self.members, "ok": self.ok,
                "attempts": self.attempts, "error": self.error, "status": self.status,
                "requeued": self.requeued}


def batch_id(sink: str, audience: str, op: str, members: Sequence[HashedMember]) -> str:
    """The same members to the same audience give the same id: a retry, or a
    re-run of the same records, is the same batch (order does not count)."""
    digest = hashlib.sha256(f"{sink}\n{audience}\n{op}\n".encode())
    for line in sorted(f"{m.user_id}\t{m.email or ''}\t{m.phone or ''}" for m in members):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:32]


class AudienceSink(Protocol):
    name: str

    async def add(self, audience: str, members: Sequence[Member]) -> None: ...

    async def remove(self, audience: str, members: Sequence[Member]) -> None: ...

    async def flush(self, *, due_only: bool = False) -> list[BatchResult]:
        """Send what waits (only batches past their linger with ``due_only``)."""
        ...

    def pending(self) -> int:
        """Members waiting to be sent (failed batches kept for the next flush count)."""
        ...

    async def remove_hashed(self, audience: str, members: Sequence[HashedMember]) -> None: ...

    def take_removals(self, user_id: str | None) -> list[tuple[str, HashedMember]]: ...

    async def close(self) -> None: ...


class PlatformClient(Protocol):
    style: Style

    async def send(self, batch: Batch) -> Attempt: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Queue:
    # by user: one entry each; a HashedMember is a removal resumed from the state
    members: dict[str, Member | HashedMember] = field(default_factory=dict)
    since: float = 0.0


@dataclass(slots=True)
class BatchingSink:
    name: str
    client: PlatformClient
    max_items: int = 1_000
    linger_ms: int = 5_000
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(5.0, 5))
    policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=6))
    country_code: str | None = None
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311 - jitter
    clock: Callable[[], float] = time.monotonic
    results: list[BatchResult] = field(default_factory=list)  # every batch sent, newest last
    skipped: int = 0  # members with no identifier the platform takes
    _queues: dict[tuple[str, BatchOp], _Queue] = field(default_factory=dict, init=False)
    _unreported: list[BatchResult] = field(default_factory=list, init=False)  # sent when full

    async def add(self, audience: str, members: Sequence[Member]) -> None:
        await self._put(audience, "add", members)

    async def remove(self, audience: str, members: Sequence[Member]) -> None:
        await self._put(audience, "remove", members)

    async def remove_hashed(self, audience: str, members: Sequence[HashedMember]) -> None:
        """Removals kept hashed (an erasure's that could not be sent then)."""
        await self._put(audience, "remove", members)

    def take_removals(self, user_id: str | None) -> list[tuple[str, HashedMember]]:
        """Removals still waiting, hashed and taken out of the queue for the
        caller to keep durably: (platform audience, member). Those of
        ``user_id``, or with None every one resumed hashed."""
        out = []
        for (audience, op), queue in self._queues.items():
            if op != "remove":
                continue
            users = [user_id] if user_id is not None else [
                u for u, m in queue.members.items() if isinstance(m, HashedMember)]
            for user in users:
                member = queue.members.pop(user, None)
                hashed = self._hashed(member) if member is not None else None
                if hashed is not None:
                    out.append((audience, hashed))
        return out

    async def _put(self, audience: str, op: BatchOp,
                   members: Sequence[Member | HashedMember]) -> None:
        other = self._queues.get((audience, "remove" if op == "add" else "add"))
        queue = self._queues.setdefault((audience, op), _Queue())
        for member in members:
            if other is not None:  # the newest wish wins: one user is never in both
                other.members.pop(member.user_id, None)
            if not queue.members:
                queue.since = self.clock()
            queue.members[member.user_id] = member
            if len(queue.members) >= self.max_items:
                self._unreported.extend(await self._send(audience, op))

    def pending(self) -> int:
        return sum(len(q.members) for q in self._queues.values())

    async def flush(self, *, due_only: bool = False) -> list[BatchResult]:
        now = self.clock()
        out, self._unreported = self._unreported, []  # batches a full queue sent
        for (audience, op), queue in list(self._queues.items()):
            if queue.members and (not due_only or now - queue.since >= self.linger_ms / 1000):
                out.extend(await self._send(audience, op))
        return out

    def _hashed(self, member: Member | HashedMember) -> HashedMember | None:
        if isinstance(member, HashedMember):
            return member
        style = self.client.style
        email = hashed_email(style, member.email)
        phone = hashed_phone(style, member.phone, self.country_code)
        if email is None and phone is None:
            return None
        return HashedMember(member.user_id, email, phone)

    async def _send(self, audience: str, op: BatchOp) -> list[BatchResult]:
        queue = self._queues[(audience, op)]
        taken = list(queue.members.values())[:self.max_items]
        for member in taken:
            del queue.members[member.user_id]
        hashed = []
        for member in taken:
            found = self._hashed(member)
            if found is None:
                self.skipped += 1
            else:
                hashed.append(found)
        if not hashed:
            return []
        batch = Batch(self.name, audience, op, tuple(hashed),
                      batch_id(self.name, audience, op, hashed))
        result = await self._attempts(batch)
        if not result.ok and result.requeued:  # nothing lost: the next flush tries again
            for member in taken:
                queue.members.setdefault(member.user_id, member)
            queue.since = self.clock()
        self.results.append(result)
        log.info("ads batch %s %s %s %s: %d members, ok=%s, attempts=%d%s", batch.batch_id,
                 self.name, audience, op, len(hashed), result.ok, result.attempts,
                 f", error={result.error}" if result.error else "")
        return [result]

    async def _attempts(self, batch: Batch) -> BatchResult:
        tries = 0
        while True:
            tries += 1
            await self.limiter.acquire()
            outcome = await self.client.send(batch)
            if outcome.ok or not outcome.retryable:
                return _result(batch, outcome, tries, requeued=False)
            wait_ms = outcome.retry_after_ms
            if tries >= self.policy.max_attempts or (
                    wait_ms is not None and wait_ms > self.policy.retry_after_max_ms):
                return _result(batch, outcome, tries, requeued=True)
            if wait_ms is None:
                wait_ms = self.policy.backoff_ms(tries, self.rng)
            if wait_ms > 0:
                await self.sleep(wait_ms / 1000)

    async def close(self) -> None:
        await self.client.close()


def _result(batch: Batch, outcome: Attempt, tries: int, *, requeued: bool) -> BatchResult:
    return BatchResult(batch.batch_id, batch.sink, batch.audience, batch.op, len(batch.members),
                       outcome.ok, tries, outcome.error, outcome.status, requeued,
                       tuple(m.user_id for m in batch.members))
