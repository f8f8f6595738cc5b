"""Event times beyond datetime's years 1-9999 (any 64-bit `ts` is valid input)
never stop a replay: the delivery ends suppressed with reason `bad_time`,
counted, and the trigger is still written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from channels.policy import BAD_TIME, DeliveryPolicy, MemoryPolicyStore, PolicyMetrics
from config.delivery_models import DeliveryModel, QuietHoursModel
from tests.channels.test_policy import request

FAR = 1 << 62
# 9999-12-31 23:59:59 UTC: a date in UTC, past the last one in Asia/Shanghai.
LAST_UTC_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
# 9999-12-31 23:00 UTC is quiet (22-08): waking up needs 10000-01-01.
LAST_NIGHT = LAST_UTC_SECOND - 59 * 60_000 - 59_000
NOON = 1569931200000  # 2019-10-01 12:00 UTC


@pytest.mark.parametrize(("now", "tz"), [(FAR, None), (-FAR, None), ((1 << 63) - 1, None),
                                         (LAST_UTC_SECOND, "Asia/Shanghai"),
                                         (LAST_NIGHT, "UTC")])
async def test_policy_suppresses_a_time_without_a_date(now: int, tz: str | None) -> None:
    registry = CollectorRegistry()
    store = MemoryPolicyStore()
    model = DeliveryModel(default_timezone="UTC", quiet_hours=QuietHoursModel())
    policy = DeliveryPolicy(model, store, PolicyMetrics.on(registry))
    decision = await policy.decide(request("t1", now, tz=tz), now)
    assert (decision.action, decision.reason) == ("suppress", BAD_TIME)
    assert policy.suppressed == {BAD_TIME: 1}
    assert registry.get_sample_value("scenetrigger_suppressed_total",
                                     {"reason": BAD_TIME}) == 1
    # no dedupe claim was taken: the same trigger at a sane time still goes out
    assert (await policy.decide(request("t1", NOON), NOON)).action == "send"
