"""Google Ads Customer Match's ``OfflineUserDataJobService`` over REST (v24
shapes): ``offlineUserDataJobs:create``, ``{job}:addOperations``,
``{job}:run``; the list's membership changes when a job runs. Errors are
``{"error": {"code", "message", "status", "details": [GoogleAdsFailure]}}``;
throttling is 429 ``RESOURCE_EXHAUSTED`` with a ``quotaErrorDetails.retryDelay``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.adplatforms.base import HEX64, FakePlatform, Row

_CREATE = re.compile(r"^/v\d+/customers/(\d+)/offlineUserDataJobs:create$")
_JOB = re.compile(r"^/v\d+/(customers/(\d+)/offlineUserDataJobs/(\d+)):(addOperations|run)$")


def google_error(status: int, state: str, message: str, code: dict[str, str],
                 retry_delay: str | None = None) -> web.Response:
    failure: dict[str, Any] = {"errorCode": code, "message": message}
    if retry_delay is not None:
        failure["details"] = {"quotaErrorDetails": {"rateScope": "DEVELOPER",
                                                    "rateName": "Number of operations",
                                                    "retryDelay": retry_delay}}
    body = {"error": {"code": status, "message": message, "status": state, "details": [
        {"@type": "type.googleapis.com/google.ads.googleads.v24.errors.GoogleAdsFailure",
         "errors": [failure], "requestId": "req-1"}]}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@dataclass
class Job:
    user_list: str
    external_id: str
    operations: list[tuple[str, Row]] = field(default_factory=list)
    status: str = "PENDING"


@dataclass
class FakeGoogle(FakePlatform):
    token: str = "google-token"
    developer_token: str = "dev-token"
    customer: str = "1234567890"
    lists: set[str] = field(default_factory=lambda: {"555"})
    jobs: dict[str, Job] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)  # hashes refused as a partial failure

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        if (request.headers.get("Authorization") != f"Bearer {self.token}"
                or request.headers.get("developer-token") != self.developer_token):
            return google_error(401, "UNAUTHENTICATED", "Request is missing required "
                                "authentication credential.",
                                {"authenticationError": "AUTHENTICATION_ERROR"})
        if self.storm.hit():
            return google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted "
                                "(e.g. check quota).",
                                {"quotaError": "RESOURCE_TEMPORARILY_EXHAUSTED"}, "0s")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._invalid("Invalid JSON payload received.")
        if (found := _CREATE.match(request.path)) is not None and found.group(1) == self.customer:
            return self._create(body)
        found_job = _JOB.match(request.path)
        if found_job is None or found_job.group(2) != self.customer:
            return google_error(404, "NOT_FOUND", "Requested entity was not found.",
                                {"requestError": "RESOURCE_NAME_MISSING"})
        job = self.jobs.get(found_job.group(1))
        if job is None or job.status != "PENDING":
            return google_error(400, "INVALID_ARGUMENT", "The job is not pending.",
                                {"offlineUserDataJobError": "INVALID_JOB_STATUS"})
        if found_job.group(4) == "addOperations":
            return self._add(job, body)
        job.status = "RUNNING"
        audience = job.user_list.rsplit("/", 1)[1]
        for op in ("create", "remove"):
            rows = [row for kind, row in job.operations if kind == op]
            if rows:
                self.apply(audience, "add" if op == "create" else "remove", rows)
        job.status = "SUCCESS"
        return web.json_response({"name": f"customers/{self.customer}/operations/"
                                          f"{found_job.group(3)}"})

    def _invalid(self, message: str) -> web.Response:
        return google_error(400, "INVALID_ARGUMENT", message,
                            {"fieldError": "INVALID_VALUE"})

    def _create(self, body: Any) -> web.Response:
        job = body.get("job") if isinstance(body, dict) else None
        meta = (job or {}).get("customerMatchUserListMetadata") or {}
        user_list = meta.get("userList", "")
        if (not isinstance(job, dict) or job.get("type") != "CUSTOMER_MATCH_USER_LIST"
                or not str(job.get("externalId", "")).isdigit()):
            return self._invalid("job.type must be CUSTOMER_MATCH_USER_LIST with an externalId")
        if user_list not in {f"customers/{self.customer}/userLists/{n}" for n in self.lists}:
            return google_error(400, "INVALID_ARGUMENT", "The user list does not exist.",
                                {"offlineUserDataJobError": "INVALID_USER_LIST_ID"})
        name = f"customers/{self.customer}/offlineUserDataJobs/{len(self.jobs) + 1}"
        self.jobs[name] = Job(user_list, str(job["externalId"]))
        return web.json_response({"resourceName": name})

    def _add(self, job: Job, body: Any) -> web.Response:
        ops = body.get("operations") if isinstance(body, dict) else None
        if not isinstance(ops, list) or not ops or len(ops) > 100_000:
            return self._invalid("operations: want 1 to 100,000")
        parsed = []
        for op in ops:
            if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in (
                    "create", "remove"):
                return self._invalid("each operation is one of create or remove")
            kind, value = next(iter(op.items()))
            email = phone = ""
            for ident in value.get("userIdentifiers") or []:
                if len(ident) != 1:  # a oneof: one identifier per UserIdentifier
                    return self._invalid("one identifier per UserIdentifier")
                field_name, hashed = next(iter(ident.items()))
                if field_name not in ("hashedEmail", "hashedPhoneNumber") \
                        or not HEX64.match(str(hashed)):
                    return self._invalid(f"{field_name}: not a SHA-256 hex digest")
                if field_name == "hashedEmail":
                    email = hashed
                else:
                    phone = hashed
            if not (email or phone):
                return self._invalid("userIdentifiers: want at least one")
            parsed.append((kind, (email, phone)))
        kept = [(kind, row) for kind, row in parsed if not set(row) & self.refuse]
        job.operations.extend(kept)
        if len(kept) < len(parsed):  # enablePartialFailure: the others go in
            return web.json_response({"partialFailureError": {
                "code": 3, "message": f"{len(parsed) - len(kept)} identifier(s) refused",
                "details": []}})
        return web.json_response({})
