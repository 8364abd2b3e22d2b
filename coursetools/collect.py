"""Lay out the submissions an instructor received the way `course grade` reads them.

    course collect SOURCE --assignment NAME --into SUBMISSIONS

writes one notebook per student to SUBMISSIONS/STUDENT/NAME/NAME.ipynb and reports every
file of SOURCE it did not collect, with the reason. SOURCE is a folder (or one .zip of it)
in any of these layouts, detected from what it holds:

* **nbgrader exchange**: SOURCE is an exchange course's `inbound/` folder or holds one.
  Each entry is `STUDENT+ASSIGNMENT+TIMESTAMP` (nbgrader may add `+RANDOM`); entries of
  other assignments are ignored and, of one student's several submissions, the one with
  the latest timestamp is collected (the others are listed as superseded).
* **one folder or .zip per student**, the notebook anywhere inside it.
* **an LMS bulk download**: flat files whose names carry the student id.

The last two may be mixed in one SOURCE. A student id is found in an entry's name by the
first of the id patterns that matches it (regular expressions searched in the name; the
id is the group named `id`, or else the first group). The defaults:

* canvas: `smithjane_12345_67890_02_attention.ipynb`, or `smithjane_LATE_12345_...`:
  the id is Canvas's user id, 12345;
* moodle: `Jane Smith_123456_assignsubmission_file_02_attention.ipynb`, also as a folder
  (Moodle's "download submissions in folders"): the id is Moodle's participant id.

A folder or .zip whose name matches no pattern is named by the student id itself when the
name is a valid id (letters, digits, `_`, `.`, `-`, as `course grade` requires). A flat
notebook that matches no pattern is not attributed: rename it or pass a pattern.

Exactly one notebook per student is collected. When a student has several, the one whose
path mentions NAME is taken if it is the only such one (the others are listed as ignored);
otherwise none is taken and all are reported, for the instructor to decide.

Archives are never extracted blindly: a .zip that is corrupt, password-protected, holds a
member whose path is absolute or climbs out with `..`, holds a symbolic link, has too many
members or expands beyond `max_zip_bytes` is reported and nothing of it is used. Only the
notebooks are written, to paths built here, never from a member's name. Symbolic links in
SOURCE are reported and not followed.

Nothing is dropped silently: every file of SOURCE ends up in exactly one of
`Report.collected`, `Report.unattributed` (may hold a submission: act on it) or
`Report.ignored` (not a submission, e.g. checkpoints or PDFs). `write_log` records all of
them in a CSV. This module raises `CollectError` for unusable arguments and returns
everything else in the `Report`; only the CLI prints.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nbgrader.utils import parse_utc

# What `course grade` accepts as a student id (and a safe single path component).
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_ID_PATTERNS = {
    "canvas": r"^[^_]+_(?:LATE_)?(?P<id>\d+)_\d+_",
    "moodle": r"^.+?_(?P<id>\d+)_assignsubmission_[a-z]+(?:_|$)",
}
MAX_ZIP_BYTES = 256 * 2**20
# A real submission has a few files; tens of thousands of members is an attack on the
# collector (each member costs a header parse), not a notebook.
MAX_ZIP_MEMBERS = 10_000
# Editor and OS droppings: folders and files never holding a submission.
JUNK_FOLDERS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}
JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class CollectError(Exception):
    """The arguments cannot be used at all (missing SOURCE, bad pattern, ...)."""


@dataclass(frozen=True)
class Collected:
    student: str
    source: str  # where it came from, relative to SOURCE; `a.zip!dir/x.ipynb` inside an archive
    target: Path


@dataclass(frozen=True)
class Item:
    source: str  # relative to SOURCE; a folder ends in '/'; `a.zip!member` inside an archive
    reason: str
    student: str = ""  # when known


@dataclass
class Report:
    layout: str  # "exchange" or "folders" (per-student folders/zips and LMS files)
    collected: list[Collected] = field(default_factory=list)
    unattributed: list[Item] = field(default_factory=list)
    ignored: list[Item] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    """A file inside one student's folder or archive."""
    inner: str  # path inside the container, '/'-separated
    path: Path | None  # readable copy on disk; None when not extracted (not a notebook)
    problem: str = ""


@dataclass(frozen=True)
class _Candidate:
    source: str
    inner: str
    path: Path


def compile_patterns(patterns: list[str] | None = None) -> list[re.Pattern]:
    """Compile id patterns (default: Canvas and Moodle), checking each captures an id."""
    compiled = []
    for text in (DEFAULT_ID_PATTERNS.values() if patterns is None else patterns):
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise CollectError(f"id pattern {text!r} is not a valid regular expression ({exc})") from None
        if "id" not in pattern.groupindex and pattern.groups == 0:
            raise CollectError(f"id pattern {text!r} captures nothing: put the student id in a group, "
                               "e.g. (?P<id>\\d+)")
        compiled.append(pattern)
    return compiled


