"""Buttermilk batch: run a flow over every record of a dataset, locally or on many machines."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``buttermilk.batches`` (the notebook API), imported on first use."""
    if name == "batches":
        import importlib

        return importlib.import_module("buttermilk.batches")
    raise AttributeError(f"module 'buttermilk' has no attribute {name!r}")
