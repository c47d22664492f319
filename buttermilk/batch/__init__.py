"""Batches: planning, the service that runs every batch operation, and the worker."""
