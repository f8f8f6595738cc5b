"""The preference centre's page: what one user's signed link shows.

Pure rendering (no I/O): the brand and words of ``delivery.preferences``
(:mod:`config.preference_models`), the user's masked address, and each
channel type and purpose with its state. Forms POST back to the signed
link itself (a GET never changes anything: mail scanners follow links);
the actions are :data:`ACTIONS`. The page has no script; its one inline
style is allowed by its hash in the Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from config.preference_models import PreferencesModel

UNSUBSCRIBE, RESUBSCRIBE, ALL = "unsubscribe", "resubscribe", "all"
ACTIONS = (UNSUBSCRIBE, RESUBSCRIBE, ALL)
ON, OFF, NOT_ASKED = "on", "off", "not_asked"
PURPOSES = ("marketing", "transactional")

_STYLE = """
body{{margin:0;font-family:system-ui,-apple-system,"PingFang SC","Noto Sans CJK SC",sans-serif;
color:#1b1f24;background:#f6f8fa}}
header{{background:{color};color:#fff;padding:16px 20px;display:flex;align-items:center;gap:12px}}
header img{{height:32px;width:auto}}
header h1{{font-size:1.2rem;margin:0}}
main{{max-width:560px;margin:0 auto;padding:16px 20px}}
table{{width:100%;border-collapse:collapse;background:#fff;margin:12px 0}}
th,td{{text-align:left;padding:8px;border-bottom:1px solid #d0d7de;font-size:.95rem}}
.on{{color:#1a7f37}}.off{{color:#cf222e}}.not_asked{{color:#57606a}}
button{{display:block;width:100%;margin:8px 0;padding:12px;font:inherit;border-radius:6px;
border:1px solid {color};background:#fff;color:{color};cursor:pointer}}
button.primary{{background:{color};color:#fff}}
#done{{background:#dafbe1;border:1px solid #1a7f37;padding:10px;border-radius:6px}}
footer{{color:#57606a;font-size:.85rem;padding:8px 0 24px}}
"""


def mask_address(channel_type: str, address: str | None) -> str:
    """``a***@example.com``, ``+86*******0001``: enough to recognise, not to read."""
    if not address:
        return ""
    if channel_type == "email" and "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"  # not even the length
    if channel_type == "sms":
        digits = address.replace(" ", "")
        head = "+" if digits.startswith("+") else ""
        body = digits.lstrip("+")
        keep = body[-4:]
        return head + body[:2] + "***" + keep
    return address[:2] + "***"


def pick_language(model: PreferencesModel, asked: str | None, user_locale: str | None,
                  accept: str) -> str:
    """``?lang=``, then the user's locale, then Accept-Language, then the default."""
    known = model.languages()
    wanted = [asked or "", user_locale or ""]
    wanted += [part.split(";")[0].strip() for part in accept.split(",")]
    for tag in wanted:
        lang = tag.replace("_", "-").split("-")[0].lower()
        if lang in known:
            return lang
    return model.default_locale


@dataclass(frozen=True, slots=True)
class Row:
    channel_type: str
    purpose: str
    state: str  # ON, OFF, NOT_ASKED


@dataclass(frozen=True, slots=True)
class Page:
    body: str
    csp: str


def render(model: PreferencesModel, lang: str, channel_type: str, address: str,
           rows: Sequence[Row], action_url: str, done: str | None = None) -> Page:
    """The page for the link of ``channel_type``; ``done``: the action just taken."""
    w = model.words(lang)
    esc = html.escape

    def say(key: str, **values: str) -> str:
        text = w[key]
        for name, value in values.items():  # plain replacement: no format() on config text
            text = text.replace("{" + name + "}", value)
        return esc(text)

    channel_name = w.get(f"ch.{channel_type}", channel_type)
    style = _STYLE.format(color=model.color)
    logo = (f'<img src="{esc(model.logo_url, quote=True)}" alt="">'
            if model.logo_url else "")
    brand = model.name or ""
    parts = [f'<header>{logo}<h1 id="brand">{esc(brand)}</h1></header><main>',
             f"<h2>{say('title')}</h2>"]
    if address:
        parts.append(f'<p id="address">{say("for", address=address)}</p>')
    if brand:
        parts.append(f"<p>{say('intro', brand=brand)}</p>")
    if done is not None:
        parts.append(f'<p id="done" role="status">{say("done." + done, channel=channel_name)}'
                     "</p>")
    parts.append(f"<table><thead><tr><th>{say('channel')}</th><th>{say('purpose')}</th>"
                 f"<th>{say('state')}</th></tr></thead><tbody>")
    for row in rows:
        name = w.get(f"ch.{row.channel_type}", row.channel_type)
        parts.append(f'<tr data-channel="{esc(row.channel_type, quote=True)}" '
                     f'data-purpose="{row.purpose}"><td>{esc(name)}</td>'
                     f"<td>{say('p.' + row.purpose)}</td>"
                     f'<td class="{row.state}">{say("s." + row.state)}</td></tr>')
    parts.append("</tbody></table>")
    mine = next((r for r in rows if r.channel_type == channel_type
                 and r.purpose == "marketing"), None)
    action = esc(action_url, quote=True)
    choice = RESUBSCRIBE if mine is not None and mine.state != ON else UNSUBSCRIBE
    parts.append(f'<form method="post" action="{action}">'
                 f'<button type="submit" name="action" value="{choice}" id="{choice}" '
                 f'class="primary">{say(choice, channel=channel_name)}</button>'
                 f'<button type="submit" name="action" value="{ALL}" id="unsubscribe-all">'
                 f"{say('all')}</button></form>")
    parts.append(f"<footer>{say('note')}</footer></main>")
    page = (f'<!doctype html><html lang="{esc(lang, quote=True)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{say('title')}</title><style>{style}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    images = ""
    if model.logo_url:
        origin = urlsplit(model.logo_url)
        images = f"; img-src {origin.scheme}://{origin.netloc}"
    csp = (f"default-src 'none'; style-src 'sha256-{digest}'{images}; "
           "form-action 'self'; frame-ancestors 'none'")
    return Page(page, csp)


def states(channel_types: Sequence[str], records: Mapping[str, bool],
           defaults: Mapping[str, str]) -> list[Row]:
    """Each channel type and purpose with its state: the user's record when
    there is one, else the channel type's default (transactional: on)."""
    rows = []
    for kind in channel_types:
        for purpose in PURPOSES:
            granted = records.get(f"{kind}:{purpose}")
            if granted is None:
                on = purpose == "transactional" or defaults.get(kind, "opt_out") == "opt_out"
                state = ON if on else NOT_ASKED
            else:
                state = ON if granted else OFF
            rows.append(Row(kind, purpose, state))
    return rows
