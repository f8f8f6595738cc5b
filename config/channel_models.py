"""Pydantic models of the ``channels`` section: named channels, each with a
``type`` and its options. Secrets are never values here, only the NAMES of
environment variables that hold them (``*_env`` fields)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator

from config.base import Duration, StrictModel
from config.safe_template import TemplateError, compile_template

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=128)]
_SECRET_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "cookie"}



class RetryModel(StrictModel):
    """Attempts and backoff (see :class:`channels.transports.retry.RetryPolicy`)."""

    max_attempts: int = Field(default=3, ge=1, le=20, strict=True)
    base_backoff: Duration = Field(default=100, ge=0)
    max_backoff: Duration = Field(default=5_000, ge=0)
    retry_after_max: Duration = Field(default=30_000, ge=0)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if any(ch in value for ch in "\r\n\t "):
        raise ValueError("must not contain whitespace")
    return value


def _static_headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if name.lower() in _SECRET_HEADERS:
            raise ValueError(f"header {name!r} carries a secret: set it with headers_env")
        if "\r" in text or "\n" in text:
            raise ValueError(f"header {name!r} must not contain a line break")
    return value


class WebhookModel(StrictModel):
    """POST the message as JSON, signed with HMAC-SHA256 (see docs/channels.md)."""

    type: Literal["webhook"]
    url: str
    secret_env: EnvName
    timeout: Duration = Field(default=5_000, gt=0)
    retry: RetryModel = Field(default_factory=RetryModel)
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    signature_header: HeaderName = "X-Scenetrigger-Signature"
    timestamp_header: HeaderName = "X-Scenetrigger-Timestamp"
    max_connections: int = Field(default=100, ge=1, le=10_000, strict=True)
    batch_max: int = Field(default=1, ge=1, le=1_000, strict=True)  # >1: receiver opts in
    batch_linger: Duration = Field(default=5, ge=0, le=10_000)

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str]) -> dict[str, str]:
        return _static_headers(value)


class InboxModel(StrictModel):
    """A capped Redis stream per user, read and acknowledged over HTTP."""

    type: Literal["inbox"]
    redis_url_env: EnvName = "SCENETRIGGER_REDIS_URL"
    key_prefix: str = Field(default="scenetrigger:inbox", min_length=1, max_length=64)
    max_messages: int = Field(default=100, ge=1, le=100_000, strict=True)
    retention: Duration = Field(default=30 * 86_400_000, gt=0)
    dedupe_ttl: Duration = Field(default=7 * 86_400_000, gt=0)
    retry: RetryModel = Field(default_factory=RetryModel)
    batch_max: int = Field(default=1, ge=1, le=1_000, strict=True)  # >1: pipelined writes
    batch_linger: Duration = Field(default=2, ge=0, le=10_000)


class EmailModel(StrictModel):
    """SMTP with a plain-text part and, when the message has HTML, an HTML part."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65_535, strict=True)
    security: Literal["none", "starttls", "tls"] = "starttls"
    ca_file: str | None = None  # PEM bundle of a private CA (default: system trust store)
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    sender: str = Field(min_length=3, max_length=320)
    to_field: str = Field(default="email", min_length=1)
    timeout: Duration = Field(default=10_000, gt=0)
    retry: RetryModel = Field(default_factory=RetryModel)
    max_connections: int = Field(default=4, ge=1, le=64, strict=True)
    # The sender's postal address, at the end of every marketing email (CAN-SPAM
    # and others require one): no email channel without it.
    postal_address: str = Field(min_length=5, max_length=300)

    @field_validator("sender")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value or "@" not in value:
            raise ValueError("must be one address (name <user@host> or user@host)")
        return value


class SuccessJsonModel(StrictModel):
    """A 2xx answer counts only if the JSON body's ``field`` (dotted path of
    object keys) equals ``equals``; values in ``retry_on`` mean "try again"."""

    field: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    equals: str | int | bool
    retry_on: list[str | int] = Field(default_factory=list)


class ProviderModel(StrictModel):
    """A provider's HTTP API (SMS, WeChat template message, app push). Fields
    left out come from the preset named by ``type`` (channels/transports/provider.py)."""

    type: Literal["sms", "wechat", "push"]
    url: str
    method: Literal["POST", "PUT", "GET"] | None = None
    headers: dict[HeaderName, str] | None = None
    headers_env: dict[HeaderName, EnvName] = Field(default_factory=dict)
    query_env: dict[str, EnvName] = Field(default_factory=dict)
    body: dict[str, Any] | list[Any] | str | None = None
    body_format: Literal["json", "form", "text"] | None = None
    success_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    success_json: SuccessJsonModel | None = None
    timeout: Duration = Field(default=5_000, gt=0)
    retry: RetryModel = Field(default_factory=RetryModel)
    max_connections: int = Field(default=100, ge=1, le=10_000, strict=True)

    @field_validator("url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        _check_template(value)
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _static_headers(value) if value is not None else None

    @field_validator("body")
    @classmethod
    def _body_templates(cls, value: Any) -> Any:
        _walk_templates(value, depth=0)
        return value


class LogModel(StrictModel):
    """Dry run: record messages in memory (and append JSON lines to ``path``)."""

    type: Literal["log"]
    path: str | None = None
    max_records: int = Field(default=10_000, ge=1, le=10_000_000, strict=True)


_CHANNEL_MODELS = (WebhookModel, InboxModel, EmailModel, ProviderModel, LogModel)
ChannelModel = Annotated[
    WebhookModel | InboxModel | EmailModel | ProviderModel | LogModel,
    Field(discriminator="type"),
]
# Every channel ``type`` a config may name, read from the models' ``type`` literals.
CHANNEL_TYPES: tuple[str, ...] = tuple(
    name for model in _CHANNEL_MODELS
    for name in get_args(model.model_fields["type"].annotation))


def _check_template(text: str) -> None:
    try:
        compile_template(text)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None


def _walk_templates(value: Any, depth: int) -> None:
    if depth > 8:
        raise ValueError("body nests deeper than 8 levels")
    if isinstance(value, str):
        _check_template(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("body keys must be strings")
            _walk_templates(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk_templates(item, depth + 1)
    elif value is not None and not isinstance(value, int | float | bool):
        raise ValueError(f"body values must be JSON scalars, lists or objects, not {value!r}")
