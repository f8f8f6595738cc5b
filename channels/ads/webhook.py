"""A generic audience webhook: ``POST url`` with ``{"batch_id", "audience",
"op": "add"|"remove", "members": [{"user_id", "email_sha256",
"phone_sha256"}]}``, signed as the webhook channel signs
(:func:`channels.transports.webhook.sign`: ``X-Scenetrigger-Timestamp`` and
``X-Scenetrigger-Signature: sha256=HMAC(secret, "<timestamp>." + body)``)
and carrying ``Idempotency-Key: <batch id>``. Hashes are of the E.164 phone
and the trimmed, lowercased email. 2xx is success; 429 and 5xx retry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.ads.http import Http, json_body
from channels.ads.identifiers import Style
from channels.ads.sink import Batch
from channels.transports.retry import Attempt
from channels.transports.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from config.clock import wall_ms


def body(batch: Batch) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "audience": batch.audience, "op": batch.op,
            "members": [{"user_id": m.user_id, "email_sha256": m.email,
                         "phone_sha256": m.phone} for m in batch.members]}


@dataclass(slots=True)
class AudienceWebhookClient:
    url: str
    secret: bytes
    http: Http = field(default_factory=Http)
    clock_ms: Callable[[], int] = wall_ms
    style: Style = "webhook"

    async def send(self, batch: Batch) -> Attempt:
        raw = json_body(body(batch))
        stamp = self.clock_ms()  # fresh per attempt: receivers check recency
        attempt, _ = await self.http.call("POST", self.url, body=raw, headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(self.secret, stamp, raw), "Idempotency-Key": batch.batch_id})
        return attempt

    async def close(self) -> None:
        await self.http.close()
