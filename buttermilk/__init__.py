"""Buttermilk batch: run a flow over every record of a dataset, locally or on many machines."""

__version__ = "0.1.0"
