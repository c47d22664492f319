"""Scores of a batch against ground truth, agreement across combinations and repeats."""
