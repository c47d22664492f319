"""``python -m buttermilk.runner.cli``: the Hydra entry point.

This module only turns the config into typed settings and calls plain functions, so tests
can call those functions without the CLI.
"""

from __future__ import annotations

import logging
import sys

import anyio
import hydra
from omegaconf import DictConfig

from buttermilk.errors import ButtermilkError, UsageError
from buttermilk.runner.commands import EXIT_INTERRUPTED, dispatch
from buttermilk.runner.hydra_flows import CONFIG_NAME, HydraFlowCatalog, register_resolvers
from buttermilk.runner.settings import AppSettings, settings_from_config

EXIT_USAGE = 2
EXIT_FAILURE = 1

_task_started = False


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
    return anyio.run(dispatch, settings, HydraFlowCatalog())


def run_cli(cfg: DictConfig) -> int:
    """Run one CLI invocation; returns the exit code (2 for bad input)."""
    try:
        settings = settings_from_config(cfg)
        setup_logging(settings.log_level)
        return serve(settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ButtermilkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file or socket the code did not expect to fail
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


@hydra.main(version_base=None, config_path="pkg://buttermilk.conf", config_name=CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    sys.exit(run_cli(cfg))


def main() -> None:
    register_resolvers()
    try:
        _hydra_main()
    except SystemExit as exc:
        if not _task_started and exc.code not in (0, None):
            sys.exit(EXIT_USAGE)  # Hydra refused the command line (unknown key, bad override)
        raise


if __name__ == "__main__":
    main()
