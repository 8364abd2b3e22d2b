"""`course`: the instructor's command line, a thin layer over nbgrader.

    course library [--check]              regenerate llmref/ from the solution notebooks
    course release [NAME ...] [--check]   regenerate notebooks/ from solutions/ (nbgrader)
    course grade NAME SUBMISSIONS         autograde a class's submissions (each learner's code in a
                                          bubblewrap sandbox); writes grades.csv
    course feedback NAME                  feedback pages for the graded class, hidden tests removed
    course collect SOURCE --assignment NAME --into SUBMISSIONS
                                          lay out submissions as received (per-student folders or
                                          zips, nbgrader exchange, LMS download) for `course grade`
    course export --class-dir DIR         one CSV of every student's grades, for the LMS
    course selfcheck [NAME ...]           grade each assignment's solution (full marks), release
                                          (zero) and known mistakes (points lost), as a class
    course bundle [NAME ...] --out DIR    the learner's bundle of each assignment for a graded class
                                          (DIR/NAME/ and DIR/NAME.zip): no solutions, hidden tests
                                          or reference implementations; --snapshots re-records the
                                          references' answers it replays, --check tests they are current

Run it from the course repository (or pass --root); collect and export run anywhere.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .distributed import ClusterError
from . import bundle, collect, grades, grading, library, release, report, sandbox, selfcheck


def find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "solutions").is_dir() and (folder / "coursetools").is_dir():
            return folder
    raise SystemExit(f"error: {start} is not inside the course repository (no solutions/ and "
                     "coursetools/ folders above it). Run from the repository or pass --root.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="course repository (default: found from cwd)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("library", help="extract llmref/ modules from tagged solution cells")
    p.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")

    p = sub.add_parser("release", help="generate notebooks/ from solutions/ with nbgrader")
    p.add_argument("names", nargs="*", help="assignments (default: all in solutions/)")
    p.add_argument("--check", action="store_true",
                   help="generate into a temporary folder and fail if notebooks/ differs")

    p = sub.add_parser("grade", help="autograde every submission of one assignment")
    p.add_argument("name", help="assignment, e.g. 02_attention")
    p.add_argument("submissions", type=Path,
                   help="folder of STUDENT/NAME/*.ipynb (nbgrader's layout) or STUDENT.ipynb files")
    p.add_argument("--class-dir", type=Path, default=Path("class"),
                   help="the class's nbgrader folder: gradebook, submitted/, autograded/ (default: ./class)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds allowed to grade one submission before it scores 0 (default 600)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: one per CPU core)")
    p.add_argument("--memory-gb", type=float, default=grading.MEMORY_GB,
                   help=f"address space allowed to each grading kernel (default {grading.MEMORY_GB:g})")
    p.add_argument("--no-sandbox", action="store_true",
                   help="UNSAFE: run the learners' code without the bubblewrap sandbox, able to read "
                        "the hidden tests and other students' work and to rewrite the gradebook; "
                        "only for a machine without bubblewrap and submissions you trust")
    _gradebook_option(p)
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on a Dask cluster instead of --jobs local workers, e.g. "
                        "tcp://HOST:8786; the class folder must be on a filesystem every machine "
                        "mounts at the same path, and the gradebook PostgreSQL (--db-url) when "
                        "workers run on other machines (README: Grading a large class)")

    p = sub.add_parser("feedback", help="write feedback pages (hidden tests removed) for a graded class")
    p.add_argument("name", help="assignment, e.g. 02_attention")
    p.add_argument("--class-dir", type=Path, default=Path("class"),
                   help="the class folder that `course grade` wrote (default: ./class)")
    _gradebook_option(p)

    p = sub.add_parser("collect", help="lay out submissions as received for `course grade`",
                       description=collect.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path,
                   help="folder (or .zip) as received: per-student folders or zips, an nbgrader "
                        "exchange inbound/, or an LMS bulk download")
    p.add_argument("--assignment", required=True, help="assignment, e.g. 02_attention")
    p.add_argument("--into", type=Path, required=True,
                   help="submissions folder to write STUDENT/NAME/NAME.ipynb into (outside SOURCE)")
    p.add_argument("--id-pattern", action="append", metavar="REGEX",
                   help="regular expression finding the student id in a file or folder name, in a "
                        "group named id, e.g. '^(?P<id>s\\d+)_'; may be repeated; replaces the "
                        "defaults: " + ", ".join(f"{k} '{v}'" for k, v in collect.DEFAULT_ID_PATTERNS.items()))
    p.add_argument("--max-zip-mb", type=float, default=collect.MAX_ZIP_BYTES / 2**20,
                   help="refuse a zip that expands beyond this many MiB "
                        f"(default {collect.MAX_ZIP_BYTES / 2**20:g})")

    p = sub.add_parser("export", help="write one CSV of the class's grades from its gradebook")
    p.add_argument("--class-dir", type=Path, default=Path("class"),
                   help="the class folder that `course grade` wrote (default: ./class)")
    p.add_argument("--out", type=Path,
                   help="CSV to write (default: CLASS_DIR/grades.csv)")
    _gradebook_option(p)

    p = sub.add_parser("selfcheck", help="prove each assignment's grading: solution full marks, "
                                         "release zero, every known mistake loses points")
    p.add_argument("names", nargs="*", help="assignments (default: all in solutions/)")
    p.add_argument("--per-cell", type=int, default=None,
                   help="grade only the first N known mistakes of each graded function (default: all)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: one per CPU core)")
    p.add_argument("--no-sandbox", action="store_true", help="UNSAFE outside a trusted machine; see grade")

    p = sub.add_parser("bundle", help="build the learner's bundle per assignment (no answers), "
                                      "or re-record / check the snapshots it replays")
    p.add_argument("names", nargs="*", help="assignments (default: every one the bundle covers)")
    p.add_argument("--out", type=Path, default=Path("_build") / "bundles",
                   help="folder to write NAME/ and NAME.zip into (default: _build/bundles)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--snapshots", action="store_true",
                      help="re-record autograder/snapshots/NAME.json and .npz from the references "
                           "(after changing an exercise, a check or llmref; commit the result)")
    mode.add_argument("--check", action="store_true",
                      help="re-record into a temporary folder and fail if the committed snapshots differ")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="assignments recorded at once (default: one per CPU core)")

    args = parser.parse_args(argv)
    if args.command == "collect":
        return _collect(args)
    if args.command == "export":
        return _export(args)
    root = (args.root or find_root(Path.cwd())).resolve()

    if args.command == "library":
        if args.check:
            stale = library.stale(root)
            for path in stale:
                print(f"stale: {path.relative_to(root)} (run `course library`)")
            return 1 if stale else 0
        for path in library.write(root):
            print(f"wrote {path.relative_to(root)}")
        return 0

    if args.command == "release":
        names = args.names or release.assignment_names(root)
        if args.check:
            problems = release.check(root, names)
            for line in problems:
                print(line)
            return 1 if problems else 0
        for name in names:
            release.generate(root, name, root / "notebooks")
            print(f"released notebooks/{name}")
        return 0

    if args.command == "grade":
        try:
            results = grading.grade_class(root, args.name, args.submissions.resolve(),
                                          args.class_dir.resolve(), timeout=args.timeout,
                                          jobs=args.jobs, memory_gb=args.memory_gb,
                                          isolate=not args.no_sandbox, db_url=args.db_url,
                                          scheduler=args.scheduler)
        except (sandbox.SandboxUnavailable, ClusterError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.no_sandbox:
            print("warning: graded WITHOUT the sandbox (--no-sandbox): the learners' code could "
                  "read the hidden tests and other submissions and change the gradebook",
                  file=sys.stderr)
        csv_path = grading.write_csv(results, args.class_dir.resolve() / f"grades_{args.name}.csv")
        graded = sum(r.reason == "" for r in results)
        print(f"graded {graded} of {len(results)} submissions; grades in {csv_path}")
        print(report.summary_table(results, title=args.name))
        return 0
    if args.command == "feedback":
        pages = grading.generate_feedback(args.class_dir.resolve(), args.name, db_url=args.db_url)
        print(f"wrote {len(pages)} feedback pages under {args.class_dir / 'feedback'}")
        return 0
    if args.command == "selfcheck":
        return _selfcheck(root, args)
    if args.command == "bundle":
        return _bundle(root, args)
    return 2


def _bundle(root: Path, args: argparse.Namespace) -> int:
    """Exit 0 when every assignment asked for was done, 1 when one was not (each said why)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    names = args.names or release.assignment_names(root)
    failed = 0
    for name in names:
        if name in bundle.NOT_COVERED:
            print(f"skipped {name}: {bundle.NOT_COVERED[name]}")
            failed += bool(args.names)  # asked for by name: say so in the exit status
    names = [n for n in names if n not in bundle.NOT_COVERED]
    with tempfile.TemporaryDirectory(prefix="course-snapshots-") as scratch:
        target = root / bundle.SNAPSHOTS if args.snapshots else Path(scratch)

        def record(name: str) -> str:
            try:
                summary = bundle.snapshot(root, name, target)
            except bundle.BundleError as exc:
                return f"error: {exc}"
            if args.check:
                problems = bundle.compare_snapshots(root / bundle.SNAPSHOTS, target, name)
                return "; ".join(problems) if problems else f"{name}: current"
            return f"recorded {name}: {summary['calls']} calls, {summary['arrays']} arrays"

        if args.snapshots or args.check:
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                for line in pool.map(record, names):
                    print(line)
                    failed += not (line.startswith("recorded") or line.endswith(": current"))
            return 1 if failed else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            folder = bundle.build(root, name, args.out)
        except bundle.BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"wrote {folder} and {folder}.zip")
    return 1 if failed else 0


