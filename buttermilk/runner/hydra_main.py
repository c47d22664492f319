"""Hydra's ``@hydra.main`` for this CLI, composing the config once per command.

Hydra 1.3's main composes the whole config twice for every run: once only to read
``hydra.mode`` (whether to sweep), then again to run. This CLI never sweeps:
``--multirun`` and ``hydra.mode=MULTIRUN`` are refused before Hydra starts
(:func:`~buttermilk.runner.command_line.hydra_argv`), and the bundled config leaves the mode
unset. So a run goes straight to Hydra's own run step, as Hydra's main does when the mode
read is unset; the first composition, about a tenth of ``list``'s start-up, is skipped.
Every other use (``--help``, ``--cfg``, ``--info``, ``--hydra-help``, ...) goes to Hydra's
main unchanged.

The set-up below is Hydra's (``hydra._internal.utils._run_hydra``, 1.3; pyproject keeps
hydra-core below 1.4), step for step.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import hydra
from hydra._internal.hydra import Hydra
from hydra._internal.utils import (
    _run_app,
    create_automatic_config_search_path,
    detect_calling_file_or_module_from_task_function,
    detect_task_name,
    get_args_parser,
    run_and_report,
)
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import validate_config_path
from hydra.errors import SearchPathException
from omegaconf import DictConfig

TaskFunction = Callable[[DictConfig], None]


def run_hydra(task: TaskFunction, *, config_path: str, config_name: str) -> None:
    """Parse ``sys.argv`` as Hydra's main does, and run ``task`` with the composed config.

    Raises (or exits) as Hydra's main does: with ``HYDRA_FULL_ERROR=1`` an error of the
    command line or a config file is raised, otherwise Hydra prints it and exits 1.
    """
    hydra_main = hydra.main(version_base=None, config_path=config_path, config_name=config_name)
    args = get_args_parser().parse_args()
    if not _plain_run(args):
        hydra_main(task)()  # Hydra reads sys.argv again
        return
    if args.config_name is not None:
        config_name = args.config_name
    if args.config_path is not None:
        config_path = args.config_path
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task)
    task_name = detect_task_name(calling_file, calling_module)
    validate_config_path(config_path)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)

    def add_conf_dir() -> None:
        if args.config_dir is not None:
            abs_config_dir = os.path.abspath(args.config_dir)
            if not os.path.isdir(abs_config_dir):
                raise SearchPathException(
                    f"Additional config directory '{abs_config_dir}' not found"
                )
            search_path.prepend(
                provider="command-line",
                path=f"file://{abs_config_dir}",
                anchor=SearchPathQuery(provider="schema"),
            )

    run_and_report(add_conf_dir)
    app = run_and_report(
        lambda: Hydra.create_main_hydra2(task_name=task_name, config_search_path=search_path)
    )
    try:
        _run_app(
            run=True,
            multirun=False,
            mode=None,  # as read from a config that leaves it unset: Hydra adds hydra.mode=RUN
            hydra=app,
            config_name=config_name,
            task_function=task,
            overrides=list(args.overrides),
        )
    finally:
        GlobalHydra.instance().clear()


def _plain_run(args: argparse.Namespace) -> bool:
    """Whether the command line only runs the task (no flag that shows something else)."""
    return not (
        args.help
        or args.hydra_help
        or args.cfg is not None
        or args.resolve
        or args.info is not None
        or args.shell_completion
        or args.multirun
        or args.experimental_rerun is not None
    )
