"""Interfaces the core needs from the outside world, implemented by outer layers."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from service.domain.model import Cable


class BaseLoadSource(Protocol):
    """The non-EV load expected on a cable per block, in the cable's unit."""

    def base_load(self, cable: Cable, starts: Sequence[datetime]) -> dict[datetime, Decimal]: ...


class StaticBaseLoad:
    """The per-cable value a DSO engineer sets, until forecasts provide one per block."""

    def base_load(self, cable: Cable, starts: Sequence[datetime]) -> dict[datetime, Decimal]:
        return dict.fromkeys(starts, cable.base_load)
