"""Each platform's documented normalisation of an email and a phone number,
and the SHA-256 of it. Raw values live only in memory until a batch is
built; only the hashes leave the process (docs/ads.md, "Syncing to ad
platforms", the versions followed).

* Meta Custom Audiences (``EMAIL_SHA256``/``PHONE_SHA256``): email trimmed
  and lowercased; phone digits only, with the country code, no ``+`` and no
  leading zeros.
* Google Ads Customer Match (``UserIdentifier``, API v24): email trimmed and
  lowercased; phone in E.164 (``+`` and the country code), then hashed.
* TikTok audiences (``EMAIL_SHA256``/``PHONE_SHA256``): email lowercased
  with a ``+tag`` before the ``@`` removed; phone as Meta's.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

Style = Literal["meta", "google_ads", "tiktok", "webhook"]
_SEPARATORS = re.compile(r"[\s().\-/]")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normal_email(style: Style, email: str) -> str:
    text = email.strip().lower()
    if style == "tiktok":
        local, at, domain = text.partition("@")
        text = local.split("+", 1)[0] + at + domain
    return text


def international_digits(phone: str, country_code: str | None) -> str | None:
    """The number's digits with its country code (no ``+``), or None when it
    has none and no default is configured (or is not a number)."""
    text = _SEPARATORS.sub("", phone.strip())
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):  # the international call prefix
        digits = text[2:]
    elif country_code is None:
        return None
    else:  # a national number: its trunk zeros go, the country code comes first
        digits = country_code + text.lstrip("0")
    digits = digits.lstrip("0")
    if not digits.isdigit() or not 7 <= len(digits) <= 15:  # E.164: at most 15 digits
        return None
    return digits


def normal_phone(style: Style, phone: str, country_code: str | None) -> str | None:
    digits = international_digits(phone, country_code)
    if digits is None:
        return None
    return "+" + digits if style in ("google_ads", "webhook") else digits


def hashed_email(style: Style, email: str | None) -> str | None:
    return sha256_hex(normal_email(style, email)) if email else None


def hashed_phone(style: Style, phone: str | None, country_code: str | None) -> str | None:
    if not phone:
        return None
    normal = normal_phone(style, phone, country_code)
    return sha256_hex(normal) if normal is not None else None
