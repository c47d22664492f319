"""Entry points: the Hydra CLI (``python -m buttermilk.runner.cli``) and what it calls."""
