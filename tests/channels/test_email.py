"""Email channel against a real aiosmtpd server on a free loopback port."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from channels.errors import ChannelError
from channels.transports.email import EmailChannel, SmtpSettings, build_email
from channels.transports.retry import RetryPolicy
from tests.channels.receivers import SmtpSink, message
from tests.services import free_port

SENDER = "Shop <news@shop.example>"


class Smtp:
    def __init__(self, sink: SmtpSink, controller: Any) -> None:
        self.sink = sink
        self.port: int = controller.port


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False)  # False: the server sends the 535


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(),
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield Smtp(sink, controller)
    finally:
        controller.stop()


def channel(port: int, **settings: Any) -> EmailChannel:
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout_ms=5_000, **settings)

    async def no_wait(_seconds: float) -> None:
        return None

    return EmailChannel("mail", smtp, SENDER, policy=RetryPolicy(max_attempts=3),
                        sleep=no_wait, rng=random.Random(1))


@pytest.mark.integration
async def test_text_and_html_parts_arrive(smtp: Smtp) -> None:
    mail = channel(smtp.port, username="mailer", password="s3cret")
    msg = message(subject="Für Sie: 限时优惠", html="<p>Hello <b>Ann</b></p>")
    result = await mail.send(msg)
    assert (result.ok, result.attempts, result.status) == (True, 1, 250)
    assert len(smtp.sink.received) == 1
    mail_from, rcpt, parsed = smtp.sink.received[0]
    assert mail_from == "news@shop.example" and rcpt == ["ann@example.com"]
    assert parsed["Subject"] == "Für Sie: 限时优惠"
    assert parsed["X-Scenetrigger-Message-Id"] == "m-1"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Your cart misses you"
    assert html is not None and html.get_content().strip() == "<p>Hello <b>Ann</b></p>"


@pytest.mark.integration
async def test_wrong_credentials_fail_without_retry(smtp: Smtp) -> None:
    mail = channel(smtp.port, username="mailer", password="wrong")
    result = await mail.send(message())
    assert (result.ok, result.attempts, result.retryable, result.status) == (False, 1, False, 535)
    assert smtp.sink.received == []


@pytest.mark.integration
async def test_temporary_refusal_is_retried_permanent_is_not(smtp: Smtp) -> None:
    smtp.sink.rcpt_script = ["451 4.7.1 greylisted, try later"]
    mail = channel(smtp.port)
    result = await mail.send(message())
    assert (result.ok, result.attempts) == (True, 2)
    smtp.sink.rcpt_script = ["550 5.1.1 no such user"]
    result = await mail.send(message(2))
    assert (result.ok, result.attempts, result.retryable, result.status) == (False, 1, False, 550)
    assert len(smtp.sink.received) == 1


@pytest.mark.integration
async def test_plain_text_only_and_bad_input(smtp: Smtp) -> None:
    mail = channel(smtp.port)
    assert (await mail.send(message(html=None))).ok
    parsed = smtp.sink.received[0][2]
    assert parsed.get_content_type() == "text/plain"
    no_address = await mail.send(message(2, data={}))
    injected = await mail.send(message(3, subject="Hi\r\nBcc: victim@example.com"))
    bad_address = await mail.send(message(4, data={"email": "ann@example.com\r\nBcc: x@y"}))
    for result in (no_address, injected, bad_address):
        assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert len(smtp.sink.received) == 1


@pytest.mark.integration
async def test_server_down_is_retryable() -> None:
    mail = channel(free_port())
    result = await mail.send(message())
    assert (result.ok, result.attempts, result.retryable) == (False, 3, True)


def test_build_email_sets_the_headers() -> None:
    mail = build_email(message(), SENDER, "ann@example.com")
    assert mail["From"] == SENDER and mail["To"] == "ann@example.com"
    assert mail["Message-ID"].endswith("@shop.example>")


# A real deployment's link: a long host and path, a long user id, the signature.
LONG_LINK = ("https://email-preferences.marketing.example-shop-international.com/st/unsubscribe/"
             "email?u=customer-00000000-0000-4000-8000-000000012345&s="
             + "0123456789abcdef" * 2)
POSTAL = "Shop Ltd, 1 Main St, Springfield"


def _headers(raw: bytes) -> list[bytes]:
    """The header section's physical lines (CRLF-separated, as on the wire)."""
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    return head.replace(b"\r\n", b"\n").split(b"\n")


@pytest.mark.integration
async def test_list_unsubscribe_arrives_as_one_plain_line(smtp: Smtp) -> None:
    assert len(LONG_LINK) > 120
    mail = channel(smtp.port)
    mail.postal_address = POSTAL
    msg = message(subject="为您推荐 · Picked for you",
                  data={"email": "ann@example.com", "unsubscribe_url": LONG_LINK})
    assert (await mail.send(msg)).ok
    lines = _headers(smtp.sink.raw[0])
    at = [i for i, line in enumerate(lines) if line.lower().startswith(b"list-unsubscribe:")]
    assert len(at) == 1, lines
    assert lines[at[0]] == b"List-Unsubscribe: <" + LONG_LINK.encode() + b">"
    follower = lines[at[0] + 1] if at[0] + 1 < len(lines) else b""
    assert not follower[:1].isspace(), "folded onto a continuation line"
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert b"=?" not in b"\n".join(line for line in lines if b"nsubscribe" in line)
    # Marketing email (it has the link) ends with the sender's postal address.
    parsed = smtp.sink.received[0][2]
    text, body = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text is not None and text.get_content().rstrip().endswith(POSTAL)
    assert body is not None and f'<p class="postal-address">{POSTAL}</p>' in body.get_content()


def test_a_transactional_email_has_no_list_headers_and_no_postal_footer() -> None:
    mail = build_email(message(), SENDER, "ann@example.com", POSTAL)
    assert mail["List-Unsubscribe"] is None and POSTAL not in mail.as_string()


def test_a_link_that_cannot_be_one_line_fails_the_message_not_the_header() -> None:
    # 998 characters per line (RFC 5322): the longest link that fits is sent as is,
    # one more character fails the message permanently (never an encoded header).
    room = 998 - len("List-Unsubscribe: <>")
    fits = "https://x.example/u?s=" + "a" * (room - len("https://x.example/u?s="))
    built = build_email(message(data={"email": "a@b.example", "unsubscribe_url": fits}),
                        SENDER, "a@b.example")
    line = [x for x in built.as_bytes().split(b"\n") if x.startswith(b"List-Unsubscribe:")]
    assert line == [f"List-Unsubscribe: <{fits}>".encode()]
    assert len(line[0]) == 998
    with pytest.raises(ChannelError, match="998"):
        build_email(message(data={"email": "a@b.example", "unsubscribe_url": fits + "a"}),
                    SENDER, "a@b.example")
