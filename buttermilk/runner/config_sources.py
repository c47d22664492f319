"""The folders Hydra reads configs from, as users gave them: the bundled ``buttermilk.conf``,
``--config-dir`` and ``hydra.searchpath`` entries.

Hydra skips a search path entry that does not exist with a warning, so a mistyped folder
would only show as "unknown flow"; :func:`check_config_folders` refuses it by name. A flow
file found in two folders would silently be the first one's: :func:`config_files` finds
every copy, so that the catalog can refuse the name naming both files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from buttermilk.errors import UsageError

MAIN = "main"
SEARCHPATH = "hydra.searchpath"  # Hydra's provider name for the app's own config module
SKIPPED_PROVIDERS = frozenset({"hydra"})  # Hydra's own configs hold no flows
UNSEARCHED_SCHEMES = frozenset({"structured"})  # Python-registered configs, not files


@dataclass(frozen=True)
class ConfigFolder:
    """One entry of Hydra's config search path."""

    provider: str
    scheme: str
    path: str

    @property
    def given_as(self) -> str:
        """How the user gave this folder, for messages."""
        if self.provider == MAIN:
            return "the bundled configs"
        if self.provider == "command-line":
            return f"--config-dir {self.path}"
        return f"{SEARCHPATH} entry {self.scheme}://{self.path}"

    def root(self) -> Path | Traversable | None:
        """The folder itself (None: a package that cannot be imported)."""
        if self.scheme == "file":
            return Path(self.path)
        try:
            return files(self.path)
        except (ImportError, TypeError, ValueError):
            return None

    def problem(self) -> str | None:
        """Why Hydra cannot read configs here, or None."""
        root = self.root()
        if root is None:
            return f"{self.given_as}: there is no installed Python package {self.path!r}"
        if isinstance(root, Path):
            where = os.path.abspath(root)
            if not root.exists():
                return f"{self.given_as}: the folder {where} does not exist"
            if not root.is_dir():
                return f"{self.given_as}: {where} is not a folder"
        return None

    def file(self, relative: str) -> str | None:
        """The path of ``relative`` (``flows/x.yaml``) in this folder, if it is there."""
        root = self.root()
        if root is None:
            return None
        found = root.joinpath(*relative.split("/"))
        if not found.is_file():
            return None
        return os.path.abspath(found) if isinstance(found, Path) else str(found)


def config_folders() -> list[ConfigFolder]:
    """The search path of the running Hydra app, in Hydra's order (first match wins).

    ``hydra.searchpath`` entries come from its final value, which the flow catalog passes
    on (Hydra's own record keeps the first of several such overrides).
    """
    hydra = HydraConfig.get()
    folders = [
        ConfigFolder(provider=s.provider, scheme=s.schema, path=s.path)
        for s in hydra.runtime.config_sources
        if s.provider not in SKIPPED_PROVIDERS
        and s.schema not in UNSEARCHED_SCHEMES
        and not s.provider.startswith(SEARCHPATH)
    ]
    for entry in hydra.searchpath:
        scheme, found, path = str(entry).partition("://")
        folders.append(
            ConfigFolder(SEARCHPATH, scheme, path)
            if found
            else ConfigFolder(SEARCHPATH, "file", scheme)
        )
    return folders


def check_config_folders() -> None:
    """Raise UsageError naming the first config folder given that cannot be read."""
    for folder in config_folders():
        problem = folder.problem()
        if problem is not None:
            raise UsageError(problem)


def check_chosen_configs() -> None:
    """Raise UsageError when a config the command was composed from (``queue=local``,
    ``store=sqlite``, the ``local`` overlay) is defined in two folders: Hydra would take the
    first one's silently."""
    for group, option in HydraConfig.get().runtime.choices.items():
        if group.startswith("hydra") or not isinstance(option, str):
            continue
        found = config_files(group, option)
        if len(found) > 1:
            raise UsageError(
                f"{group}={option} is defined twice, in {found[0]} and in {found[1]}: "
                "rename or remove one of them"
            )


def config_files(group: str, name: str) -> list[str]:
    """Every file defining the config ``group/name``, in search path order."""
    found = (folder.file(f"{group}/{name}.yaml") for folder in config_folders())
    return [path for path in found if path is not None]


def yaml_error_line(exc: BaseException) -> str | None:
    """``file:line:column: problem`` for a YAML syntax error anywhere in ``exc``'s chain
    (Hydra and OmegaConf let PyYAML's errors through or wrap them), else None."""
    cause: BaseException | None = exc
    while cause is not None:
        mark = getattr(cause, "problem_mark", None)
        if mark is not None:  # a yaml.MarkedYAMLError
            problem = getattr(cause, "problem", None) or "not valid YAML"
            line = f"{mark.name}:{mark.line + 1}:{mark.column + 1}: {problem}"
            context, at = getattr(cause, "context", None), getattr(cause, "context_mark", None)
            if context and at is not None:
                line += f" ({context} at line {at.line + 1}, column {at.column + 1})"
            return line
        cause = cause.__cause__ or cause.__context__
    return None
