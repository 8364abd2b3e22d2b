"""Instructor side of the course: the checks graded test cells call, and the grading CLI."""
