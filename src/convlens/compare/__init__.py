"""Comparing runs: config, curves, metrics, classes, and what changed inside the networks."""

from .cka import layer_cka, linear_cka
from .diff import compare_pair
from .page import compare_runs

__all__ = ["compare_pair", "compare_runs", "layer_cka", "linear_cka"]
