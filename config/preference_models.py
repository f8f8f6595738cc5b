"""The preference centre's look and words (``delivery.preferences``): the
brand (name, logo, colour) and the page's texts per language. English and
Chinese are shipped (:data:`SHIPPED`); ``locales`` adds a language or
overrides shipped words, key by key (an unknown key is an error)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from config.base import StrictModel

EN = {
    "title": "Your message preferences",
    "for": "Preferences for {address}",
    "intro": "Choose which messages {brand} may send you.",
    "channel": "Channel", "purpose": "Messages", "state": "Status",
    "ch.email": "Email", "ch.sms": "SMS", "ch.wechat": "WeChat", "ch.push": "Push notifications",
    "ch.inbox": "In-app inbox", "ch.webhook": "Partner systems",
    "p.marketing": "Offers and news", "p.transactional": "Orders and account",
    "s.on": "Subscribed", "s.off": "Unsubscribed", "s.not_asked": "Not subscribed",
    "unsubscribe": "Unsubscribe from {channel} offers",
    "resubscribe": "Resubscribe to {channel} offers",
    "all": "Unsubscribe from all offers",
    "done.unsubscribe": "You are unsubscribed. You will get no more marketing messages "
                        "on {channel}.",
    "done.resubscribe": "You are subscribed again to offers on {channel}.",
    "done.all": "You are unsubscribed from all offers, on every channel.",
    "note": "Messages about your orders and account are still sent.",
}
ZH = {
    "title": "消息订阅设置",
    "for": "{address} 的订阅设置",
    "intro": "选择 {brand} 可以向您发送哪些消息。",
    "channel": "渠道", "purpose": "消息类型", "state": "状态",
    "ch.email": "邮件", "ch.sms": "短信", "ch.wechat": "微信", "ch.push": "推送通知",
    "ch.inbox": "站内信", "ch.webhook": "合作系统",
    "p.marketing": "优惠与资讯", "p.transactional": "订单与账户",
    "s.on": "已订阅", "s.off": "已退订", "s.not_asked": "未订阅",
    "unsubscribe": "退订{channel}优惠",
    "resubscribe": "重新订阅{channel}优惠",
    "all": "退订全部优惠",
    "done.unsubscribe": "您已退订，{channel}将不再向您发送营销信息。",
    "done.resubscribe": "您已重新订阅{channel}优惠。",
    "done.all": "您已退订所有渠道的全部优惠。",
    "note": "订单与账户相关的通知仍会发送。",
}
SHIPPED: dict[str, dict[str, str]] = {"en": EN, "zh": ZH}


class PreferencesModel(StrictModel):
    """The brand and the languages of the unsubscribe / preference page."""

    name: str = Field(default="", max_length=80)  # shown as the page's heading
    logo_url: str | None = Field(default=None, pattern=r"^https://[^\s\"'<>]+$", max_length=500)
    color: str = Field(default="#1f6feb", pattern=r"^#[0-9a-fA-F]{6}$")
    default_locale: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    locales: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("locales")
    @classmethod
    def _known_keys(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for lang, words in value.items():
            unknown = sorted(set(words) - set(EN))
            if unknown:
                raise ValueError(f"{lang}: unknown text key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(EN)})")
        return value

    @model_validator(mode="after")
    def _default_is_known(self) -> PreferencesModel:
        if self.default_locale not in SHIPPED and self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is neither shipped "
                             f"(en, zh) nor in locales")
        return self

    def words(self, lang: str) -> dict[str, str]:
        """The texts of ``lang``: configured over shipped over English."""
        return {**EN, **SHIPPED.get(lang, {}), **self.locales.get(lang, {})}

    def languages(self) -> set[str]:
        return set(SHIPPED) | set(self.locales)
