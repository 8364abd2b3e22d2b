"""nbgrader settings shared by every command of the course CLI.

Folders and the gradebook location are not set here: the CLI passes them on the command
line, because releasing (in the repository) and grading (in a class folder) use different
roots. Load this file with `--NbGrader.config_file=coursetools/nbgrader_config.py` when you
call nbgrader directly.
"""
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

# What a learner sees in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A test cell that runs longer than this is stopped and scores nothing; the course's
# checks take well under a second, so a minute means an infinite loop.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
# A cell that prints a lot (100 MB) is still streaming its output when its reply arrives, and
# nbgrader fails the whole notebook if that output takes longer to drain than this: nbclient's
# 4 s default was too short on a loaded 2-core machine. `course grade --timeout` still bounds
# the whole submission.
c.Execute.iopub_timeout = 60

# Hidden tests must not reach learners through feedback.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "nbgrader.preprocessors.ClearHiddenTests",
]