def _selfcheck(root: Path, args: argparse.Namespace) -> int:
    """Exit 0 when every assignment passes, 1 when one does not (each problem listed)."""
    names = args.names or release.assignment_names(root)
    failed = 0
    print(f"{'assignment':<14} {'points':>6} {'solution':>8} {'release':>7}  known mistakes that lose points")
    for name in names:
        try:
            check = selfcheck.check_assignment(root, name, per_cell=args.per_cell, jobs=args.jobs,
                                               isolate=not args.no_sandbox)
        except sandbox.SandboxUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        lost = sum(score < check.max_score for score in check.mistakes.values())
        print(f"{name:<14} {check.max_score:>6g} {check.solution:>8g} {check.untouched:>7g}  "
              f"{lost} of {len(check.mistakes)}  {'ok' if check.passed else 'FAILED'}")
        for problem in check.problems:
            print(f"    {problem}")
        failed += not check.passed
    print(f"{len(names) - failed} of {len(names)} assignments pass")
    return 1 if failed else 0


def _gradebook_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db-url", default=os.environ.get("COURSE_DB_URL") or None, metavar="URL",
                        help="the gradebook as an SQLAlchemy URL, e.g. postgresql://USER:PASSWORD@HOST/"
                             "DATABASE, for several graders or machines at once (default: $COURSE_DB_URL, "
                             "else CLASS_DIR/gradebook.db)")


