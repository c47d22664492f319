"""The command line as users type it, made ready for Hydra, and Hydra's refusals as one line.

Hydra's own parser takes its flags only before the overrides, so the README's
``bm --config-dir myconf flow=x`` (``bm`` ending in ``ui=batch``) would fail: flags are
moved in front here. Hydra prints its errors over several lines; :func:`hydra_error_line`
says the same in one line that names the key, and the closest known option.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, NoReturn

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import OmegaConfBaseException

from buttermilk.errors import UsageError
from buttermilk.runner.config_sources import yaml_error_line
from buttermilk.runner.settings import did_you_mean, known_options
from buttermilk.runner.sweeps import multirun_refusal, sweep_refusal

HYDRA_FLAGS = (
    "--config-dir/-cd DIR, --config-name/-cn NAME, --config-path/-cp PATH, --cfg/-c job, "
    "--resolve, --info/-i, --help/-h, --hydra-help, --version"
)
_NOT_IN_CONFIG = re.compile(r"Could not override '([^']+)'")
_SWEEP = re.compile(r"Sweep parameters '([^']+)' requires --multirun")
_AMBIGUOUS = re.compile(r"Ambiguous value for argument '([^']+)'")
_NO_CONFIG_DIR = re.compile(r"Additional config directory '(.+)' not found")
_MULTIRUN_MODE = re.compile(r"^\+{0,2}hydra\.mode=\s*MULTIRUN\s*$", re.IGNORECASE)


def _refuse(message: str) -> NoReturn:
    raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = get_args_parser()
    parser.error = _refuse  # type: ignore[method-assign]  # one line, not usage text
    return parser


def hydra_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` (without the program) with Hydra's flags before the overrides.

    Flags may stand on either side of the overrides, or between them, as users type
    them. Raises UsageError for a flag Hydra does not know, a flag missing its value, and
    ``--multirun`` (or ``hydra.mode=MULTIRUN``): a sweep would create only its first batch;
    the line says how to compare the values in one batch instead (``batch.variants``).
    """
    parser = _parser()
    known = parser._option_string_actions  # argparse's table: flag -> action
    for token in argv:
        if token == "--":
            break
        name = token.partition("=")[0]
        # argparse takes a unique prefix of a long flag (--config-d for --config-dir)
        abbreviates = name.startswith("--") and sum(f.startswith(name) for f in known) == 1
        if name.startswith("-") and name not in known and not abbreviates:
            raise UsageError(f"unknown flag {name}: Hydra's flags are {HYDRA_FLAGS}")
    args = parser.parse_intermixed_args(list(argv))
    overrides: list[str] = list(args.overrides)
    if args.multirun or any(_MULTIRUN_MODE.match(o) for o in overrides):
        raise UsageError(multirun_refusal(overrides))
    check_group_overrides(overrides)
    flags: list[str] = []
    for action in parser._actions:  # argparse's table of flags, in their declared order
        if not action.option_strings or action.dest in ("overrides", "help"):
            continue
        value: Any = getattr(args, action.dest, None)
        if value is None or value is False:
            continue
        flags.append(action.option_strings[0])
        if value is not True:
            flags.append(str(value))
    if args.help:
        flags.insert(0, "--help")
    return [*flags, *overrides]


def config_groups() -> dict[str, list[str]]:
    """The config groups of the bundled configs, each with its options."""
    groups: dict[str, list[str]] = {}
    for entry in files("buttermilk.conf").iterdir():
        if entry.is_dir():
            names = [f.name for f in entry.iterdir() if f.is_file()]
            found = sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))
            if found:
                groups[entry.name] = found
    return groups


def check_group_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override that gives a config group (``queue``, ``store``, ``hydra``...) a
    value that is not a config name: Hydra fails on it with a traceback."""
    groups = config_groups()
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException:
            continue  # Hydra says what is wrong with it, in one line (hydra_error_line)
        group = override.key_or_group
        is_group = group in groups or group == "hydra" or group.startswith("hydra/")
        if not is_group or override.is_delete() or override.is_sweep_override():
            continue
        value = override.value()
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            continue
        shown = f"{group}={text.partition('=')[2]}"  # as typed: null, true
        if group == "hydra":
            raise UsageError(
                f"{shown} is not allowed: hydra is Hydra's own section, set each of its "
                "options on its own (e.g. hydra.verbose=true)"
            )
        known = groups.get(group)
        names = f": {', '.join(known)}" if known else ""
        raise UsageError(f"{shown} is not allowed: {group} takes the name of a config{names}")


def hydra_error_line(exc: BaseException) -> str | None:
    """One line for an error Hydra raised while composing the config (None: not Hydra's).

    The line names what was wrong: an unknown option with the closest known one, an
    unknown group option with the known ones, an override that does not parse.
    """
    syntax = yaml_error_line(exc)
    if syntax is not None:
        return syntax
    if isinstance(exc, OverrideParseException):
        reason = _first_line(exc.message)
        return f"cannot read the override {exc.override!r}: {reason} (see Hydra's override grammar)"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        if group and exc.options is not None:
            allowed = ", ".join(exc.options) or "none found"
            return f"{group}={option} is not allowed: known options are {allowed}"
    message = str(exc)
    missing_dir = _NO_CONFIG_DIR.search(message)
    if missing_dir:
        path = missing_dir.group(1)
        what = "is not a folder" if os.path.exists(path) else "the folder does not exist"
        return f"--config-dir {path}: {what}"
    if isinstance(exc, ConfigCompositionException):
        unknown = _NOT_IN_CONFIG.search(message)
        if unknown:
            key = unknown.group(1)
            return f"{key} is not a known option{did_you_mean(key, known_options())}"
        sweep = _AMBIGUOUS.search(message) or _SWEEP.search(message)
        if sweep:
            return sweep_refusal(sweep.group(1))
    if isinstance(exc, HydraException | OmegaConfBaseException):
        cause = exc.__cause__
        reason = _first_line(message)
        if isinstance(cause, OmegaConfBaseException):
            reason = f"{reason} ({_first_line(str(cause))})"
        return reason or type(exc).__name__
    return None


def hydra_start_error(exc: BaseException, overrides: Sequence[str]) -> str:
    """One line for any error Hydra raised before the command ran, naming the ``hydra.*``
    overrides given when Hydra's own message does not say what was wrong."""
    line = hydra_error_line(exc)
    if line is not None:
        return line
    if isinstance(exc, OSError):
        return hydra_folder_error(exc, overrides)
    reason = _first_line(str(exc)) or type(exc).__name__
    given = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    if given:
        return f"Hydra cannot start with {', '.join(given)}: {reason}"
    return f"Hydra cannot start: {reason}"


def hydra_folder_error(exc: OSError, overrides: Sequence[str]) -> str:
    """One line for a folder Hydra could not make before the command ran (``hydra.run.dir``
    and the like), naming the override that gave it when there is one."""
    reason = exc.strerror or str(exc)
    failed = str(exc.filename) if exc.filename is not None else ""
    for text in overrides:
        key, _, value = text.lstrip("+").partition("=")
        path = value.rstrip("/")
        if key.startswith("hydra.") and path and failed and _nested(failed, path):
            return (
                f"{key}={value} is not allowed: cannot make the folder {failed} ({reason}); "
                "Buttermilk writes nothing there, so it may be left unset"
            )
    return f"Hydra cannot make the folder {failed} ({reason})"


def _nested(one: str, other: str) -> bool:
    """Whether one path is the other or inside it, either way round."""
    return one == other or one.startswith(f"{other}/") or other.startswith(f"{one}/")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
