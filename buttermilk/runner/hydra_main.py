"""Hydra's ``@hydra.main`` for this CLI, without the work Hydra repeats at start-up.

Hydra 1.3's main composes the whole config twice for every run: once only to read
``hydra.mode`` (whether to sweep), then again to run. This CLI never sweeps:
``--multirun`` and ``hydra.mode=MULTIRUN`` are refused before Hydra starts
(:func:`~buttermilk.runner.command_line.hydra_argv`), and the bundled config leaves the mode
unset. So a run goes straight to Hydra's own run step, as Hydra's main does when the mode
read is unset; the first composition, about a tenth of ``list``'s start-up, is skipped.

``--help`` is Hydra's own help, printed by Hydra, with a config loader that lists the
config groups from one copy of the config repository (:class:`OneRepositoryLoader`).
Every other use (``--cfg``, ``--info``, ``--hydra-help``, ...) goes to Hydra's main.

The set-up below is Hydra's (``hydra._internal.utils._run_hydra``, 1.3; pyproject keeps
hydra-core below 1.4), step for step.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import hydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.hydra import Hydra
from hydra._internal.utils import (
    _run_app,
    create_automatic_config_search_path,
    detect_calling_file_or_module_from_task_function,
    detect_task_name,
    get_args_parser,
    run_and_report,
)
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.utils import validate_config_path
from hydra.errors import SearchPathException
from omegaconf import DictConfig

TaskFunction = Callable[[DictConfig], None]


class OneRepositoryLoader(ConfigLoaderImpl):
    """Hydra's config loader, listing group options from one copy of the config repository
    per ``(config_name, overrides)``.

    Hydra's loader copies the whole repository (Hydra's own structured configs included)
    for every listing, and its help lists each group two or three times: 69 copies, two
    thirds of ``--help``. Only for a process that ends after one help: a later listing
    would not see config files added since.
    """

    def __init__(self, config_search_path: ConfigSearchPath) -> None:
        super().__init__(config_search_path=config_search_path)
        self._repositories: dict[tuple[str | None, tuple[str, ...]], CachingConfigRepository] = {}

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (config_name, tuple(overrides or ()))
        if key not in self._repositories:
            _, self._repositories[key] = self._parse_overrides_and_create_caching_repo(
                config_name, list(key[1])
            )
        return self._repositories[key].get_group_options(group_name, results_filter)


def run_hydra(task: TaskFunction, *, config_path: str, config_name: str) -> None:
    """Parse ``sys.argv`` as Hydra's main does, and run ``task`` with the composed config
    (or print the help Hydra prints, and exit 0).

    Raises (or exits) as Hydra's main does: with ``HYDRA_FULL_ERROR=1`` an error of the
    command line or a config file is raised, otherwise Hydra prints it and exits 1.
    """
    # Made first in any case: making it sets Hydra's version base, which composing reads.
    main = hydra.main(version_base=None, config_path=config_path, config_name=config_name)
    parser = get_args_parser()
    args = parser.parse_args()
    if args.experimental_rerun is None and (args.help or _plain_run(args)):
        config_name = args.config_name if args.config_name is not None else config_name
        config_path = args.config_path if args.config_path is not None else config_path
        loader = OneRepositoryLoader if args.help else ConfigLoaderImpl
        app = _create_hydra(args, task, config_path, loader)
        try:
            if args.help:
                app.app_help(config_name=config_name, args_parser=parser, args=args)
                sys.exit(0)
            _run_app(
                run=True,
                multirun=False,
                mode=None,  # as read from a config that leaves it unset: adds hydra.mode=RUN
                hydra=app,
                config_name=config_name,
                task_function=task,
                overrides=list(args.overrides),
            )
        finally:
            GlobalHydra.instance().clear()
        return
    main(task)()  # Hydra reads sys.argv again


def _create_hydra(
    args: argparse.Namespace,
    task: TaskFunction,
    config_path: str,
    loader: type[ConfigLoaderImpl],
) -> Hydra:
    """The Hydra app of ``task``, its search path as Hydra's main makes it (``--config-dir``
    first), with a config loader of type ``loader``; registered as the global one."""
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

    def create() -> Hydra:  # Hydra.create_main_hydra2, with the loader given
        app = Hydra(task_name=task_name, config_loader=loader(config_search_path=search_path))
        GlobalHydra.instance().initialize(app)
        return app

    run_and_report(add_conf_dir)
    app: Hydra = run_and_report(create)
    return app


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
    )
