"""Email channel against a real aiosmtpd server on a free loopback port."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from channels.email import EmailChannel, SmtpSettings, build_email
from channels.retry import RetryPolicy
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
