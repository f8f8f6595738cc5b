"""The demo's embedded runtime with the journey subscriber: the reactivation
strategy enrols on the runtime's triggers and its waits run on the
runtime's simulated clock."""

from __future__ import annotations

from config.loader import load_config_text
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.replay import new_engine
from strategies.actions import Action, SendAction, SuppressedAction
from strategies.embedded import JourneySubscriber
from tests.strategies.helpers import DAY, T0

CONFIG = load_config_text("""
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m}
  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}
strategies: {include: [reactivation]}
""")


async def test_reactivation_runs_in_the_embedded_runtime() -> None:
    events = [{"user_id": "u", "ts": T0 + i, "type": "view", "product_id": "p"}
              for i in range(3)]
    events.append({"user_id": "u", "ts": T0 + 10, "type": "cart", "product_id": "p"})
    runtime = EmbeddedRuntime(new_engine(CONFIG), iter(events), start_ms=T0, speed=1.0)
    got: list[Action] = []
    journeys = JourneySubscriber(CONFIG, got.append)
    runtime.subscribe(journeys)
    await runtime.step(T0 + 10)
    await runtime.step(T0 + 31 * 60_000)  # the cart abandonment timer: already inside
    await journeys.tick(T0 + 2 * DAY + 3)  # enrolled at T0 + 2 (the third view)
    sends = [(a.channel, a.content_ref) for a in got if isinstance(a, SendAction)]
    assert sends == [("push", "reactivation_push_1"), ("push", "reactivation_push_2")]
    assert [a.reason for a in got if isinstance(a, SuppressedAction)] == ["in_progress"]
    await runtime.close()