def _id_from_name(name: str, patterns: list[re.Pattern], whole_name: bool) -> tuple[str, str]:
    """(student id, '') or ('', why there is none) for a file or folder name."""
    for pattern in patterns:
        match = pattern.search(name)
        if match:
            found = match.group("id") if "id" in pattern.groupindex else match.group(1)
            if found and STUDENT_ID.match(found):
                return found, ""
            return "", (f"id pattern {pattern.pattern!r} found {found!r}, which is not a valid "
                        "student id (letters, digits, '_', '.', '-')")
    if whole_name:
        stem = name[:-4] if name.lower().endswith(".zip") else name
        if STUDENT_ID.match(stem):
            return stem, ""
    what = "is not a student id itself and " if whole_name else ""
    return "", (f"no student id in the name: it {what}matches none of the id patterns; "
                "rename it after the student or pass --id-pattern")


def _is_junk(inner: str) -> bool:
    parts = inner.split("/")
    return (any(p in JUNK_FOLDERS or p.startswith(".") for p in parts[:-1])
            or parts[-1] in JUNK_FILES or parts[-1].startswith("._"))


def _folder_entries(folder: Path) -> list[_Entry]:
    entries = []
    for here, dirs, files in os.walk(folder):  # never follows links
        base = Path(here)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                inner = (base / name).relative_to(folder).as_posix()
                entries.append(_Entry(inner + "/", None, "symbolic link, not followed: copy what it "
                                                         "points to into the folder instead"))
        dirs.sort()
        for name in sorted(files):
            path = base / name
            inner = path.relative_to(folder).as_posix()
            if path.is_symlink():
                entries.append(_Entry(inner, None, "symbolic link, not followed: copy the file itself "
                                                   "into the folder instead"))
            else:
                entries.append(_Entry(inner, path))
    return entries


def _member_problem(info: zipfile.ZipInfo) -> str:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return f"member {info.filename!r} points outside the archive (absolute or '..' path)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"member {info.filename!r} is a symbolic link"
    if info.flag_bits & 0x1:
        return f"member {info.filename!r} is password-protected"
    return ""


