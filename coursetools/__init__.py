"""The instructor's side of the course: the `course` command (release, collect, grade,
feedback, export, selfcheck), the grading workers and their sandbox, the leak scan and the
nbgrader settings. A grading kernel cannot import it: the sandbox does not mount it."""
