"""The ``slots:`` section: on-site content slots (``GET /slots/{slot}?user=ID``
on ``serve``, docs/ads.md "On-site slots").

A slot is a scene's content without the scene: the same variants, ``when``
rules, product sources and fallback as ``content.scenes`` (one rule
language, :mod:`config.content_models`), chosen from the visitor's live
profile and tags. Besides, ``default`` (what a visitor with no live profile,
or one whose request is not signed, gets), ``max_age`` (the
``Cache-Control`` of the answer) and ``impressions`` (when an impression is
recorded). Templates may not name ``${user.<attribute>}``: a slot reads no
user directory (one Redis round trip per request).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from config.base import Duration
from config.content_models import FallbackModel, SceneContentModel
from config.safe_template import compile_template

SlotName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# served: counted when the answer leaves serve; beacon: when the snippet shows it
# (the signed pixel of the answer's ``impression``), so a slot nobody saw is no exposure.
Impressions = Literal["beacon", "served"]
MAX_AGE_LIMIT_MS = 3_600_000


class SlotModel(SceneContentModel):
    default: FallbackModel | None = None  # no live profile (or unsigned): default ``fallback``
    max_age: Duration = Field(default=0, ge=0)
    impressions: Impressions = "beacon"

    @field_validator("max_age")
    @classmethod
    def _short(cls, value: int) -> int:
        if value > MAX_AGE_LIMIT_MS:  # a visitor's content is for now, not for a day
            raise ValueError(f"at most 1h (got {value // 1000}s)")
        return value

    @model_validator(mode="after")
    def _no_directory(self) -> SlotModel:
        texts = [(v.name, t) for v in self.variants for t in (v.subject, v.text, v.html)]
        texts += [(f.name, t) for f in (self.fallback, self.default, *self.fallbacks.values())
                  if f is not None for t in (f.subject, f.text, f.html)]
        for name, text in texts:
            if text is None:
                continue
            user = sorted(n for n in compile_template(text).names if n.startswith("user."))
            if user:
                raise ValueError(f"'{name}': {', '.join('${' + n + '}' for n in user)}"
                                 f": a slot reads no user directory (one Redis round trip)")
        return self

    def default_content(self) -> FallbackModel:
        return self.default if self.default is not None else self.fallback

    def cache_control(self) -> str:
        """Per visitor, never shared: ``private``; ``max-age`` in whole seconds."""
        return f"private, max-age={self.max_age // 1000}"
