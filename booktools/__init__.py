"""Code the book's chapters use to present things, not to compute them.

The reference implementations live in llmref; what here only draws or lays out a page
(interactive figures that work in the static book) lives here, next to the book.
"""
