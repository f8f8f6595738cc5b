"""Google Ads Customer Match through ``OfflineUserDataJobService`` (REST,
API v24 shapes): one job per batch.

1. ``POST /customers/{cid}/offlineUserDataJobs:create`` with ``{"job":
   {"type": "CUSTOMER_MATCH_USER_LIST", "externalId", "customerMatchUserListMetadata":
   {"userList": "customers/{cid}/userLists/{list}", "consent": {...}}}}``
   answers ``{"resourceName": "customers/{cid}/offlineUserDataJobs/{id}"}``;
2. ``POST /{job}:addOperations`` with ``{"operations": [{"create"|"remove":
   {"userIdentifiers": [{"hashedEmail"}, {"hashedPhoneNumber"}]}}],
   "enablePartialFailure": true}``;
3. ``POST /{job}:run`` starts it (a long-running operation ``{"name"}``).

Headers: ``Authorization: Bearer``, ``developer-token`` and, through a
manager account, ``login-customer-id``. ``externalId`` is the batch id's
first 62 bits; a retry resumes the job this batch already created (only the
steps not done yet are sent again). Errors are ``{"error": {"code",
"message", "status", "details": [GoogleAdsFailure]}}``; 429
``RESOURCE_EXHAUSTED`` is retried after ``Retry-After`` or the failure's
``quotaErrorDetails.retryDelay``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from channels.ads.http import Http, json_body, with_error
from channels.ads.identifiers import Style
from channels.ads.sink import Batch
from channels.transports.retry import Attempt

DEFAULT_BASE = "https://googleads.googleapis.com/v24"
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def external_id(batch_id: str) -> str:
    return str(int(batch_id[:16], 16) >> 2)  # int64, positive


def operations(batch: Batch) -> list[dict[str, Any]]:
    kind = "create" if batch.op == "add" else "remove"
    out = []
    for m in batch.members:
        ids = ([{"hashedEmail": m.email}] if m.email else []) + (
            [{"hashedPhoneNumber": m.phone}] if m.phone else [])
        out.append({kind: {"userIdentifiers": ids}})
    return out


def retry_delay_ms(answer: Any) -> int | None:
    """``quotaErrorDetails.retryDelay`` ("30s") of a GoogleAdsFailure, in ms."""
    error = answer.get("error") if isinstance(answer, dict) else None
    for detail in (error or {}).get("details") or []:
        for item in detail.get("errors") or [] if isinstance(detail, dict) else []:
            delay = ((item.get("details") or {}).get("quotaErrorDetails") or {}).get(
                "retryDelay") if isinstance(item, dict) else None
            found = _DELAY.match(delay) if isinstance(delay, str) else None
            if found:
                return int(float(found.group(1)) * 1000)
    return None


@dataclass(slots=True)
class GoogleAdsClient:
    token: str
    developer_token: str
    customer_id: str
    login_customer_id: str | None = None
    base_url: str = DEFAULT_BASE
    http: Http = field(default_factory=Http)
    style: Style = "google_ads"
    # batch id -> (job resource name, operations added): a retry resumes
    _jobs: dict[str, tuple[str, bool]] = field(default_factory=dict, init=False)

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "developer-token": self.developer_token,
                   "Content-Type": "application/json"}
        if self.login_customer_id:
            headers["login-customer-id"] = self.login_customer_id
        return headers

    async def _post(self, path: str, payload: Any) -> tuple[Attempt, Any]:
        attempt, answer = await self.http.call(
            "POST", f"{self.base_url.rstrip('/')}/{path}", headers=self._headers(),
            body=json_body(payload))
        if attempt.ok:
            return attempt, answer
        error = answer.get("error") if isinstance(answer, dict) else None
        detail = (f"Google Ads {error.get('status')}: {error.get('message')}"
                  if isinstance(error, dict) else None)
        failed = with_error(attempt, detail)
        if failed.retry_after_ms is None and (delay := retry_delay_ms(answer)) is not None:
            failed = replace(failed, retry_after_ms=delay)
        return failed, answer

    async def send(self, batch: Batch) -> Attempt:
        job, added = self._jobs.get(batch.batch_id, ("", False))
        if not job:
            user_list = f"customers/{self.customer_id}/userLists/{batch.audience}"
            attempt, answer = await self._post(
                f"customers/{self.customer_id}/offlineUserDataJobs:create",
                {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                         "externalId": external_id(batch.batch_id),
                         "customerMatchUserListMetadata": {
                             "userList": user_list,
                             # the sync sends only users whose ads consent it checked
                             "consent": {"adUserData": "GRANTED",
                                         "adPersonalization": "GRANTED"}}}})
            if not attempt.ok:
                return attempt
            job = answer.get("resourceName", "") if isinstance(answer, dict) else ""
            if not job:
                return Attempt(False, "Google Ads create answered no resourceName", True,
                               attempt.status)
            self._jobs[batch.batch_id] = (job, False)
        partial = None
        if not added:
            attempt, answer = await self._post(
                f"{job}:addOperations",
                {"operations": operations(batch), "enablePartialFailure": True})
            if not attempt.ok:
                return attempt
            partial = answer.get("partialFailureError") if isinstance(answer, dict) else None
            self._jobs[batch.batch_id] = (job, True)
        attempt, _ = await self._post(f"{job}:run", {})
        if not attempt.ok:
            return attempt
        del self._jobs[batch.batch_id]
        if isinstance(partial, dict):  # the job ran the rest; the refused ones stay out
            return Attempt(False, f"Google Ads partial failure: {partial.get('message')}",
                           False, attempt.status)
        return attempt

    async def close(self) -> None:
        await self.http.close()
