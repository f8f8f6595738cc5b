"""The one constant-time token check (config.tokens): closed without a
configured token, and any header bytes are a wrong token, never an error."""

from __future__ import annotations

from config.tokens import AdminTokens, bearer, callback_token, token_matches


def test_a_token_matches_only_itself() -> None:
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cre", "s3cret")
    assert not token_matches("s3cret ", "s3cret")
    assert not token_matches("", "s3cret")


def test_nothing_matches_when_no_token_is_configured() -> None:
    assert not token_matches("", "")
    assert not token_matches("", None)
    assert not token_matches("anything", None)


def test_a_non_utf8_header_byte_is_a_wrong_token() -> None:
    given = b"Bearer \xff".decode("utf-8", "surrogateescape")  # as aiohttp hands it over
    assert not token_matches(bearer(given), "s3cret")


def test_bearer_and_callback_token_read_the_right_header() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("Basic abc") == ""
    assert bearer("abc") == ""
    assert callback_token({"Authorization": "Bearer abc", "X-Callback-Token": "xyz"}) == "abc"
    assert callback_token({"X-Callback-Token": "xyz"}) == "xyz"
    assert callback_token({"Authorization": "Basic abc", "X-Callback-Token": "xyz"}) == "xyz"
    assert callback_token({}) == ""


def test_admin_tokens_take_both_variables() -> None:
    tokens = AdminTokens.from_env({"SCENETRIGGER_ADMIN_TOKENS": "alice=tok-a, bob = tok-b,broken",
                                   "SCENETRIGGER_ADMIN_TOKEN": "tok-single"})
    assert tokens.name_of("tok-a") == "alice"
    assert tokens.name_of("tok-b") == "bob"
    assert tokens.name_of("tok-single") == "admin"
    assert tokens.name_of("alice") is None and tokens.name_of("") is None
    assert AdminTokens.from_env({"SCENETRIGGER_ADMIN_TOKEN": "t"}).name_of("t") == "admin"


def test_no_admin_token_configured_refuses_all() -> None:
    for env in ({}, {"SCENETRIGGER_ADMIN_TOKEN": ""}, {"SCENETRIGGER_ADMIN_TOKENS": "alice=, =x"}):
        tokens = AdminTokens.from_env(env)
        assert not tokens
        assert tokens.name_of("") is None and tokens.name_of("x") is None
    assert not AdminTokens.single("")


def test_an_empty_admin_token_set_refuses_all_and_cannot_be_changed() -> None:
    import dataclasses

    import pytest

    from config.tokens import ADMIN_TOKENS_HINT

    tokens = AdminTokens()
    assert not tokens and tokens.name_of("") is None and tokens.name_of("admin") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        tokens.named = (("eve", "x"),)  # type: ignore[misc]
    # The refusal tells the operator which variables to set.
    assert ADMIN_TOKENS_HINT == "set SCENETRIGGER_ADMIN_TOKENS (name=token,...)"
