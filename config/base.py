"""What every config section's models share: one strict base model and one
duration type (docs/config.md: unknown keys are errors everywhere; a duration
is ``"<int><unit>"`` or an integer of milliseconds)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from triggers.durations import parse_duration_ms
from triggers.tagcondition import TagCondition

Duration = Annotated[int, BeforeValidator(parse_duration_ms)]


class StrictModel(BaseModel):
    """Unknown keys are errors and a loaded config never changes. Arbitrary
    types are allowed for the engine's own values (a scene's predicates)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class TagConditionModel(StrictModel):
    """``all`` must all hold, at least one of ``any``, none of ``none`` (a
    scene's user filter, a strategy's entry). An absent or empty list states
    nothing. Sections narrow the tag names (a scene filter sees only the
    behaviour tags) and keep their own defaults."""

    all: list[str] | None = None
    any: list[str] | None = None
    none: list[str] | None = None

    def condition(self) -> TagCondition:
        return TagCondition.of(self.all, self.any or None, self.none)
