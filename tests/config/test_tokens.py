"""The one constant-time token check (config.tokens): closed without a
configured token, and any header bytes are a wrong token, never an error."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from config.tokens import AdminTokens, bearer, callback_token, token_matches
from triggers.errors import SceneTriggerError


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


def test_one_server_variable_and_the_old_one_still_works_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    from config.tokens import ADMIN_TOKEN_ENV, ADMIN_TOKENS_ENV

    with caplog.at_level(logging.WARNING, logger="config.tokens"):
        named = AdminTokens.from_env({ADMIN_TOKENS_ENV: "alice=a1,bob=b2"})
    assert named.name_of("b2") == "bob" and named.name_of("a1") == "alice"
    assert not caplog.records  # the documented variable: no warning
    with caplog.at_level(logging.WARNING, logger="config.tokens"):
        old = AdminTokens.from_env({ADMIN_TOKEN_ENV: "s3cret"})
    assert old.name_of("s3cret") == "admin"  # still works ...
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "deprecated" in said[0] and ADMIN_TOKENS_ENV in said[0]


def test_the_client_variable_names_the_author_of_a_config_push() -> None:
    from config.tokens import ADMIN_TOKENS_ENV, CLIENT_TOKEN_ENV
    from config.versions import TOKEN_ENV, author_of

    assert TOKEN_ENV == CLIENT_TOKEN_ENV == "SCENETRIGGER_TOKEN"
    env = {ADMIN_TOKENS_ENV: "alice=a1"}
    assert author_of("a1", env) == "alice"
    with pytest.raises(SceneTriggerError, match="SCENETRIGGER_TOKEN"):
        author_of(None, env)
    with pytest.raises(SceneTriggerError, match=ADMIN_TOKENS_ENV):
        author_of("a1", {})


def test_an_empty_admin_token_set_refuses_all_and_cannot_be_changed() -> None:
    import dataclasses

    from config.tokens import ADMIN_TOKENS_HINT

    tokens = AdminTokens()
    assert not tokens and tokens.name_of("") is None and tokens.name_of("admin") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        tokens.named = (("eve", "x"),)  # type: ignore[misc]
    # The refusal tells the operator which variables to set.
    assert ADMIN_TOKENS_HINT == "set SCENETRIGGER_ADMIN_TOKENS (name=token,...)"


def test_a_slot_signature_covers_the_user_and_exp() -> None:
    """docs/security.md: hex(HMAC-SHA256(secret, "slot\\n" + user + "\\n" + str(exp)))."""
    from config.tokens import slot_query, slot_signature

    def expected(secret: str, user: str, exp: int) -> str:
        return hmac.new(secret.encode(), f"slot\n{user}\n{exp}".encode(),
                        hashlib.sha256).hexdigest()

    assert slot_signature("change-me", "ann", 1796680000) == expected("change-me", "ann",
                                                                      1796680000)
    assert slot_signature("k", "ünï", 5) == expected("k", "ünï", 5)  # UTF-8
    # the doc's vector (docs/ads.md), as openssl prints it
    assert slot_signature("change-me", "ann", 1796680000) == (
        "81782921e819b1a2f447c78a8b50f017b53d9d4c00460302debfc815a71c9197")
    sigs = {slot_signature("k", "ann", 1), slot_signature("k", "ann", 2),
            slot_signature("k", "bob", 1), slot_signature("j", "ann", 1)}
    assert len(sigs) == 4
    assert slot_query("k", "ann", 7) == {"user": "ann", "exp": "7",
                                         "sig": expected("k", "ann", 7)}


def test_an_inbox_token_is_exp_dot_a_signature_of_user_and_exp() -> None:
    """docs/security.md: EXP "." hex(HMAC-SHA256(secret, "inbox\\n" + user + "\\n" + str(exp)))."""
    from config.tokens import inbox_signature, inbox_token, legacy_inbox_token

    def expected(secret: str, user: str, exp: int) -> str:
        return hmac.new(secret.encode(), f"inbox\n{user}\n{exp}".encode(),
                        hashlib.sha256).hexdigest()

    assert inbox_signature("k", "ünï", 5) == expected("k", "ünï", 5)  # UTF-8
    assert inbox_token("change-me", "ann", 1796680000) == (
        "1796680000." + expected("change-me", "ann", 1796680000))
    # the doc's vector (docs/security.md), as openssl prints it
    assert inbox_signature("change-me", "ann", 1796680000) == (
        "e69188cc8318e4663fc3ab68f3c4c71482e3670f8c399b3d05d2ddeaccd43e5e")
    sigs = {inbox_signature("k", "ann", 1), inbox_signature("k", "ann", 2),
            inbox_signature("k", "bob", 1), inbox_signature("j", "ann", 1),
            hmac.new(b"k", b"slot\nann\n1", hashlib.sha256).hexdigest()}  # the slot's
    assert len(sigs) == 5
    assert legacy_inbox_token("k", "ann") == hmac.new(b"k", b"ann", hashlib.sha256).hexdigest()


def test_one_expiry_check_gives_each_refusal_its_reason() -> None:
    """The check slots and inbox tokens share: exp before the signature,
    the signature before the clock."""
    from config.tokens import SIG_MAX_TTL_S, refuse_signed_until

    def sign(exp: int) -> str:
        return hmac.new(b"k", f"x\n{exp}".encode(), hashlib.sha256).hexdigest()

    now = 1_800_000_000

    def reason(sig: str, exp: str | None) -> tuple[int, str] | None:
        refusal = refuse_signed_until(sig, exp, now, sign)
        return None if refusal is None else (refusal.status, refusal.reason)

    assert reason(sign(now), str(now)) is None
    assert reason(sign(now + SIG_MAX_TTL_S), str(now + SIG_MAX_TTL_S)) is None
    assert reason(sign(now + SIG_MAX_TTL_S + 1), str(now + SIG_MAX_TTL_S + 1)) == (
        403, "exp_too_far")
    assert reason(sign(now - 1), str(now - 1)) == (403, "expired")
    assert reason(sign(now - 1)[:-1], str(now - 1)) == (403, "bad_sig")  # before the clock
    assert reason(sign(now), str(now + 1)) == (403, "bad_sig")
    assert reason(sign(now), None) == (400, "exp_missing")
    assert reason(sign(now), "") == (400, "exp_missing")
    for bad in ("-1", "+1", "1e9", "１２", "1" * 13):  # signs, exponents, non-ASCII, too long
        assert reason(sign(now), bad) == (400, "exp_malformed"), bad
    # no secret configured: nothing matches
    assert refuse_signed_until("", str(now), now, lambda _exp: None) is not None


def test_the_variables_and_the_field_have_their_documented_names() -> None:
    """Operators and shop backends set these names (docs/security.md): a
    renamed constant would silently leave a secret unread."""
    from config import tokens

    assert tokens.CATALOG_TOKEN_ENV == "SCENETRIGGER_CATALOG_TOKEN"
    assert tokens.IDENTIFY_TOKEN_ENV == "SCENETRIGGER_IDENTIFY_TOKEN"
    assert tokens.SLOT_SECRET_ENV == "SCENETRIGGER_SLOT_SECRET"
    assert tokens.INBOX_SECRET_ENV == "SCENETRIGGER_INBOX_SECRET"
    assert tokens.IDENTIFY_SIG_FIELD == "identify_sig"


def test_the_deprecation_warning_names_the_replacement_exactly(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="config.tokens"):
        AdminTokens.from_env({"SCENETRIGGER_ADMIN_TOKEN": "s3cret"})
    assert [r.getMessage() for r in caplog.records] == [
        "SCENETRIGGER_ADMIN_TOKEN is deprecated: set SCENETRIGGER_ADMIN_TOKENS=admin=<token> "
        "instead (the same admin)"]


def _identify_sig(secret: str, user: str, known: str, ts: int) -> str:
    """docs/security.md: hex(HMAC-SHA256(secret, "identify\\n" + user_id + "\\n" +
    known_id + "\\n" + str(ts)))."""
    return hmac.new(secret.encode(), f"identify\n{user}\n{known}\n{ts}".encode(),
                    hashlib.sha256).hexdigest()


def test_an_identify_signature_covers_the_user_the_known_id_and_the_time() -> None:
    from config.tokens import identify_signature

    assert identify_signature("k", "anon-1", "cust-9", 1_700_000_000_000) == _identify_sig(
        "k", "anon-1", "cust-9", 1_700_000_000_000)
    assert identify_signature("k", "ünï", "ça", 5) == _identify_sig("k", "ünï", "ça", 5)  # UTF-8
    sigs = {identify_signature("k", "a", "b", 1), identify_signature("k", "a", "b", 2),
            identify_signature("k", "a", "c", 1), identify_signature("k", "c", "b", 1),
            identify_signature("j", "a", "b", 1)}
    assert len(sigs) == 5


def test_an_identify_event_is_signed_only_with_every_field_and_the_secret() -> None:
    from config.tokens import identify_signed

    good = {"user_id": "anon-1", "known_id": "cust-9", "ts": 1_700_000_000_000,
            "identify_sig": _identify_sig("k", "anon-1", "cust-9", 1_700_000_000_000)}
    assert identify_signed(good, "k")
    assert not identify_signed(good, "j")  # another key
    assert not identify_signed(good, None) and not identify_signed(good, "")  # no secret
    for name in ("user_id", "known_id", "ts", "identify_sig"):
        assert not identify_signed({k: v for k, v in good.items() if k != name}, "k"), name
    # each field of another type: refused, never an error
    for name, value in (("user_id", 1), ("known_id", None), ("identify_sig", b"x"),
                        ("ts", "1700000000000"), ("ts", 1.7e12), ("ts", True)):
        assert not identify_signed({**good, name: value}, "k"), (name, value)
    # a bool is an int to isinstance: refused even when signed as it prints
    signed_true = hmac.new(b"k", b"identify\nanon-1\ncust-9\nTrue", hashlib.sha256).hexdigest()
    assert not identify_signed({**good, "ts": True, "identify_sig": signed_true}, "k")
    # each field covered: the signature of one event does not sign another
    for name, value in (("user_id", "anon-2"), ("known_id", "cust-8"), ("ts", 1_700_000_000_001)):
        assert not identify_signed({**good, name: value}, "k"), name


def test_signatures_live_a_day_at_most_and_an_hour_unless_told() -> None:
    """docs/security.md: at most 24 h ahead of serve's clock; the commands
    sign for 1 h by default."""
    from config.tokens import SIG_TTL_S, refuse_signed_until

    def sign(exp: int) -> str:
        return hmac.new(b"k", f"x\n{exp}".encode(), hashlib.sha256).hexdigest()

    now = 1_800_000_000
    assert refuse_signed_until(sign(now + 24 * 3600), str(now + 24 * 3600), now, sign) is None
    refusal = refuse_signed_until(sign(now + 24 * 3600 + 1), str(now + 24 * 3600 + 1), now, sign)
    assert refusal is not None and refusal.reason == "exp_too_far"
    assert SIG_TTL_S == 3600


def test_each_refusal_says_why_in_its_body() -> None:
    """The whole text of each refusal, and the body serve sends: the reason
    for a script, the error for a person."""
    import dataclasses

    from config.tokens import Refusal, refuse_signed_until

    def sign(exp: int) -> str:
        return hmac.new(b"k", f"x\n{exp}".encode(), hashlib.sha256).hexdigest()

    now = 1_800_000_000

    def refused(sig: str, exp: str | None) -> Refusal:
        refusal = refuse_signed_until(sig, exp, now, sign)
        assert refusal is not None
        return refusal

    assert refused(sign(now), None).body() == {
        "error": "exp (unix seconds) is required with the signature: it covers the user and exp",
        "reason": "exp_missing"}
    assert refused(sign(now), "x1").body() == {
        "error": "exp must be unix seconds (digits only)", "reason": "exp_malformed"}
    assert refused(sign(now), str(now + 1)).body() == {
        "error": "bad signature for this user and exp", "reason": "bad_sig"}
    assert refused(sign(now - 7), str(now - 7)).body() == {
        "error": f"expired at exp={now - 7} (7 s ago)", "reason": "expired"}
    assert refused(sign(now + 86_407), str(now + 86_407)).body() == {
        "error": f"exp={now + 86_407} is 86407 s ahead; at most 86400 s", "reason": "exp_too_far"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        refused(sign(now), None).status = 200  # type: ignore[misc]


def test_an_exp_of_twelve_digits_is_read_and_thirteen_are_not() -> None:
    """exp has at most 12 digits (unix seconds until the year 33658): the
    12th digit is still a time (too far ahead), the 13th is malformed."""
    from config.tokens import refuse_signed_until

    def sign(exp: int) -> str:
        return hmac.new(b"k", f"x\n{exp}".encode(), hashlib.sha256).hexdigest()

    now = 1_800_000_000
    twelve = refuse_signed_until(sign(999_999_999_999), "999999999999", now, sign)
    assert twelve is not None and (twelve.status, twelve.reason) == (403, "exp_too_far")
    thirteen = refuse_signed_until(sign(9_999_999_999_999), "9999999999999", now, sign)
    assert thirteen is not None and (thirteen.status, thirteen.reason) == (400, "exp_malformed")
