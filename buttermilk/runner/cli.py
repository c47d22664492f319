"""``python -m buttermilk.runner.cli``: the Hydra entry point.

This module only turns the config into typed settings and calls plain functions, so tests
can call those functions without the CLI.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import traceback
import warnings

import anyio
from omegaconf import DictConfig

from buttermilk.errors import ButtermilkError, UsageError
from buttermilk.runner.command_line import hydra_argv, hydra_start_error
from buttermilk.runner.config_sources import check_chosen_configs, check_config_folders
from buttermilk.runner.hydra_flows import CONFIG_NAME, HydraFlowCatalog, register_resolvers
from buttermilk.runner.hydra_main import run_hydra
from buttermilk.runner.process_exit import exit_process
from buttermilk.runner.settings import AppSettings, settings_from_config

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)
EXIT_INTERRUPTED = 130  # as command_app.EXIT_INTERRUPTED, without importing the commands

_task_started = False
_user_full_error: str | None = None  # HYDRA_FULL_ERROR as the user set it


def setup_logging(level: str) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "google", "grpc", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def serve(settings: AppSettings) -> int:
    if settings.ui == "api":
        from buttermilk.api.server import serve_api  # FastAPI is imported only for ui=api

        return anyio.run(serve_api, settings, HydraFlowCatalog())
    from buttermilk.runner.commands import dispatch  # the service, store and queue

    return anyio.run(dispatch, settings, HydraFlowCatalog())


def say_error(exc: BaseException) -> None:
    """The one ``error:`` line, even when a message from a library spans several."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    print(f"error: {' '.join(lines) or type(exc).__name__}", file=sys.stderr)


def run_cli(cfg: DictConfig) -> int:
    """Run one CLI invocation; returns the exit code (2 for bad input)."""
    try:
        check_config_folders()
        check_chosen_configs()
        settings = settings_from_config(cfg)
        setup_logging(settings.log_level)
        return serve(settings)
    except UsageError as exc:
        say_error(exc)
        return EXIT_USAGE
    except ButtermilkError as exc:
        say_error(exc)
        return EXIT_FAILURE
    except BrokenPipeError as exc:
        if not stdout_reader_gone():
            say_error(exc)
            return EXIT_FAILURE
        # `| head` read what it wanted: nothing more can be shown. End as a writer whose
        # pipe closed does in a shell (128 + SIGPIPE), without a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    except OSError as exc:  # a file or socket the code did not expect to fail
        say_error(exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (poll reports POLLERR on the
    writing end of such a pipe, Linux and macOS alike)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return False


def _task(cfg: DictConfig) -> None:
    """What Hydra runs with the composed config."""
    global _task_started
    _task_started = True
    _restore_full_error()
    exit_process(run_cli(cfg))


def _restore_full_error() -> None:
    if _user_full_error is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = _user_full_error


def main() -> None:
    """The ``python -m buttermilk.runner.cli`` command; exits with the command's code.

    A command line Hydra cannot use (an unknown option, an override that does not parse,
    ``--multirun``) gives one ``error:`` line and exit code 2.
    """
    global _user_full_error
    register_resolvers()
    try:
        sys.argv[1:] = hydra_argv(sys.argv[1:])
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    # Hydra prints its own errors over several lines and exits 1; told to raise them
    # instead, it lets main() say them in one. The user's own setting comes back for the
    # command, and a user who asked for full errors gets Hydra's.
    # A search path entry that does not exist is refused in one line (run_cli), not
    # warned about by Hydra over two.
    warnings.filterwarnings("ignore", r"provider=.* is not available", UserWarning)
    _user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_hydra(_task, config_path="pkg://buttermilk.conf", config_name=CONFIG_NAME)
    except SystemExit as exc:
        if not _task_started and exc.code not in (0, None):
            sys.exit(EXIT_USAGE)  # Hydra refused the command line
        raise
    except Exception as exc:
        if _task_started:
            raise
        # Before the command ran, every failure is Hydra refusing the command line or a
        # config file: bad input, in one line.
        if _user_full_error == "1":
            traceback.print_exc()
        print(f"error: {hydra_start_error(exc, sys.argv[1:])}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    finally:
        _restore_full_error()


if __name__ == "__main__":
    main()