def _collect(args: argparse.Namespace) -> int:
    """Exit 0 when every submission was collected, 1 when something needs the instructor."""
    try:
        result = collect.collect(args.source, args.assignment, args.into, id_patterns=args.id_pattern,
                                 max_zip_bytes=int(args.max_zip_mb * 2**20))
    except collect.CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log = collect.write_log(result, args.into / f"collect_{args.assignment}.csv")
    count = len(result.collected)
    print(f"collected {count} submission{'s' * (count != 1)} of {args.assignment} into {args.into} "
          f"({result.layout} layout); every file's outcome in {log}")
    if result.ignored:
        by_reason: dict[str, list[str]] = {}
        for item in result.ignored:
            by_reason.setdefault(item.reason, []).append(item.source)
        print(f"ignored {len(result.ignored)} file{'s' * (len(result.ignored) != 1)} that "
              "are not submissions:")
        for reason, sources in by_reason.items():
            shown = ", ".join(sources[:3]) + (f", and {len(sources) - 3} more" if len(sources) > 3 else "")
            print(f"  {len(sources)} × {reason}: {shown}")
    if result.unattributed:
        print(f"NOT COLLECTED ({len(result.unattributed)}): resolve these and collect again",
              file=sys.stderr)
        for item in result.unattributed:
            who = f" [{item.student}]" if item.student else ""
            print(f"  {item.source}{who}: {item.reason}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        result, path = grades.export(args.class_dir, args.out, db_url=args.db_url)
    except grades.ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {len(result.scores)} students, {len(result.assignments)} assignments "
          f"({', '.join(result.assignments)}), out of {grades.plain_number(result.max_total)} points")
    if result.missing:
        print(f"{len(result.missing)} students without a submission of some assignment (scored 0 there):")
        for student, names in result.missing.items():
            print(f"  {student}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
