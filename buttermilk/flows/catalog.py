"""Where flows come from: anything that can list flow names and load one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from buttermilk.errors import UnknownFlowError

if TYPE_CHECKING:  # the models of flows and sources: imported by whoever loads a flow
    from buttermilk.flows.models import FlowConfig


class FlowCatalog(Protocol):
    """Known flows, by name."""

    def names(self) -> list[str]:
        """Every flow name, sorted."""
        ...

    def get(self, name: str) -> FlowConfig:
        """The flow called ``name``; raises UnknownFlowError (with the known names)."""
        ...


class StaticFlowCatalog:
    """Flows given up front (tests, embedding)."""

    def __init__(self, flows: Mapping[str, FlowConfig]) -> None:
        self._flows = dict(flows)

    def names(self) -> list[str]:
        return sorted(self._flows)

    def get(self, name: str) -> FlowConfig:
        try:
            return self._flows[name]
        except KeyError:
            raise UnknownFlowError(name, self.names()) from None
