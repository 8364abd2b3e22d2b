"""How long grading a class takes, per submission, with 1 and 2 concurrent jobs.

    .venv/bin/python benchmarks/grading.py [--students 8] [--exercise 02_attention]

Grades N copies of the solution notebook (as a class would submit it) through
`course grade`, and writes benchmarks/results/grading.json with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from autograder.grading import grade_class

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--exercise", default="02_attention")
    args = parser.parse_args()
    name = args.exercise
    solution = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    runs = []
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            for i in range(args.students):
                path = scratch / "submitted" / f"student{i:03d}" / name / f"{name}.ipynb"
                path.parent.mkdir(parents=True)
                nbformat.write(solution, path)
            start = time.perf_counter()
            results = grade_class(ROOT, name, scratch / "submitted", scratch / "class", jobs=jobs)
            seconds = time.perf_counter() - start
            assert all(r.score == r.max_score for r in results), "the solution must score full marks"
            runs.append({"jobs": jobs, "submissions": len(results), "seconds": round(seconds, 1),
                         "seconds_per_submission": round(seconds / len(results), 2)})
            print(runs[-1])
    out = ROOT / "benchmarks" / "results" / "grading.json"
    out.write_text(json.dumps({
        "what": f"course grade {name}: N solution submissions, registration included",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
