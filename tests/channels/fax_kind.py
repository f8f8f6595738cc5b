"""A channel type the product does not ship, written the way
docs/contributing.md ("Adding a channel type") says: this one module (the
channel, its ``build`` and its :class:`ChannelKind`) and its config model.
tests/channels/test_channel_kinds.py registers it and delivers through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message
from config.base import StrictModel


class FaxModel(StrictModel):
    """``type: fax``: the sending station's name, printed on every page."""

    type: Literal["fax"]
    station: str = Field(min_length=1, max_length=40)


@dataclass(slots=True)
class FaxChannel:
    name: str
    station: str
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (station, number, text)

    async def send(self, message: Message) -> DeliveryResult:
        number = message.data.get("fax")
        if not number:
            return DeliveryResult(False, self.name, message.message_id, error="no fax number")
        self.sent.append((self.station, str(number), message.text))
        return DeliveryResult(True, self.name, message.message_id)

    async def close(self) -> None:
        return None


def build(name: str, model: FaxModel, context: BuildContext) -> FaxChannel:
    return FaxChannel(name, model.station)


def _fax(contact: Any) -> dict[str, Any]:
    number = contact.address_of("fax")
    return {"fax": number} if number is not None else {}


# The number is a free attribute of the directory record; marketing by fax
# needs the recipient's prior consent.
KIND = ChannelKind("fax", FaxModel, build, address_field="fax", default_consent="opt_in",
                   template_fields=_fax)
