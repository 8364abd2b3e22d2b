"""Checks called by the test cells of the graded notebooks, one module per exercise."""
from ._core import CheckFailure

__all__ = ["CheckFailure"]
