"""The one constant-time token check (config.tokens): closed without a
configured token, and any header bytes are a wrong token, never an error."""

from __future__ import annotations

from config.tokens import bearer, callback_token, token_matches


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
