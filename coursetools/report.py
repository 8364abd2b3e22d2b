"""The summary `course grade` prints at the end: how the class scored, and what to look at.

`summarize` computes it from the grading results; `summary_table` renders it as text.
A submission needs attention when grading gave a reason (it scored 0 for that reason),
when it scored 0 with no reason (a blank release handed in, or every test failing: worth
a look), when graded cells that other submissions have are missing from it (test cells
deleted or renamed), or when its score lies outside 0..max (the gradebook was changed).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .grades import plain_number

# Up to this many points, one histogram row per point reads better than ranges.
POINT_BINS_UP_TO = 12
RANGE_BINS = 10
BAR_WIDTH = 40


@dataclass(frozen=True)
class Attention:
    student: str
    score: float
    max_score: float
    why: str


@dataclass
class Summary:
    count: int
    max_score: float
    mean: float = 0.0
    median: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0
    bins: list[tuple[str, int]] = field(default_factory=list)  # (label, submissions) low to high
    attention: list[Attention] = field(default_factory=list)


def _bins(scores: Sequence[float], max_score: float) -> list[tuple[str, int]]:
    if max_score <= 0:
        return [(plain_number(0), len(scores))]
    whole = float(max_score).is_integer() and all(float(s).is_integer() for s in scores)
    if whole and max_score <= POINT_BINS_UP_TO:
        edges = [float(p) for p in range(int(max_score) + 1)]
        labels = [plain_number(e) for e in edges]
        counts = [0] * len(edges)
        for score in scores:
            counts[min(max(int(score), 0), len(edges) - 1)] += 1
        return list(zip(labels, counts))
    width = max_score / RANGE_BINS
    counts = [0] * RANGE_BINS
    for score in scores:
        # Clamped: a score outside 0..max is flagged for attention, and still counted.
        counts[min(max(int(round(score / width, 9)), 0), RANGE_BINS - 1)] += 1  # 0.3 / 0.1 is 2.999...
    labels = []
    for i in range(RANGE_BINS):
        low, high = plain_number(i * width, 2), plain_number((i + 1) * width, 2)
        labels.append(f"[{low}, {high}" + (")" if i < RANGE_BINS - 1 else "]"))
    return list(zip(labels, counts))


def _attention(results, expected_cells: set[str]) -> list[Attention]:
    flagged = []
    for r in results:
        why = []
        if r.reason:
            why.append(r.reason)
        else:
            if r.score == 0:
                why.append("scored 0 without an error: the untouched release, or every test failed; "
                           "open the notebook")
            missing = sorted(expected_cells - set(r.cells))
            if missing:
                why.append(f"graded cells missing: {', '.join(missing)} (test cells deleted or renamed?)")
        if r.score < 0 or r.score > r.max_score:
            why.append(f"score {plain_number(r.score)} is outside 0..{plain_number(r.max_score)}: "
                       "check the gradebook")
        if why:
            flagged.append(Attention(r.student, r.score, r.max_score, "; ".join(why)))
    return flagged


def summarize(results: Sequence, expected_cells: Iterable[str] | None = None) -> Summary:
    """Statistics and attention list for a list of grading.Result.

    `expected_cells` are the graded cell ids every submission should have; by default the
    union of those that the submissions graded without error have."""
    results = list(results)
    if not results:
        return Summary(count=0, max_score=0.0)
    scores = [float(r.score) for r in results]
    max_score = max(float(r.max_score) for r in results)
    if expected_cells is None:
        expected = {cell for r in results if not r.reason for cell in r.cells}
    else:
        expected = set(expected_cells)
    return Summary(count=len(results), max_score=max_score, mean=statistics.fmean(scores),
                   median=statistics.median(scores), minimum=min(scores), maximum=max(scores),
                   bins=_bins(scores, max_score), attention=_attention(results, expected))


def summary_table(results: Sequence, title: str = "", expected_cells: Iterable[str] | None = None) -> str:
    """The summary as lines of text, ready to print."""
    s = summarize(results, expected_cells)
    head = f"{title}: " if title else ""
    if s.count == 0:
        return f"{head}no submissions found"
    lines = [f"{head}{s.count} submission{'s' * (s.count != 1)}, out of {plain_number(s.max_score)} points",
             f"  mean {plain_number(s.mean, 2)}, median {plain_number(s.median, 2)}, "
             f"min {plain_number(s.minimum)}, max {plain_number(s.maximum)}",
             "  score distribution:"]
    label_width = max(len(label) for label, _ in s.bins)
    largest = max(count for _, count in s.bins)
    for label, count in reversed(s.bins):  # best scores on top, as a grade list reads
        bar = "#" * (max(1, round(count / largest * BAR_WIDTH)) if count else 0)
        lines.append(f"    {label:>{label_width}} | {bar:<{BAR_WIDTH}} {count}")
    if s.attention:
        lines.append(f"needs attention ({len(s.attention)} of {s.count}):")
        width = max(len(a.student) for a in s.attention)
        for a in s.attention:
            lines.append(f"  {a.student:<{width}}  {plain_number(a.score)}/{plain_number(a.max_score)}  {a.why}")
    else:
        lines.append("needs attention: none")
    return "\n".join(lines)
