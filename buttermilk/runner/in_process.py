"""The CLI's config, composed in this process: for Python callers (notebooks) that use the
same settings, flows, store, queue and BatchService as ``python -m buttermilk.runner.cli``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from buttermilk.errors import UsageError
from buttermilk.runner.command_line import hydra_start_error
from buttermilk.runner.config_sources import check_chosen_configs, check_config_folders
from buttermilk.runner.hydra_flows import CONFIG_NAME, HydraFlowCatalog, register_resolvers
from buttermilk.runner.settings import AppSettings, settings_from_config

CONFIG_MODULE = "buttermilk.conf"
_hydra = threading.RLock()  # Hydra's state is one per process: one composition at a time


@contextmanager
def composed(overrides: Sequence[str] = ()) -> Iterator[tuple[AppSettings, HydraFlowCatalog]]:
    """The settings and flows the CLI would have with these overrides (``ui=batch``
    first; ``store=postgres``, ``hydra.searchpath=[file://myconf]``, ``batch.seed=7``...).

    Hydra stays initialised (its flows readable) until the block ends; one block at a time
    per process. UsageError for an override Hydra or the settings refuse.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    with _hydra:
        register_resolvers()
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            given = ["ui=batch", *overrides]
            try:
                cfg = compose(CONFIG_NAME, overrides=given, return_hydra_config=True)
            except Exception as exc:  # Hydra raises many types for a bad override
                raise UsageError(hydra_start_error(exc, given)) from None
            HydraConfig.instance().set_config(cfg)
            check_config_folders()
            check_chosen_configs()
            task = copy.deepcopy(cfg)
            with read_write(task), open_dict(task):
                del task["hydra"]
            yield settings_from_config(task), HydraFlowCatalog()
