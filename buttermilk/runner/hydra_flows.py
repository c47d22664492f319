"""Flows from Hydra's config search path: ``conf/flows/NAME.yaml`` in the package, plus any
``flows/`` folder of a user's ``--config-dir`` or ``hydra.searchpath``."""

from __future__ import annotations

import re
import threading
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from pydantic import ValidationError

from buttermilk.errors import UnknownFlowError, UsageError
from buttermilk.runner.config_sources import config_files, yaml_error_line
from buttermilk.runner.settings import describe_validation_error

if TYPE_CHECKING:
    from buttermilk.flows.models import FlowConfig

FLOWS_GROUP = "flows"
CONFIG_NAME = "config"


def examples_dir() -> str:
    """Folder of the example data shipped in the package (``${bm.examples:}``)."""
    return str(files("buttermilk.examples"))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("bm.examples"):
        OmegaConf.register_new_resolver("bm.examples", examples_dir)


class HydraFlowCatalog:
    """Flow configs found on the running Hydra app's search path.

    A flow is composed as the group option ``+flows=NAME`` of the main config, so
    ``--config-dir`` and ``hydra.searchpath`` both work and a flow may use Hydra's defaults
    lists and interpolations. A flow's name is its file name. Hydra's global state is not
    thread-safe, and services call this from worker threads: one call at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _overrides(self) -> list[str]:
        searchpath = HydraConfig.get().searchpath
        return [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []

    def names(self) -> list[str]:
        with self._lock:
            return self._names()

    def _names(self) -> list[str]:
        loader = GlobalHydra.instance().config_loader()
        found = loader.get_group_options(
            FLOWS_GROUP, config_name=CONFIG_NAME, overrides=self._overrides()
        )
        return sorted(found)

    def get(self, name: str) -> FlowConfig:
        with self._lock:
            return self._get(name)

    def _get(self, name: str) -> FlowConfig:
        from buttermilk.flows.models import FlowConfig  # the flow and source models: not for list

        known = self._names()
        if name not in known:
            raise UnknownFlowError(name, known)
        found = config_files(FLOWS_GROUP, name)
        where = found[0] if found else f"{FLOWS_GROUP}/{name}.yaml"
        if len(found) > 1:
            raise UsageError(
                f"flow {name!r} is defined twice, in {found[0]} and in {found[1]}: rename "
                "one of them (a flow's name is its file name)"
            )
        try:
            composed = compose(
                config_name=CONFIG_NAME, overrides=[*self._overrides(), f"+{FLOWS_GROUP}={name}"]
            )
            data: Any = OmegaConf.to_container(composed[FLOWS_GROUP], resolve=True)
        except Exception as exc:  # Hydra and OmegaConf raise many types for bad YAML
            raise UsageError(f"flow {name!r}: {load_problem(exc, where)}") from None
        if not isinstance(data, dict):
            raise UsageError(f"flow {name!r}: {where} {not_a_mapping(type(data).__name__)}")
        data["name"] = name
        try:
            return FlowConfig.model_validate(data)
        except ValidationError as exc:
            raise UsageError(
                f"flow {name!r} is invalid: {describe_validation_error(exc)}"
            ) from None


_LOADED_TYPE = re.compile(r"Invalid loaded object type: (\w+)")
_KINDS = {"int": "a number", "float": "a number", "str": "text", "bool": "true or false"}


def not_a_mapping(kind: str) -> str:
    """Why a flow file whose top level is of type ``kind`` cannot be a flow."""
    what = _KINDS.get(kind, "a list" if kind in ("list", "ListConfig") else kind)
    return f"holds {what}, but a flow file must be a mapping (description:, data:, agents:, ...)"


def load_problem(exc: BaseException, where: str) -> str:
    """One line for why a flow file could not be loaded: a YAML syntax error as
    ``file:line:column: problem``, any other error's first line."""
    syntax = yaml_error_line(exc)
    if syntax is not None:
        return syntax
    message = str(exc)
    loaded = _LOADED_TYPE.search(message)
    if loaded:
        return f"{where} {not_a_mapping(loaded.group(1))}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = "; ".join(line for line in lines[1:] if line.startswith("full_key:"))
    first = lines[0] if lines else type(exc).__name__
    return f"cannot load {where}: {first}" + (f" ({detail})" if detail else "")
