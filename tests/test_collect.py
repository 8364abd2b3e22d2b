"""`course collect`: submissions as instructors receive them, laid out for `course grade`."""
import os
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest

from coursetools import cli, collect, grading

NAME = "02_attention"


def notebook_bytes(marker: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(f"# {marker}"))
    return nbformat.writes(nb).encode()


def put(path: Path, data: bytes | str = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def collected_marker(into: Path, student: str) -> str:
    nb = nbformat.read(into / student / NAME / f"{NAME}.ipynb", as_version=4)
    return nb.cells[0].source


def sources(items) -> set[str]:
    return {item.source for item in items}


def test_folders_and_zips_per_student_with_the_notebook_nested_anywhere(tmp_path):
    source, into = tmp_path / "received", tmp_path / "submissions"
    put(source / "alice" / NAME / f"{NAME}.ipynb", notebook_bytes("alice"))
    put(source / "alice" / NAME / ".ipynb_checkpoints" / f"{NAME}-checkpoint.ipynb", notebook_bytes("old"))
    put(source / "bob" / "deep" / "er" / "my work.ipynb", notebook_bytes("bob"))
    put(source / "bob" / "notes.pdf", b"%PDF")
    make_zip(source / "carol.zip", {"carol/hw/attention.ipynb": notebook_bytes("carol"),
                                    "__MACOSX/carol/._attention.ipynb": b"\0"})

    report = collect.collect(source, NAME, into)

    assert {c.student for c in report.collected} == {"alice", "bob", "carol"}
    for student in ("alice", "bob", "carol"):
        assert collected_marker(into, student) == f"# {student}"
    assert report.unattributed == []
    assert sources(report.ignored) == {
        f"alice/{NAME}/.ipynb_checkpoints/{NAME}-checkpoint.ipynb", "bob/notes.pdf",
        "carol.zip!__MACOSX/carol/._attention.ipynb"}
    # Exactly what `course grade` reads: one notebook per student, named for the assignment.
    assert grading.find_submissions(into, NAME) == {
        s: [into / s / NAME / f"{NAME}.ipynb"] for s in ("alice", "bob", "carol")}


def test_the_exchange_keeps_each_students_latest_submission(tmp_path):
    inbound, into = tmp_path / "exchange" / "course101" / "inbound", tmp_path / "submissions"
    early = f"alice+{NAME}+2024-03-01 09:00:00.000000 UTC"
    late = f"alice+{NAME}+2024-03-02 08:00:00.000000 UTC+Xy_-9zAbCdEf"
    for entry, marker in ((early, "early"), (late, "late")):
        put(inbound / entry / f"{NAME}.ipynb", notebook_bytes(marker))
        put(inbound / entry / "timestamp.txt", entry.split("+")[2])
    put(inbound / f"bob+{NAME}+2024-03-01 10:00:00.000000 UTC" / f"{NAME}.ipynb", notebook_bytes("bob"))
    put(inbound / "bob+01_softmax+2024-03-05 10:00:00.000000 UTC" / "01_softmax.ipynb", notebook_bytes("x"))
    put(inbound / f"carol+{NAME}+not a time" / f"{NAME}.ipynb", notebook_bytes("carol"))
    put(inbound / "stray.ipynb", notebook_bytes("stray"))
    put(tmp_path / "exchange" / "course101" / "outbound" / NAME / f"{NAME}.ipynb", notebook_bytes("release"))

    # Either the course folder that holds inbound/ or inbound/ itself.
    report = collect.collect(tmp_path / "exchange" / "course101", NAME, into)
    again = collect.collect(inbound, NAME, tmp_path / "again")

    assert report.layout == again.layout == "exchange"
    assert {c.student: c.source for c in report.collected} == {
        "alice": f"inbound/{late}/{NAME}.ipynb",
        "bob": f"inbound/bob+{NAME}+2024-03-01 10:00:00.000000 UTC/{NAME}.ipynb"}
    assert collected_marker(into, "alice") == "# late"
    assert collected_marker(tmp_path / "again", "alice") == "# late"
    ignored = {item.source: item.reason for item in report.ignored}
    assert "superseded" in ignored[f"inbound/{early}/"]
    assert "another assignment (01_softmax)" in ignored["inbound/bob+01_softmax+2024-03-05 10:00:00.000000 UTC/"]
    assert "outside the exchange's inbound/" in ignored["outbound/"]
    problems = {item.source: item.reason for item in report.unattributed}
    assert set(problems) == {f"inbound/carol+{NAME}+not a time/", "inbound/stray.ipynb"}
    assert "unreadable timestamp 'not a time'" in problems[f"inbound/carol+{NAME}+not a time/"]


@pytest.mark.parametrize("filename, student", [
    (f"smithjane_12345_67890_{NAME}.ipynb", "12345"),
    (f"smithjane_LATE_12345_67890_{NAME}-1.ipynb", "12345"),
    (f"Jane Smith_123456_assignsubmission_file_{NAME}.ipynb", "123456"),
    (f"Jane Smith_123456_assignsubmission_file_/{NAME}.ipynb", "123456"),  # Moodle, in folders
    ("smithjane_12345_67890_submission.zip!work/attention.ipynb", "12345"),  # a zip uploaded to Canvas
])
def test_lms_downloads_are_attributed_by_the_default_id_patterns(tmp_path, filename, student):
    source, into = tmp_path / "download", tmp_path / "submissions"
    if "!" in filename:
        archive, member = filename.split("!")
        make_zip(source / archive, {member: notebook_bytes("work")})
    else:
        put(source / filename, notebook_bytes("work"))

    report = collect.collect(source, NAME, into)

    assert [(c.student, c.source) for c in report.collected] == [(student, filename)]
    assert collected_marker(into, student) == "# work"
    assert report.unattributed == []


def test_an_lms_file_without_an_id_is_reported_and_a_pattern_attributes_it(tmp_path):
    source = tmp_path / "download"
    put(source / f"s042-{NAME}.ipynb", notebook_bytes("s042"))
    put(source / "feedback.txt", "comments")

    report = collect.collect(source, NAME, tmp_path / "a")
    assert report.collected == []
    [problem] = report.unattributed
    assert problem.source == f"s042-{NAME}.ipynb" and "--id-pattern" in problem.reason
    assert sources(report.ignored) == {"feedback.txt"}

    report = collect.collect(source, NAME, tmp_path / "b", id_patterns=[r"^(s\d+)-"])
    assert [c.student for c in report.collected] == ["s042"]


@pytest.mark.parametrize("pattern, message", [
    (r"^(unclosed", "not a valid regular expression"),
    (r"^\d+_", "captures nothing"),
])
def test_a_bad_id_pattern_is_refused_before_anything_is_written(tmp_path, pattern, message):
    put(tmp_path / "download" / "x.ipynb", notebook_bytes("x"))
    with pytest.raises(collect.CollectError, match=message):
        collect.collect(tmp_path / "download", NAME, tmp_path / "into", id_patterns=[pattern])
    assert not (tmp_path / "into").exists()


def test_a_pattern_that_finds_an_unusable_id_says_so(tmp_path):
    put(tmp_path / "download" / f"a b_{NAME}.ipynb", notebook_bytes("x"))
    report = collect.collect(tmp_path / "download", NAME, tmp_path / "into", id_patterns=[r"^(.+?)_"])
    [problem] = report.unattributed
    assert "'a b', which is not a valid student id" in problem.reason


def test_two_notebooks_for_one_student_are_reported_not_guessed(tmp_path):
    source, into = tmp_path / "received", tmp_path / "submissions"
    put(source / "alice" / f"{NAME}.ipynb", notebook_bytes("one"))
    put(source / "alice" / f"{NAME}-Copy1.ipynb", notebook_bytes("two"))
    # Across two LMS files of the same student, too.
    put(source / f"smithjane_12345_67890_{NAME}.ipynb", notebook_bytes("one"))
    put(source / f"smithjane_12345_67891_{NAME}-1.ipynb", notebook_bytes("two"))
    # One notebook named for the assignment beside another assignment's: that one is clear.
    put(source / "bob" / NAME / f"{NAME}.ipynb", notebook_bytes("bob"))
    put(source / "bob" / "01_softmax" / "01_softmax.ipynb", notebook_bytes("softmax"))

    report = collect.collect(source, NAME, into)

    assert [c.student for c in report.collected] == ["bob"]
    assert collected_marker(into, "bob") == "# bob"
    assert {(i.student, i.source) for i in report.unattributed} == {
        ("alice", f"alice/{NAME}.ipynb"), ("alice", f"alice/{NAME}-Copy1.ipynb"),
        ("12345", f"smithjane_12345_67890_{NAME}.ipynb"), ("12345", f"smithjane_12345_67891_{NAME}-1.ipynb")}
    assert all("2 notebooks for student" in i.reason for i in report.unattributed)
    assert not (into / "alice").exists() and not (into / "12345").exists()
    [other] = [i for i in report.ignored if i.student == "bob"]
    assert other.source == "bob/01_softmax/01_softmax.ipynb" and "named for 02_attention" in other.reason


def _hostile_zip(path: Path, name: str, data: bytes = b"x", symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{NAME}.ipynb", notebook_bytes("inside"))
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("member, symlink, message", [
    ("../../escaped.ipynb", False, "points outside the archive"),
    ("ok/../../escaped.ipynb", False, "points outside the archive"),
    ("/tmp/escaped.ipynb", False, "points outside the archive"),
    ("C:\\escaped.ipynb", False, "points outside the archive"),
    ("link.ipynb", True, "is a symbolic link"),
])
def test_hostile_zips_are_refused_whole_and_nothing_lands_outside(tmp_path, member, symlink, message):
    source, into = tmp_path / "received", tmp_path / "submissions"
    source.mkdir()
    _hostile_zip(source / "mallory.zip", member, data=b"/etc/passwd" if symlink else notebook_bytes("evil"),
                 symlink=symlink)
    before = set(tmp_path.rglob("*"))

    report = collect.collect(source, NAME, into)

    assert report.collected == []
    [problem] = report.unattributed
    assert problem.source == "mallory.zip" and problem.student == "mallory"
    assert message in problem.reason
    assert set(tmp_path.rglob("*")) - before <= {into}, "nothing may be extracted anywhere"


def test_corrupt_encrypted_and_oversized_zips_are_reported(tmp_path):
    source = tmp_path / "received"
    put(source / "broken.zip", b"PK\x03\x04 this is not really a zip")
    make_zip(source / "bomb.zip", {f"{NAME}.ipynb": b"{" + b" " * (3 * 2**20) + b"}"})
    with zipfile.ZipFile(make_zip(tmp_path / "plain.zip", {f"{NAME}.ipynb": b"{}"})) as zf:
        info = zf.infolist()[0]
    locked = bytearray((tmp_path / "plain.zip").read_bytes())
    # Set the "encrypted" flag bit in both the local and the central header.
    for offset in (6, locked.rfind(b"PK\x01\x02") + 8):
        locked[offset] |= 0x1
    put(source / "locked.zip", bytes(locked))
    assert info.flag_bits & 0x1 == 0

    report = collect.collect(source, NAME, tmp_path / "into", max_zip_bytes=2**20)

    problems = {i.source: i.reason for i in report.unattributed}
    assert set(problems) == {"broken.zip", "bomb.zip", "locked.zip"}
    assert "not a readable zip archive" in problems["broken.zip"]
    assert "expands to 3.0 MiB, over the limit of 1 MiB" in problems["bomb.zip"]
    assert "password-protected" in problems["locked.zip"]
    assert report.collected == []


def test_a_zip_whose_headers_understate_its_size_is_refused(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "received" / "eve.zip", {f"{NAME}.ipynb": b"{" + b" " * 4000 + b"}"})
    real_infolist = zipfile.ZipFile.infolist

    def lying(self):
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 10  # claims 10 bytes; zipfile would then stop reading at 10 bytes
        return infos

    # Reading stops at the claimed size, so the CRC of the truncated member fails.
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying)
    report = collect.collect(archive.parent, NAME, tmp_path / "into", max_zip_bytes=100)
    [problem] = report.unattributed
    assert problem.source == "eve.zip" and "not a readable zip archive" in problem.reason
    assert report.collected == []


def test_symbolic_links_in_source_are_not_followed(tmp_path):
    source, secret = tmp_path / "received", tmp_path / "secret"
    put(secret / f"{NAME}.ipynb", notebook_bytes("secret"))
    put(source / "alice" / f"{NAME}.ipynb", notebook_bytes("alice"))
    os.symlink(secret / f"{NAME}.ipynb", source / "alice" / "extra.ipynb")
    os.symlink(secret, source / "alice" / "linked")
    os.symlink(secret, source / "bob")

    report = collect.collect(source, NAME, tmp_path / "into")

    assert [c.student for c in report.collected] == ["alice"]
    assert collected_marker(tmp_path / "into", "alice") == "# alice"
    problems = {i.source: i.reason for i in report.unattributed}
    assert set(problems) == {"alice/extra.ipynb", "alice/linked/", "bob"}
    assert all("symbolic link" in reason for reason in problems.values())


def test_a_whole_download_as_one_zip_is_opened_safely(tmp_path):
    inner = tmp_path / "carol.zip"
    make_zip(inner, {"hw/attention.ipynb": notebook_bytes("carol")})
    download = make_zip(tmp_path / "download.zip", {
        f"smithjane_12345_67890_{NAME}.ipynb": notebook_bytes("jane"),
        f"alice/{NAME}/{NAME}.ipynb": notebook_bytes("alice"),
        "carol.zip": inner.read_bytes(),
        "readme.txt": b"hello",
    })

    report = collect.collect(download, NAME, tmp_path / "into")

    assert {c.student: c.source for c in report.collected} == {
        "12345": f"download.zip!smithjane_12345_67890_{NAME}.ipynb",
        "alice": f"download.zip!alice/{NAME}/{NAME}.ipynb",
        "carol": "download.zip!carol.zip!hw/attention.ipynb"}
    assert sources(report.ignored) == {"download.zip!readme.txt"}
    assert report.unattributed == []


def test_every_file_of_source_is_accounted_for_exactly_once(tmp_path):
    source = tmp_path / "received"
    put(source / "alice" / f"{NAME}.ipynb", notebook_bytes("a"))
    put(source / "alice" / "data.csv", "1,2")
    put(source / "bob" / "a.ipynb", notebook_bytes("b1"))
    put(source / "bob" / "b.ipynb", notebook_bytes("b2"))
    put(source / "not an id" / f"{NAME}.ipynb", notebook_bytes("c"))
    put(source / ".DS_Store", b"\0")
    put(source / "orphan.ipynb", notebook_bytes("d"))
    put(source / "dave" / "nested.zip", b"PK")
    make_zip(source / "erin.zip", {f"{NAME}.ipynb": notebook_bytes("e"), "img/plot.png": b"\x89PNG"})

    report = collect.collect(source, NAME, tmp_path / "into")

    outcomes = [c.source for c in report.collected] + [i.source for i in report.unattributed + report.ignored]
    assert len(outcomes) == len(set(outcomes)), "a file may have only one outcome"
    files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    files += ["erin.zip!" + n for n in ("img/plot.png", f"{NAME}.ipynb")]
    for path in files:
        assert any(path == o or (o.endswith("/") and path.startswith(o)) or o.startswith(path + "!")
                   for o in outcomes), f"{path} vanished silently"
    assert {c.student for c in report.collected} == {"alice", "erin"}
    problems = {i.source for i in report.unattributed}
    assert problems == {"bob/a.ipynb", "bob/b.ipynb", "not an id/", "orphan.ipynb", "dave/nested.zip"}


def test_collecting_again_replaces_the_students_earlier_notebook(tmp_path):
    source, into = tmp_path / "received", tmp_path / "submissions"
    put(into / "alice" / NAME / "stale.ipynb", notebook_bytes("stale"))
    put(into / "zoe" / NAME / f"{NAME}.ipynb", notebook_bytes("zoe"))
    put(source / "alice" / f"{NAME}.ipynb", notebook_bytes("new"))

    collect.collect(source, NAME, into)

    assert sorted(p.name for p in (into / "alice" / NAME).iterdir()) == [f"{NAME}.ipynb"]
    assert collected_marker(into, "alice") == "# new"
    assert collected_marker(into, "zoe") == "# zoe", "students not in SOURCE are left alone"


@pytest.mark.parametrize("args, message", [
    (("missing", NAME, "into"), "does not exist"),
    (("received", NAME, "received/out"), "inside SOURCE"),
    (("received", "../evil", "into"), "assignment name"),
])
def test_unusable_arguments_raise(tmp_path, args, message):
    (tmp_path / "received").mkdir()
    source, name, into = args
    with pytest.raises(collect.CollectError, match=message):
        collect.collect(tmp_path / source, name, tmp_path / into)


def test_the_cli_reports_what_it_could_not_attribute_and_exits_1(tmp_path, capsys):
    source, into = tmp_path / "received", tmp_path / "submissions"
    put(source / "alice" / f"{NAME}.ipynb", notebook_bytes("a"))
    put(source / "orphan.ipynb", notebook_bytes("o"))
    put(source / "alice" / "notes.txt", "x")

    code = cli.main(["collect", str(source), "--assignment", NAME, "--into", str(into)])

    out, err = capsys.readouterr()
    assert code == 1
    assert "collected 1 submission of" in out and "1 × not a notebook: alice/notes.txt" in out
    assert "NOT COLLECTED (1)" in err and "orphan.ipynb: no student id in the name" in err
    log = (into / f"collect_{NAME}.csv").read_text()
    assert "alice/notes.txt,ignored" in log and "orphan.ipynb,not attributed" in log
    assert f"alice/{NAME}.ipynb,collected,alice" in log

    (source / "orphan.ipynb").unlink()
    assert cli.main(["collect", str(source), "--assignment", NAME, "--into", str(into)]) == 0
    assert cli.main(["collect", str(source), "--assignment", NAME, "--into", str(into),
                     "--id-pattern", "(("]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err
