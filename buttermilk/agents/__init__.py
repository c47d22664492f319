"""Agents shipped with Buttermilk: sentiment, lexicon matching, console review, test helpers."""