def _unpack(archive: Path, dest: Path, max_bytes: int, keep: tuple[str, ...]) -> tuple[list[_Entry], str]:
    """Check the whole archive, then extract the members ending in `keep` under `dest`.

    Returns (entries, '') or ([], why the archive is refused); nothing of a refused
    archive is used."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_MEMBERS:
                return [], f"it holds {len(infos)} members, more than {MAX_ZIP_MEMBERS}"
            for info in infos:
                problem = _member_problem(info)
                if problem:
                    return [], problem
            declared = sum(info.file_size for info in infos)
            if declared > max_bytes:
                return [], (f"it expands to {declared / 2**20:.1f} MiB, over the limit of "
                            f"{max_bytes / 2**20:.0f} MiB (raise it with --max-zip-mb if it is genuine)")
            entries, budget = [], max_bytes
            for number, info in enumerate(infos):
                if info.is_dir():
                    continue
                inner = PurePosixPath(info.filename.replace("\\", "/")).as_posix()
                if not inner.lower().endswith(keep) or _is_junk(inner):
                    entries.append(_Entry(inner, None))
                    continue
                with zf.open(info) as member:
                    # zipfile stops at the declared size and checks the CRC; the budget
                    # still bounds what is read should a zipfile version trust less.
                    data = member.read(budget + 1)
                if len(data) > budget:
                    return [], (f"it expands beyond the limit of {max_bytes / 2**20:.0f} MiB "
                                "(its headers understate the sizes)")
                budget -= len(data)
                # Stored under a name built here, never the member's own path.
                target = dest / f"{number}{PurePosixPath(inner).suffix.lower()}"
                target.write_bytes(data)
                entries.append(_Entry(inner, target))
            return entries, ""
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, RuntimeError) as exc:
        return [], f"it is not a readable zip archive ({type(exc).__name__}: {str(exc)[:120]})"


class _Collector:
    def __init__(self, name: str, patterns: list[re.Pattern], max_zip_bytes: int, scratch: Path):
        self.name = name
        self.patterns = patterns
        self.max_zip_bytes = max_zip_bytes
        self.scratch = scratch
        self.report = Report(layout="folders")
        self.candidates: dict[str, list[_Candidate]] = defaultdict(list)
        self._archives = 0

    def unattributed(self, source: str, reason: str, student: str = "") -> None:
        self.report.unattributed.append(Item(source, reason, student))

    def ignored(self, source: str, reason: str, student: str = "") -> None:
        self.report.ignored.append(Item(source, reason, student))

    def unpack(self, archive: Path, keep: tuple[str, ...]) -> tuple[list[_Entry], Path, str]:
        self._archives += 1
        dest = self.scratch / f"archive{self._archives}"
        dest.mkdir()
        entries, problem = _unpack(archive, dest, self.max_zip_bytes, keep)
        return entries, dest, problem

    def container(self, student: str, entries: list[_Entry], prefix: str) -> None:
        """Sort the files of one student's folder or archive."""
        for entry in entries:
            source = prefix + entry.inner
            if entry.problem:
                self.unattributed(source, entry.problem, student)
            elif _is_junk(entry.inner):
                self.ignored(source, "editor checkpoint or system file", student)
            elif entry.inner.lower().endswith(".ipynb") and entry.path is not None:
                self.candidates[student].append(_Candidate(source, entry.inner, entry.path))
            elif entry.inner.lower().endswith(".zip"):
                self.unattributed(source, "an archive inside a submission is not opened: unpack it "
                                          "into the student's folder and collect again", student)
            else:
                self.ignored(source, "not a notebook", student)

    def top_level(self, folder: Path, prefix: str = "") -> None:
        """Per-student folders and zips, and LMS files, side by side in `folder`."""
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            name, source = entry.name, prefix + entry.name
            if _is_junk(name + ("/x" if entry.is_dir() else "")):
                self.ignored(source + ("/" if entry.is_dir() else ""), "editor checkpoint or system file")
            elif entry.is_symlink():
                self.unattributed(source, "symbolic link, not followed: copy what it points to into "
                                          "SOURCE instead")
            elif entry.is_dir():
                student, why = _id_from_name(name, self.patterns, whole_name=True)
                if not student:
                    self.unattributed(source + "/", f"folder not collected: {why}")
                else:
                    self.container(student, _folder_entries(entry), source + "/")
            elif name.lower().endswith(".zip"):
                student, why = _id_from_name(name, self.patterns, whole_name=True)
                if not student:
                    self.unattributed(source, f"archive not opened: {why}")
                    continue
                entries, _, problem = self.unpack(entry, keep=(".ipynb",))
                if problem:
                    self.unattributed(source, f"archive refused: {problem}", student)
                else:
                    self.container(student, entries, source + "!")
            elif name.lower().endswith(".ipynb"):
                student, why = _id_from_name(name, self.patterns, whole_name=False)
                if student:
                    self.candidates[student].append(_Candidate(source, name, entry))
                else:
                    self.unattributed(source, why)
            else:
                student, _ = _id_from_name(name, self.patterns, whole_name=False)
                self.ignored(source, "not a notebook or zip archive", student)

    def exchange(self, inbound: Path, prefix: str) -> None:
        """nbgrader's inbound folder: STUDENT+ASSIGNMENT+TIMESTAMP[+RANDOM] entries."""
        self.report.layout = "exchange"
        latest: dict[str, list[tuple[object, str, Path]]] = defaultdict(list)
        for entry in sorted(inbound.iterdir(), key=lambda p: p.name):
            source = prefix + entry.name + ("/" if entry.is_dir() else "")
            parts = entry.name.split("+")
            if entry.is_symlink() or not entry.is_dir():
                self.unattributed(source, "not an nbgrader submission folder (a file or link in inbound/)")
                continue
            if len(parts) not in (3, 4):
                self.unattributed(source, "not an nbgrader submission name STUDENT+ASSIGNMENT+TIMESTAMP")
                continue
            student, assignment, timestamp = parts[:3]
            if assignment != self.name:
                self.ignored(source, f"a submission of another assignment ({assignment})", student)
                continue
            if not STUDENT_ID.match(student):
                self.unattributed(source, f"student id {student!r} is not valid (letters, digits, "
                                          "'_', '.', '-')")
                continue
            try:
                when = parse_utc(timestamp)
            except (ValueError, OverflowError, TypeError) as exc:
                self.unattributed(source, f"unreadable timestamp {timestamp!r} ({exc})", student)
                continue
            latest[student].append((when, entry.name, entry))
        for student, submissions in latest.items():
            submissions.sort(key=lambda s: (s[0], s[1]))
            _, newest_name, newest = submissions[-1]
            for _, old_name, _ in submissions[:-1]:
                self.ignored(prefix + old_name + "/", f"superseded by the later submission {newest_name}",
                             student)
            entries = _folder_entries(newest)
            source = prefix + newest_name + "/"
            for entry in entries:
                if entry.inner == "timestamp.txt":
                    self.ignored(source + entry.inner, "nbgrader's record of the submission time", student)
            self.container(student, [e for e in entries if e.inner != "timestamp.txt"], source)

    def choose(self) -> dict[str, _Candidate]:
        """One notebook per student, or none and every candidate reported."""
        chosen = {}
        for student, found in sorted(self.candidates.items()):
            if len(found) == 1:
                chosen[student] = found[0]
                continue
            named = [c for c in found if self.name.lower() in c.inner.lower()]
            if len(named) == 1:
                chosen[student] = named[0]
                for other in found:
                    if other is not named[0]:
                        self.ignored(other.source, f"another notebook of this student; the one named "
                                                   f"for {self.name} was collected: {named[0].source}",
                                     student)
                continue
            names = ", ".join(c.source for c in found)
            for candidate in found:
                self.unattributed(candidate.source,
                                  f"{len(found)} notebooks for student {student} ({names}): none "
                                  "collected; keep the one to grade and collect again", student)
        return chosen


