"""Meta Custom Audiences: ``POST /{audience_id}/users`` adds, ``DELETE`` of
the same path removes (Marketing API, Graph v21.0 shapes; the v25.0
reference shows the same endpoint and fields).

Form fields: ``payload`` = ``{"schema": ["EMAIL_SHA256", "PHONE_SHA256"],
"data": [[email hash or "", phone hash or ""], ...]}`` (at most 10,000
rows), ``session`` = ``{"session_id", "batch_seq", "last_batch_flag",
"estimated_num_total"}`` and ``access_token``. The session id is the batch
id's first 52 bits: a retried batch is the same session, which Meta
de-duplicates. Answer: ``{"audience_id", "session_id", "num_received",
"num_invalid_entries", "invalid_entry_samples"}``; an error is
``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``.
Throttling comes as HTTP 429 or as a 400 with code 4, 17, 32, 613 or 80003
(custom audience rate limit): retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from channels.ads.http import Http, json_body, with_error
from channels.ads.identifiers import Style
from channels.ads.sink import Batch
from channels.transports.retry import Attempt

DEFAULT_BASE = "https://graph.facebook.com/v21.0"
SCHEMA = ["EMAIL_SHA256", "PHONE_SHA256"]
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80003})


def session_id(batch_id: str) -> int:
    return int(batch_id[:13], 16)  # 52 bits: a JSON number every client reads exactly


def payload(batch: Batch) -> dict[str, Any]:
    return {"schema": SCHEMA,
            "data": [[m.email or "", m.phone or ""] for m in batch.members]}


@dataclass(slots=True)
class MetaClient:
    token: str
    base_url: str = DEFAULT_BASE
    http: Http = field(default_factory=Http)
    style: Style = "meta"

    async def send(self, batch: Batch) -> Attempt:
        session = {"session_id": session_id(batch.batch_id), "batch_seq": 1,
                   "last_batch_flag": True, "estimated_num_total": len(batch.members)}
        form = {"payload": json_body(payload(batch)).decode(),
                "session": json_body(session).decode(), "access_token": self.token}
        method = "POST" if batch.op == "add" else "DELETE"
        attempt, answer = await self.http.call(
            method, f"{self.base_url.rstrip('/')}/{batch.audience}/users", headers={},
            form=form)
        return read_answer(attempt, answer, len(batch.members))

    async def close(self) -> None:
        await self.http.close()


def read_answer(attempt: Attempt, answer: Any, sent: int) -> Attempt:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        throttled = code in THROTTLE_CODES
        detail = f"Meta error {code}/{error.get('error_subcode')}: {error.get('message')}"
        return with_error(attempt, detail, retryable=attempt.retryable or throttled)
    if not attempt.ok:
        return attempt
    received = answer.get("num_received") if isinstance(answer, dict) else None
    if received != sent:
        return replace(attempt, ok=False, retryable=True,
                       error=f"Meta received {received} of {sent} rows")
    return attempt
