"""The errors of the delivery layer, under the one root
:class:`triggers.errors.SceneTriggerError` (each package has its own base:
``except ChannelError`` catches every delivery error raised on purpose)."""

from __future__ import annotations

from triggers.errors import SceneTriggerError


class ChannelError(SceneTriggerError):
    """Delivery cannot go on as configured (e.g. live delivery without channels)."""

