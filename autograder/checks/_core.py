"""What every check shares: calling the learner's code safely and failing in plain words.

A check either returns quietly (after printing one line of praise) or raises
:class:`CheckFailure` whose message says what is wrong and what to try. Anything the
learner's function raises is re-raised as a CheckFailure naming the call that broke,
so a failing test cell never shows a traceback from inside this package.
"""
from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np


PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class CheckFailure(AssertionError):
    """A graded check did not pass; the message is written for the learner."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the learner's frames and the message.

        Frames inside this package would only distract, so they are left out; if the
        learner's code raised, its own traceback (their lines only) comes first.
        """
        lines: list[str] = []
        cause = self.__cause__
        if cause is not None and cause.__traceback__ is not None:
            frames = [f for f in traceback.extract_tb(cause.__traceback__)
                      if not f.filename.startswith(PACKAGE_DIR)]
            lines += ["Your code raised an error:\n", *traceback.format_list(frames),
                      *traceback.format_exception_only(type(cause), cause), "\n"]
        lines.append(f"{type(self).__name__}: {self}")
        return "".join(lines).splitlines()


def fail(message: str) -> None:
    __tracebackhide__ = True  # IPython and pytest hide this frame
    raise CheckFailure(message)


def fail_from(exc: BaseException, message: str) -> None:
    """Fail, keeping `exc` as the cause so the learner's own frames are shown above the message."""
    __tracebackhide__ = True
    raise CheckFailure(message) from exc


def describe(value: Any) -> str:
    """A short description of an argument, for messages: shapes, not contents."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"tensor of shape {tuple(value.shape)}"
    if value is None:
        return "None"
    return type(value).__name__


def call_learner(fn: Callable, *args, name: str | None = None, **kwargs) -> Any:
    """Call the learner's ``fn``; turn anything it raises into a CheckFailure."""
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        fail(f"Expected `{name}` to be a function, but it is a {type(fn).__name__}. "
             "Did a later cell reassign the name? Re-run the cell that defines it.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"`{name}` still raises NotImplementedError. Replace the "
             "`raise NotImplementedError()` line with your implementation.")
    except Exception as exc:  # the learner's bug, reported with the call that triggered it
        shown = ", ".join([describe(a) for a in args]
                          + [f"{k}={describe(v)}" for k, v in kwargs.items()])
        raise CheckFailure(
            f"`{name}` raised {type(exc).__name__}: {exc}\n"
            f"It was called with ({shown}). The traceback above this message "
            "points at the line in your code."
        ) from exc


def as_float_array(value: Any, what: str, expected_shape: Sequence[int]) -> np.ndarray:
    """Convert a returned value to a float64 array of an exact shape, or fail saying why.

    Converting to float64 also defeats objects that pretend to equal anything.
    """
    __tracebackhide__ = True
    if value is None:
        fail(f"{what} is None. Does your function end with a `return` statement?")
    if hasattr(value, "detach"):  # a torch tensor is fine; compare its values
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        fail(f"{what} should be a NumPy array of numbers, but got {type(value).__name__}.")
    expected_shape = tuple(expected_shape)
    if array.shape != expected_shape:
        fail(f"{what} has shape {array.shape}, expected {expected_shape}.")
    return array


def find_bad_values(array: np.ndarray) -> str | None:
    """Name the non-finite values in an array, or None if all are finite."""
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    if not (n_nan or n_inf):
        return None
    parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else ""]
    return " and ".join(p for p in parts if p)


def worst_mismatch(actual: np.ndarray, expected: np.ndarray) -> str:
    """Where two arrays differ most, for a message."""
    diff = np.abs(actual - expected)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"largest difference {float(diff[index]):.3g} at index {tuple(int(i) for i in index)} "
            f"(got {float(actual[index]):.6g}, expected {float(expected[index]):.6g})")


def passed(message: str) -> None:
    print(f"\N{CHECK MARK} {message}")


def seeded(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def watch_calls(forbidden: dict) -> Any:
    """A context manager that records which `forbidden` torch functions run inside it.

    `forbidden` maps a function (``torch.nn.functional.embedding``, ``torch.Tensor.backward``)
    to the name a message shows. Every torch function, however the learner imported it,
    passes through an active ``TorchFunctionMode``, so ``with watch_calls(F) as watch:`` leaves
    in ``watch.used`` the names of those called, in order of first use. torch is imported
    here, not at the top, so that the NumPy exercises' checks never load it.
    """
    from torch.overrides import TorchFunctionMode

    class Watch(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.used: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in forbidden and forbidden[func] not in self.used:
                self.used.append(forbidden[func])
            return func(*args, **(kwargs or {}))

    return Watch()


@contextlib.contextmanager
def torch_isolated(seed: int) -> Iterator[None]:
    """One thread and a seeded torch generator for a check; the learner's come back after.

    torch is imported here, not at the top: the NumPy exercises' checks must not need it.
    """
    import torch

    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

