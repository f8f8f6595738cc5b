"""The Quix Streams peer of ``bench/worker.py``: the shipped repeat and arrival
scenes written as a Quix Streams user would, with Quix's default settings:
one ``Application``, JSON values, per-key state in its RocksDB store (with its
changelog topic), triggers produced to a topic.

Runs in its own venv (``make bench-worker`` builds ``.venv-quix`` from
``bench/requirements-quix.txt``); it imports nothing of this project.

    .venv-quix/bin/python bench/quix_peer.py BOOTSTRAP EVENTS_TOPIC N TRIGGERS_TOPIC STATE_DIR

Prints ``rate <events/s> cpu <seconds>`` once N events were processed, the
rate counted from the first event to the N-th, as the bench counts the others.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

from quixstreams import Application, State

REPEAT_COUNT = 3
REPEAT_WITHIN_MS = 30 * 60_000
REPEAT_COOLDOWN_MS = 24 * 3_600_000


def scenes(event: dict[str, Any], state: State) -> list[dict[str, Any]]:
    """repeat_view_no_purchase (3 views of a product within 30 min, no purchase
    of it in the window, 24 h cooldown) and promo_arrival (every /promo page)."""
    fired: list[dict[str, Any]] = []
    ts = event["ts"]
    kind = event["type"]
    user = event["user_id"]
    if kind == "page" and str(event.get("page", "")).startswith("/promo"):
        fired.append({"scene": "promo_arrival", "user_id": user, "key": None, "ts": ts})
    product = event.get("product_id")
    if product is None or kind not in ("view", "purchase"):
        return fired
    windows: dict[str, list[list[Any]]] = state.get("windows", {})
    window = [e for e in windows.get(product, []) if ts - REPEAT_WITHIN_MS < e[0] <= ts]
    window.append([ts, kind])
    windows[product] = window
    if kind == "view":
        views = sum(1 for _, k in window if k == "view")
        bought = any(k == "purchase" for _, k in window)
        cooldowns: dict[str, int] = state.get("cooldowns", {})
        last = cooldowns.get(product)
        if views >= REPEAT_COUNT and not bought and (
                last is None or ts - last >= REPEAT_COOLDOWN_MS):
            cooldowns[product] = ts
            state.set("cooldowns", cooldowns)
            fired.append({"scene": "repeat_view_no_purchase", "user_id": user, "key": product,
                          "ts": ts})
    state.set("windows", windows)
    return fired


def main() -> None:
    bootstrap, topic_name, total, triggers_name, state_dir = sys.argv[1:6]
    n = int(total)
    app = Application(broker_address=bootstrap, consumer_group=f"quix-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", state_dir=state_dir)
    events = app.topic(topic_name, value_deserializer="json")
    triggers = app.topic(triggers_name, value_serializer="json")
    seen = {"n": 0, "t0": 0.0}

    def process(event: dict[str, Any], state: State) -> list[dict[str, Any]]:
        if not seen["n"]:
            seen["t0"] = time.perf_counter()
        fired = scenes(event, state)
        seen["n"] += 1
        if seen["n"] >= n:
            rate = n / (time.perf_counter() - seen["t0"])
            print(f"rate {rate:.1f} cpu {time.process_time():.1f}", flush=True)
            os._exit(0)
        return fired

    sdf = app.dataframe(events)
    sdf = sdf.apply(process, stateful=True, expand=True)
    sdf = sdf.to_topic(triggers)
    app.run()


if __name__ == "__main__":
    main()
