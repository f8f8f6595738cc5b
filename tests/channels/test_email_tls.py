"""STARTTLS (the default security) against a real aiosmtpd with a throwaway
certificate made by openssl for 127.0.0.1."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from channels.transports.email import EmailChannel, SmtpSettings
from channels.transports.retry import RetryPolicy
from tests.channels.receivers import SmtpSink, message
from tests.channels.test_email import SENDER, Smtp, _authenticate
from tests.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make the test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_smtp(certificate: tuple[Path, Path]) -> Iterator[Smtp]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = SmtpSink()
    # STARTTLS required, and AUTH only after it (aiosmtpd's default).
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, authenticator=_authenticate)
    controller.start()
    try:
        yield Smtp(sink, controller)
    finally:
        controller.stop()


def channel(port: int, security: str, ca_file: str | None) -> EmailChannel:
    settings = SmtpSettings("127.0.0.1", port, security=security, username="mailer",
                            password="s3cret", timeout_ms=5_000, ca_file=ca_file)

    async def no_wait(_seconds: float) -> None:
        return None

    return EmailChannel("mail", settings, SENDER, policy=RetryPolicy(max_attempts=2),
                        sleep=no_wait)


async def test_starttls_with_a_trusted_certificate_delivers(
        tls_smtp: Smtp, certificate: tuple[Path, Path]) -> None:
    result = await channel(tls_smtp.port, "starttls", str(certificate[0])).send(message())
    assert (result.ok, result.attempts) == (True, 1)
    [(_, rcpt, parsed)] = tls_smtp.sink.received
    assert rcpt == ["ann@example.com"] and parsed["Subject"] == "Still thinking?"


async def test_an_untrusted_certificate_is_refused_without_retry(tls_smtp: Smtp) -> None:
    result = await channel(tls_smtp.port, "starttls", None).send(message())
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert "certificate verify failed" in (result.error or "")
    assert tls_smtp.sink.received == []


async def test_no_credentials_in_plain_text_to_a_starttls_only_server(tls_smtp: Smtp) -> None:
    # The server offers AUTH only after STARTTLS, so the password is never sent.
    result = await channel(tls_smtp.port, "none", None).send(message())
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert "AUTH extension not supported" in (result.error or "")
    assert tls_smtp.sink.received == []