def collect(source: Path, name: str, into: Path, id_patterns: list[str] | None = None,
            max_zip_bytes: int = MAX_ZIP_BYTES) -> Report:
    """Collect every submission of assignment `name` in `source` into `into`; see the module doc."""
    source, into = Path(source), Path(into)
    if not STUDENT_ID.match(name):
        raise CollectError(f"assignment name {name!r} is not valid: letters, digits, '_', '.', '-'")
    if not source.exists():
        raise CollectError(f"SOURCE {source} does not exist")
    if source.is_file() and not zipfile.is_zipfile(source):
        raise CollectError(f"SOURCE {source} is neither a folder nor a zip archive")
    if into.resolve() == source.resolve() or source.resolve() in into.resolve().parents:
        raise CollectError(f"--into {into} is inside SOURCE {source}: choose a folder outside it, "
                           "or a second collect would read the first one's output")
    patterns = compile_patterns(id_patterns)
    with tempfile.TemporaryDirectory(prefix="course-collect-") as scratch:
        collector = _Collector(name, patterns, max_zip_bytes, Path(scratch))
        folder, prefix = source, ""
        if source.is_file():
            # A whole LMS download as one zip: keep its notebooks and per-student zips.
            entries, dest, problem = collector.unpack(source, keep=(".ipynb", ".zip"))
            if problem:
                collector.unattributed(source.name, f"archive refused: {problem}")
                return collector.report
            folder, prefix = _rebuild(entries, dest / "tree", collector, source.name + "!")
        if folder.name == "inbound":
            collector.exchange(folder, prefix)
        elif (folder / "inbound").is_dir():
            for entry in sorted(folder.iterdir(), key=lambda p: p.name):
                if entry.name != "inbound":
                    collector.ignored(prefix + entry.name + ("/" if entry.is_dir() else ""),
                                      "outside the exchange's inbound/ folder")
            collector.exchange(folder / "inbound", prefix + "inbound/")
        else:
            collector.top_level(folder, prefix)
        for student, candidate in collector.choose().items():
            folder_out = into / student / name
            if folder_out.is_symlink() or (into / student).is_symlink():
                collector.unattributed(candidate.source, f"{into / student} is a symbolic link: "
                                       "not written through it", student)
                continue
            # A stale notebook left from an earlier collect would be graded beside this one.
            if folder_out.exists():
                shutil.rmtree(folder_out)
            folder_out.mkdir(parents=True)
            target = folder_out / f"{name}.ipynb"
            shutil.copyfile(candidate.path, target)
            collector.report.collected.append(Collected(student, candidate.source, target))
    return collector.report


def _rebuild(entries: list[_Entry], tree: Path, collector: _Collector, prefix: str) -> tuple[Path, str]:
    """Lay the kept members of a whole-download zip out as a folder to walk.

    Paths come from members already checked for '..' and absolute names, and are
    checked again against `tree` before anything is written."""
    tree.mkdir()
    root = tree.resolve()
    for entry in entries:
        if entry.path is None:
            reason = ("editor checkpoint or system file" if _is_junk(entry.inner)
                      else "not a notebook or zip archive")
            collector.ignored(prefix + entry.inner, reason)
            continue
        target = tree.joinpath(*PurePosixPath(entry.inner).parts)
        if root not in target.resolve().parents:
            collector.unattributed(prefix + entry.inner, "member path leaves the archive: not used")
            continue
        if target.exists():
            collector.unattributed(prefix + entry.inner, "the archive holds two members of this name: "
                                                          "only the first is used")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a file member named like a folder of another member
            collector.unattributed(prefix + entry.inner, "member path clashes with another member: not used")
            continue
        shutil.move(entry.path, target)
    return tree, prefix


def write_log(report: Report, path: Path) -> Path:
    """Every file of SOURCE and what became of it, one CSV row each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "outcome", "student", "detail"])
        for c in report.collected:
            writer.writerow([c.source, "collected", c.student, str(c.target)])
        for item in report.unattributed:
            writer.writerow([item.source, "not attributed", item.student, item.reason])
        for item in report.ignored:
            writer.writerow([item.source, "ignored", item.student, item.reason])
    return path
