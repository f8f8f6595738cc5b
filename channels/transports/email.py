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
import html
import random
import smtplib
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate, make_msgid
from typing import Any

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message
from channels.errors import ChannelError
from channels.transports.retry import Attempt, RetryPolicy, Sleep, run_attempts
from config.channel_models import EmailModel


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


MAX_LINE = 998  # RFC 5322 2.1.1: a line's hard limit, CRLF not counted
# Mail clients read these as they are: an RFC 2047 encoded word (what the
# library makes of a line over 78 characters) hides the link from them.
_VERBATIM = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


class _MailPolicy(EmailPolicy):
    """The library's default, but the list headers stay on one plain line."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _VERBATIM:
            return f"{name}: {value}{self.linesep}"
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _VERBATIM:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return bytes(super().fold_binary(name, value))


MAIL_POLICY = _MailPolicy()  # email.policy.default is EmailPolicy()


def list_unsubscribe(url: str) -> str:
    """The ``List-Unsubscribe`` value, checked to fit one unencoded line."""
    value = f"<{url}>"
    if not url.isascii() or any(c in url for c in "\r\n <>") or \
            len("List-Unsubscribe: ") + len(value) > MAX_LINE:
        raise _Permanent(f"unsubscribe link is not one ASCII line of at most {MAX_LINE} "
                         "characters")
    return value


def build_email(message: Message, sender: str, recipient: str,
                postal_address: str | None = None) -> EmailMessage:
    """``postal_address``: the sender's, at the end of a marketing email
    (one with an unsubscribe link), as CAN-SPAM and most laws ask."""
    mail = EmailMessage(policy=MAIL_POLICY)
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
    text, body = message.text, message.html
    if isinstance(unsubscribe, str) and unsubscribe.startswith(("https://", "http://")):
        # RFC 2369 + RFC 8058: mail clients offer a one-click unsubscribe (a POST).
        mail["List-Unsubscribe"] = list_unsubscribe(unsubscribe)
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if postal_address:
            text += f"\n\n{postal_address}"
            if body is not None:
                body += ('<p class="postal-address">'
                         f'{html.escape(postal_address).replace(chr(10), "<br>")}</p>')
    mail.set_content(text)
    if body is not None:
        mail.add_alternative(body, subtype="html")
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
    postal_address: str | None = None  # the sender's, in every marketing email
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)  # once: seeding is slow
    _gate: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    retries_internally = True

    async def send(self, message: Message) -> DeliveryResult:
        try:
            recipient = _check_recipient(message.data.get(self.to_field))
            mail = build_email(message, self.sender, recipient, self.postal_address)
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


def build(name: str, model: EmailModel, context: BuildContext) -> EmailChannel:
    """A ``type: email`` channel (SMTP credentials from the environment)."""
    settings = SmtpSettings(
        host=model.host, port=model.port, security=model.security,
        username=context.secret("username_env", model.username_env),
        password=context.secret("password_env", model.password_env),
        timeout_ms=model.timeout, ca_file=model.ca_file,
    )
    return EmailChannel(name, settings, model.sender, model.to_field,
                        RetryPolicy.of(model.retry), model.max_connections,
                        postal_address=model.postal_address)


def _email(contact: Any) -> dict[str, Any]:
    return {"email": contact.email} if contact.email is not None else {}


KIND = ChannelKind("email", EmailModel, build, address_field="email",
                   default_consent="opt_out", template_fields=_email)
