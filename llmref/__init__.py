"""Reference implementations of the pieces of a large language model.

One implementation per concept, imported by the book, by the checks behind the graded
notebooks and by the export chapter. Modules marked GENERATED are extracted from the
solution notebooks in solutions/ by `course library`; edit those notebooks, not the copies.
"""
