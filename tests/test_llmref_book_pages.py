"""The book as a retrieval corpus: pages without code cells, deterministic passages with their page
and heading, the question set, and the cached embeddings refused when they are stale."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from llmref import book_pages
from llmref.book_pages import Chunk, chunk_pages, fingerprint, load_chunks, load_embeddings, load_questions, read_page


@pytest.fixture(scope="module")
def chunks():
    return load_chunks()


def test_pages_lose_front_matter_and_code_cells_but_keep_prose(tmp_path):
    page = tmp_path / "part" / "01-page.md"
    page.parent.mkdir()
    page.write_text("---\njupytext: x\n---\n\n# Title\n\nSee {doc}`other` now.\n\n(label)=\n## Section\n\n"
                    "```{code-cell} ipython3\n# not a heading\nx = 1\n```\n\nProse after.\n\n"
                    "```python\n# kept: an example in the text\n```\n")
    read = read_page(page, tmp_path)
    assert read.path == "part/01-page" and read.title == "Title"
    assert "x = 1" not in read.text and "not a heading" not in read.text and "jupytext" not in read.text
    assert "See other now." in read.text and "(label)=" not in read.text and "kept: an example" in read.text
    passages = chunk_pages([read])
    assert [(c.heading, c.text) for c in passages] == [
        ("Title", "See other now."),
        ("Section", "Prose after.\n\n```python\n# kept: an example in the text\n```")]


def test_chunking_is_deterministic_and_within_bounds(chunks):
    again = load_chunks()
    assert again == chunks and fingerprint(again) == fingerprint(chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(0 < len(c.text) <= book_pages.MAX_CHARS for c in chunks)
    assert {c.page.split("/")[0] for c in chunks} == set(book_pages.PARTS)
    assert not any("```{code-cell}" in c.text for c in chunks)
    assert chunks[0].indexed_text.startswith(f"{chunks[0].title} · {chunks[0].heading}\n\n")


def test_a_long_paragraph_is_cut_at_sentence_ends():
    page = book_pages.Page("p/x", "T", "# T\n\n" + " ".join(f"Sentence number {i} is here." for i in range(60)))
    passages = chunk_pages([page], max_chars=200)
    assert len(passages) > 1 and all(len(c.text) <= 200 for c in passages)
    assert all(c.text.endswith(".") for c in passages)
    with pytest.raises(ValueError, match="too small"):
        chunk_pages([page], max_chars=10)


def test_the_fingerprint_changes_with_any_passage(chunks):
    changed = list(chunks)
    changed[5] = dataclasses.replace(changed[5], text=changed[5].text + " ")
    assert fingerprint(changed) != fingerprint(chunks)


def test_the_question_set(chunks):
    questions = load_questions(chunks=chunks)
    assert len(questions) >= 40
    assert len({q["question"] for q in questions}) == len(questions)
    sections = {c.section for c in chunks}
    assert all(f"{q['page']}#{q['heading']}" in sections for q in questions)
    assert len({q["page"] for q in questions}) >= 15          # spread over the book, not one page


def test_a_question_whose_section_is_gone_is_refused(tmp_path, chunks):
    data = json.loads(book_pages.QUESTIONS.read_text())
    data["questions"][0]["heading"] = "A heading that no page has"
    path = tmp_path / "q.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no longer have"):
        load_questions(path, chunks=chunks)


def test_the_committed_embeddings_belong_to_these_passages_and_questions(chunks):
    # Fails when a page of Parts I-III or the question set changed after the cache was
    # computed: rerun `.venv/bin/python benchmarks/retrieval.py` and commit its results.
    cached = load_embeddings(chunks, load_questions(chunks=chunks))
    assert cached.chunks.shape == (len(chunks), 384) and cached.chunks.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cached.chunks, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cached.questions, axis=1), 1, atol=1e-5)


def test_stale_embeddings_are_refused(tmp_path, chunks):
    questions = load_questions(chunks=chunks)
    path = tmp_path / "e.npz"
    book_pages.save_embeddings(path, np.zeros((len(chunks), 4)), np.zeros((len(questions), 4)), chunks, questions)
    changed = list(chunks)
    changed[0] = dataclasses.replace(changed[0], text="edited")
    with pytest.raises(ValueError, match="benchmarks/retrieval.py"):
        load_embeddings(changed, questions, path)
    with pytest.raises(ValueError, match="questions"):
        load_embeddings(chunks, questions[1:], path)
    with pytest.raises(FileNotFoundError, match="benchmarks/retrieval.py"):
        load_embeddings(chunks, questions, tmp_path / "missing.npz")


def test_text_for_the_character_model():
    vocabulary = list("abcdefgh ?")
    assert book_pages.for_char_model("café → bad", vocabulary) == "cafe bad"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        book_pages.for_char_model("x", vocabulary, unknown="#")


def test_chunk_section_names_its_page_and_heading():
    assert Chunk(0, "a/b", "T", "H", "x").section == "a/b#H"
