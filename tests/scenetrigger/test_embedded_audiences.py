"""The demo's embedded runtime runs the audiences too: a change shows on the
live page's snapshot when the simulated clock makes it (docs/ads.md)."""

from __future__ import annotations

import asyncio

from config.loader import validate_config
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.replay import new_host

START = 1_700_000_000_000
MIN = 60_000
CONFIG = {
    "scenes": {"carted": {"kind": "arrival", "when": {"type": "cart"}}},
    "audiences": {"carted_not_bought": {"fired": {"scene": "carted", "within": "10m"},
                                        "purchase": {"none_within": "10m"}}},
}


def test_the_runtime_notes_enter_and_the_exit_the_clock_makes() -> None:
    events = [{"user_id": "u", "ts": START + MIN, "type": "cart"}]
    runtime = EmbeddedRuntime(new_host(validate_config(CONFIG)), events, start_ms=START)
    asyncio.run(runtime.step(START + 2 * MIN))
    assert runtime.snapshot()["audiences"]["changes"] == {"enter carted_not_bought": 1}
    asyncio.run(runtime.step(START + 11 * MIN))  # the window ends at START + 11m: not past it
    assert runtime.snapshot()["audiences"]["changes"] == {"enter carted_not_bought": 1}
    asyncio.run(runtime.step(START + 11 * MIN + 1))
    snapshot = runtime.snapshot()["audiences"]
    assert snapshot["changes"] == {"enter carted_not_bought": 1, "exit carted_not_bought": 1}
    assert snapshot["recent"][0] == {"audience": "carted_not_bought", "user_id": "u",
                                     "op": "exit", "ts": (START + 11 * MIN) / 1000,
                                     "reason": "expired"}


def test_without_audiences_the_snapshot_is_as_before() -> None:
    runtime = EmbeddedRuntime(new_host(validate_config({"scenes": CONFIG["scenes"]})), [],
                              start_ms=START)
    assert "audiences" not in runtime.snapshot()
