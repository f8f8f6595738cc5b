"""Control groups from the documented formula (docs/measurement.md):
``blake2b(salt \\x1f name \\x1f user_id, digest 8 bytes)`` read as a big-endian
integer / 2^64, in the group when below the share; the global group uses the
name ``*``. Expected values are computed here with hashlib, never through
channels.policy.control."""

from __future__ import annotations

import hashlib

import pytest

from channels.policy.control import (
    GLOBAL,
    GLOBAL_CONTROL,
    bucket,
    in_control,
    in_global_control,
    share_for,
)
from config.strategy_models import ControlModel

USERS = [f"u{n}" for n in range(400)]


def documented(salt: str, name: str, user_id: str) -> float:
    digest = hashlib.blake2b(salt.encode() + b"\x1f" + name.encode() + b"\x1f"
                             + user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def test_the_bucket_is_the_documented_hash() -> None:
    for user in USERS[:50]:
        assert bucket("pepper", "cart", user) == documented("pepper", "cart", user)
    # Salt, name and user each move it (no part is dropped or swapped).
    assert bucket("a", "b", "c") != bucket("b", "a", "c") != bucket("c", "b", "a")


def test_the_global_group_is_named_star_and_its_reason() -> None:
    assert GLOBAL == "*"
    assert GLOBAL_CONTROL == "global_control"


def test_membership_is_below_the_share_for_every_user() -> None:
    control = ControlModel(share=0.25, salt="pepper")
    inside = [u for u in USERS if in_control(control, "cart", u)]
    assert inside == [u for u in USERS if documented("pepper", "cart", u) < 0.25]
    assert 60 < len(inside) < 140  # about a quarter of 400


def test_a_user_exactly_at_the_share_is_outside() -> None:
    value = documented("pepper", "cart", "u7")
    control = ControlModel(share=0.9, salt="pepper")
    assert in_control(control, "cart", "u7", override=value) is False  # strict <
    assert in_control(control, "cart", "u7", override=value + 1e-12) is True


def test_share_zero_holds_nobody_out_even_at_bucket_zero() -> None:
    control = ControlModel(share=0.0)
    assert share_for(control, "cart") == 0.0
    assert not any(in_control(control, "cart", u) for u in USERS)
    assert not any(in_control(ControlModel(share=0.5), "cart", u, override=0.0) for u in USERS)


def test_a_per_name_share_and_an_override() -> None:
    control = ControlModel(share=0.1, per={"cart": 0.5}, salt="s")
    assert share_for(control, "cart") == 0.5
    assert share_for(control, "browse") == 0.1
    assert share_for(control, "cart", 0.2) == 0.2
    assert share_for(control, "cart", 0.0) == 0.0  # an override of 0 is not "no override"
    inside = [u for u in USERS if in_control(control, "cart", u, override=0.3)]
    assert inside == [u for u in USERS if documented("s", "cart", u) < 0.3]


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_the_global_group_hashes_the_user_with_the_star(share: float) -> None:
    control = ControlModel(global_share=share, share=0.0, salt="pepper")
    inside = [u for u in USERS if in_global_control(control, u)]
    assert inside == [u for u in USERS if documented("pepper", "*", u) < share]
    assert inside  # a share of 5 % of 400 users holds some out


def test_no_global_group_by_default_and_at_its_edge() -> None:
    assert not any(in_global_control(ControlModel(), u) for u in USERS)
    user = "u3"
    value = documented("scenetrigger", "*", user)
    # Exactly at the share: outside (strict <); just above it: inside.
    at = ControlModel.model_construct(share=0.0, per={}, salt="scenetrigger",
                                      global_share=value)
    above = ControlModel.model_construct(share=0.0, per={}, salt="scenetrigger",
                                         global_share=value + 1e-12)
    assert in_global_control(at, user) is False
    assert in_global_control(above, user) is True
