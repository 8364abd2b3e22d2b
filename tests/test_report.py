"""The summary at the end of `course grade`: distribution, and every submission that needs attention."""
from pathlib import Path

from coursetools import cli, grading, report
from coursetools.grading import Result

ROOT = Path(__file__).resolve().parents[1]
CELLS = {"a": 2.0, "b": 2.0, "c": 2.0}


def ok(student: str, **cells: float) -> Result:
    earned = {cell: cells.get(cell, points) for cell, points in CELLS.items()}
    return Result(student, sum(earned.values()), 6.0, "", earned)


def test_statistics_and_a_histogram_row_per_point():
    results = [ok("s1"), ok("s2"), ok("s3", a=0), ok("s4", a=0, b=0), ok("s5", a=0, b=0, c=0)]
    summary = report.summarize(results)
    assert (summary.count, summary.max_score) == (5, 6.0)
    assert (summary.mean, summary.median, summary.minimum, summary.maximum) == (3.6, 4.0, 0.0, 6.0)
    assert summary.bins == [("0", 1), ("1", 0), ("2", 1), ("3", 0), ("4", 1), ("5", 0), ("6", 2)]


def test_fractional_scores_fall_in_ten_ranges():
    results = [Result(f"s{i}", score, 10.5, "", {"a": score}) for i, score in
               enumerate([0.0, 0.3, 1.05, 5.25, 10.5, 10.5])]
    bins = dict(report.summarize(results).bins)
    assert len(bins) == 10
    assert bins["[0, 1.05)"] == 2 and bins["[1.05, 2.1)"] == 1 and bins["[5.25, 6.3)"] == 1
    assert bins["[9.45, 10.5]"] == 2, "full marks belong in the last range"
    assert sum(bins.values()) == 6


def test_every_submission_that_needs_attention_says_why():
    results = [
        ok("fine"),
        Result("loop", 0.0, 6.0, "your notebook ran longer than 60 s in cell 3 and was stopped"),
        ok("blank", a=0, b=0, c=0),
        Result("deleted", 4.0, 6.0, "", {"a": 2.0, "b": 2.0}),
        Result("forged", 60.0, 6.0, "", dict(CELLS)),
    ]
    attention = {a.student: a.why for a in report.summarize(results).attention}
    assert set(attention) == {"loop", "blank", "deleted", "forged"}
    assert attention["loop"] == results[1].reason
    assert "scored 0 without an error" in attention["blank"]
    assert "graded cells missing: c" in attention["deleted"]
    assert "outside 0..6" in attention["forged"]


def test_expected_cells_can_be_given():
    results = [Result("only", 2.0, 6.0, "", {"a": 2.0})]
    assert report.summarize(results).attention == []
    [flagged] = report.summarize(results, expected_cells=CELLS).attention
    assert "graded cells missing: b, c" in flagged.why


def test_the_table_reads_top_down_from_full_marks():
    text = report.summary_table([ok("s1"), ok("s2"), ok("s3", a=0),
                                 Result("late", 0.0, 6.0, "no notebook submitted")], title="02_attention")
    lines = text.splitlines()
    assert lines[0] == "02_attention: 4 submissions, out of 6 points"
    assert lines[1] == "  mean 4, median 5, min 0, max 6"
    bars = [line for line in lines if " | " in line]
    assert [b.split("|")[0].strip() for b in bars] == ["6", "5", "4", "3", "2", "1", "0"]
    assert bars[0].split("|")[1].split() == ["#" * report.BAR_WIDTH, "2"]
    assert bars[2].split("|")[1].split() == ["#" * (report.BAR_WIDTH // 2), "1"]
    assert bars[1].split("|")[1].split() == ["0"]
    assert lines[-2:] == ["needs attention (1 of 4):", "  late  0/6  no notebook submitted"]


def test_an_empty_class_and_a_clean_class():
    assert report.summary_table([], title="x") == "x: no submissions found"
    assert report.summary_table([ok("s1")]).splitlines()[-1] == "needs attention: none"


def test_course_grade_prints_the_summary(monkeypatch, tmp_path, capsys):
    results = [ok("alice"), Result("bob", 0.0, 6.0, "your notebook stopped the Python process in cell 2")]
    monkeypatch.setattr(grading, "grade_class", lambda *args, **kwargs: results)

    code = cli.main(["--root", str(ROOT), "grade", "02_attention", str(tmp_path), "--class-dir",
                     str(tmp_path / "class"), "--no-sandbox"])

    out = capsys.readouterr().out
    assert code == 0
    assert "02_attention: 2 submissions, out of 6 points" in out
    assert "needs attention (1 of 2):" in out
    assert "bob  0/6  your notebook stopped the Python process in cell 2" in out
    assert (tmp_path / "class" / "grades_02_attention.csv").is_file()
