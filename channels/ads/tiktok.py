"""TikTok audiences: ``POST /open_api/v1.3/segment/mapping/`` (the
streaming audience API), header ``Access-Token``.

Body: ``{"advertiser_ids": [id], "action": "add"|"delete", "id_schema":
["EMAIL_SHA256", "PHONE_SHA256"], "batch_data": [[{"id": email hash,
"audience_ids": [aid]}, {"id": phone hash, "audience_ids": [aid]}], ...]}``
(one inner list per user, one entry per schema column, ``{}`` for a
missing one). TikTok answers HTTP 200 with ``{"code", "message",
"request_id", "data"}``: ``code`` 0 is success; 40100 (taken as the
Business API's "too many requests": the code was not confirmed against the
current reference when this was written) and 5xxxx (system errors) are
retried, as is an HTTP 429; any other code fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.ads.http import Http, json_body, with_error
from channels.ads.identifiers import Style
from channels.ads.sink import Batch
from channels.transports.retry import Attempt

DEFAULT_BASE = "https://business-api.tiktok.com/open_api/v1.3"
SCHEMA = ["EMAIL_SHA256", "PHONE_SHA256"]
RATE_LIMITED = 40100


def body(advertiser_id: str, batch: Batch) -> dict[str, Any]:
    ids = [batch.audience]
    rows = [[{"id": value, "audience_ids": ids} if value else {}
             for value in (m.email, m.phone)] for m in batch.members]
    return {"advertiser_ids": [advertiser_id],
            "action": "add" if batch.op == "add" else "delete",
            "id_schema": SCHEMA, "batch_data": rows}


@dataclass(slots=True)
class TikTokClient:
    token: str
    advertiser_id: str
    base_url: str = DEFAULT_BASE
    http: Http = field(default_factory=Http)
    style: Style = "tiktok"

    async def send(self, batch: Batch) -> Attempt:
        attempt, answer = await self.http.call(
            "POST", f"{self.base_url.rstrip('/')}/segment/mapping/",
            headers={"Access-Token": self.token, "Content-Type": "application/json"},
            body=json_body(body(self.advertiser_id, batch)))
        if not attempt.ok:
            return attempt
        code = answer.get("code") if isinstance(answer, dict) else None
        if code == 0:
            return attempt
        message = answer.get("message") if isinstance(answer, dict) else "no JSON answer"
        retry = code == RATE_LIMITED or (isinstance(code, int) and 50000 <= code < 60000)
        return with_error(attempt, f"TikTok code {code}: {message}", retryable=retry)

    async def close(self) -> None:
        await self.http.close()
