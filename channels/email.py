"""Email channel: SMTP via the standard library, run in worker threads.

smtplib is blocking, so each delivery runs in a thread (at most
``max_connections`` at a time). The message is ``multipart/alternative``
with a text part and, when the message has HTML, an HTML part. The
recipient address comes from ``message.data[to_field]``. SMTP 4xx replies,
timeouts and dropped connections are retried; 5xx replies are not.
"""

from __future__ import annotations

import asyncio
import functools
import random
import smtplib
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from channels.base import DeliveryResult, Message
from channels.errors import ChannelError
from channels.retry import Attempt, RetryPolicy, Sleep, run_attempts


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # none | starttls | tls
    username: str | None = None
    password: str | None = None
    timeout_ms: int = 10_000
    ca_file: str | None = None  # a private CA; None: the system's trust store


class _Permanent(ChannelError):
    """A message that can never be sent as built (bad address, header)."""


def build_email(message: Message, sender: str, recipient: str) -> EmailMessage:
    mail = EmailMessage()
    try:
        mail["From"] = sender
        mail["To"] = recipient
        mail["Subject"] = message.subject
    except (ValueError, TypeError) as exc:  # e.g. a line break in a header
        raise _Permanent(f"bad header: {exc}") from None
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=_domain(sender))
    mail["X-Scenetrigger-Message-Id"] = message.message_id
    unsubscribe = message.data.get("unsubscribe_url")
    if isinstance(unsubscribe, str) and unsubscribe.startswith(("https://", "http://")):
        # RFC 2369 + RFC 8058: mail clients offer a one-click unsubscribe (a POST).
        mail["List-Unsubscribe"] = f"<{unsubscribe}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(message.text)
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html")
    return mail


def _domain(sender: str) -> str:
    address = sender.rsplit("<", 1)[-1].rstrip(">")
    return address.rpartition("@")[2] or "localhost"


def _check_recipient(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Permanent("no recipient address in the message data")
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError) as exc:
        raise _Permanent(f"bad recipient address {value!r}: {exc}") from None
    return value


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifies chain and host name. Cached: loading a trust store takes ms,
    and one context serves every thread."""
    return ssl.create_default_context(cafile=ca_file)


def _send_blocking(settings: SmtpSettings, mail: EmailMessage) -> None:
    timeout = settings.timeout_ms / 1000
    client: smtplib.SMTP
    context = _tls_context(settings.ca_file) if settings.security != "none" else None
    if settings.security == "tls":
        client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                  context=context)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
    with client:
        if settings.security == "starttls":
            client.starttls(context=context)
        if settings.username is not None:
            client.login(settings.username, settings.password or "")
        client.send_message(mail)


def smtp_attempt(exc: BaseException) -> Attempt:
    """An SMTP failure as an attempt: 4xx and transport errors retry, 5xx not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = bool(codes) and all(400 <= code < 500 for code in codes)
        return Attempt(False, f"recipient refused: {exc.recipients}", transient,
                       codes[0] if codes else None)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return Attempt(False, f"SMTP {exc.smtp_code}: {text}", 400 <= exc.smtp_code < 500,
                       exc.smtp_code)
    if isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError):
        return Attempt(False, f"{type(exc).__name__}: {exc}", False)
    return Attempt(False, f"{type(exc).__name__}: {exc}", True)


@dataclass(slots=True)
class EmailChannel:
    name: str
    settings: SmtpSettings
    sender: str
    to_field: str = "email"
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_connections: int = 4
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)  # once: seeding is slow
    _gate: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    retries_internally = True

    async def send(self, message: Message) -> DeliveryResult:
        try:
            recipient = _check_recipient(message.data.get(self.to_field))
            mail = build_email(message, self.sender, recipient)
        except _Permanent as exc:
            return DeliveryResult(False, self.name, message.message_id, 1, str(exc), False)
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_connections)
        gate = self._gate

        async def attempt() -> Attempt:
            async with gate:
                try:
                    await asyncio.to_thread(_send_blocking, self.settings, mail)
                except (smtplib.SMTPException, OSError) as exc:
                    return smtp_attempt(exc)
            return Attempt(True, status=250)

        return await run_attempts(message, self.name, attempt, self.policy,
                                  sleep=self.sleep, rng=self.rng)

    async def close(self) -> None:
        return None
