"""Journey sends are typed orders in the policy's request: a deferred one is
stored and read back as the same order, and one stored by the version that
packed it into ``scene="journey:<strategy>"`` and a JSON ``key`` still reads."""

from __future__ import annotations

import orjson

from channels.orders import HandoffAction, SendAction
from channels.pipeline import Outcome, journey_request
from channels.policy.decide import DeliveryRequest

SEND = SendAction("u1", "push", "reactivation_push_1", "reactivation", "push_1", "jm-1",
                  1_700_000_000_000, 3, trigger_id="t-9")


def test_a_deferred_journey_send_reads_back_as_the_same_order() -> None:
    req = journey_request(SEND, "Asia/Shanghai")
    back = DeliveryRequest.decode(req.encode())
    assert back == req
    assert back.order == SEND and back.scene == "" and back.key is None


def test_a_scene_request_stays_seven_fields() -> None:
    req = DeliveryRequest("t-1", "u1", "cart_abandonment", None, 5, ("inbox",), None)
    assert len(orjson.loads(req.encode())) == 7
    assert DeliveryRequest.decode(req.encode()) == req


def test_a_journey_send_stored_in_the_old_form_still_reads() -> None:
    old = orjson.dumps(["jm-1", "u1", "journey:reactivation",
                        orjson.dumps(["push_1", "reactivation_push_1", "t-9"]).decode(),
                        1_700_000_000_000, ["push"], "Asia/Shanghai"])
    req = DeliveryRequest.decode(old)
    assert (req.scene, req.key) == ("", None)
    assert req.order == SendAction("u1", "push", "reactivation_push_1", "reactivation",
                                   "push_1", "jm-1", 1_700_000_000_000, 1, trigger_id="t-9")


def test_the_decision_log_labels_orders_as_before() -> None:
    def outcome(order: SendAction | HandoffAction | None, scene: str = "") -> Outcome:
        return Outcome(trigger_id="t", user_id="u1", scene=scene, status="delivered",
                       reason=None, channel="push", variant="v", style="s", segment="g",
                       order=order)

    handoff = HandoffAction("u1", 90.0, "crm", "lead", "h-1", 5)
    assert outcome(SEND).record(0).scene == "journey:reactivation"
    assert outcome(handoff).record(0).scene == "journey:handoff"
    assert outcome(None, "promo_arrival").record(0).scene == "promo_arrival"
