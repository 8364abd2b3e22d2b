"""The course's own pages as a corpus for retrieval (Part IV, exercise 17_retrieval).

Hand-written, not generated: reading the book and cutting it into passages is given to the
learner, who writes the search on top of it (llmref/retrieval.py).

- :func:`load_pages` reads the MyST markdown of Parts I to III (book/01-theory,
  book/02-frameworks, book/03-models), drops the front matter and the code cells (```{code-cell}
  blocks: code is not prose, and it would crowd the prose out of the index), keeps the other
  fenced blocks (short ```python examples inside the text), and turns MyST roles such as
  {doc}`../01-theory/04-backprop` into their plain text;
- :func:`chunk_pages` cuts each page at its headings (#, ## and ###) into sections, and each
  section into passages of whole paragraphs of at most ``max_chars`` characters (a longer
  paragraph is cut at sentence ends, then at spaces). Each passage keeps its page, the page's
  title and its section's heading. Nothing is random and nothing depends on the file system's
  order: the same pages always give the same passages, and :func:`fingerprint` names them;
- :func:`load_questions` reads the course's question set, benchmarks/data/retrieval_questions.json
  (questions a learner might ask, each with the page and the heading where the answer lies);
- :func:`load_embeddings` reads the cached MiniLM embeddings of the passages and questions,
  benchmarks/results/retrieval_embeddings.npz, and refuses them when the passages or the
  questions have changed since they were computed (``benchmarks/retrieval.py`` recomputes them).
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PARTS = ("01-theory", "02-frameworks", "03-models")   # Parts I to III: what the course has taught so far
QUESTIONS = ROOT / "benchmarks" / "data" / "retrieval_questions.json"
EMBEDDINGS = ROOT / "benchmarks" / "results" / "retrieval_embeddings.npz"
MAX_CHARS = 700          # a passage: a few paragraphs, ~150 MiniLM tokens, well inside its 256
RECOMPUTE = "`.venv/bin/python benchmarks/retrieval.py`"


@dataclass(frozen=True)
class Page:
    path: str        # relative to book/, without .md: "03-models/04-pretraining"
    title: str       # the page's first-level heading
    text: str        # markdown without front matter and code cells


@dataclass(frozen=True)
class Chunk:
    index: int       # position in the list chunk_pages returns
    page: str        # Page.path
    title: str       # the page's title
    heading: str     # the heading of the section the passage is in (the title before the first ##)
    text: str        # the passage: whole paragraphs of the section

    @property
    def section(self) -> str:
        """The section's name, unique across the book: "page#heading"."""
        return f"{self.page}#{self.heading}"

    @property
    def indexed_text(self) -> str:
        """What the search engines see: title and heading, then the passage, as a reader sees it."""
        return f"{self.title} · {self.heading}\n\n{self.text}"


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
_ROLE = re.compile(r"\{[a-z]+\}`([^`]*)`")
_HEADING = re.compile(r"^(#{1,3}) +(.+?) *#*$")


def _clean_line(line: str) -> str:
    return _ROLE.sub(r"\1", line)


def read_page(file: Path, book: Path = BOOK) -> Page:
    """One page: front matter and ```{code-cell} blocks removed, MyST roles as plain text."""
    raw = _FRONT_MATTER.sub("", file.read_text(encoding="utf-8"))
    kept: list[str] = []
    fence: str | None = None          # the fence of the block we are in, if any
    dropping = False
    for line in raw.split("\n"):
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[:len(stripped) - len(stripped.lstrip("`"))]
            dropping = stripped[len(fence):].startswith("{code-cell}")
            if not dropping:
                kept.append(line)
            continue
        if fence is not None and stripped == fence:
            fence = None
            if not dropping:
                kept.append(line)
            dropping = False
            continue
        if dropping:
            continue
        if fence is None and re.fullmatch(r"\(.+\)=", stripped):    # MyST targets: (label)=
            continue
        kept.append(line if fence is not None else _clean_line(line))
    text = "\n".join(kept).strip() + "\n"
    title = next((m.group(2) for m in map(_HEADING.match, text.split("\n")) if m and m.group(1) == "#"),
                 file.stem)
    return Page(file.relative_to(book).with_suffix("").as_posix(), title, text)


def load_pages(book: Path = BOOK, parts: Sequence[str] = PARTS) -> list[Page]:
    """The pages of the given parts, in the book's order (part, then file name)."""
    files = [f for part in parts for f in sorted((book / part).glob("*.md"))]
    if not files:
        raise FileNotFoundError(f"no pages under {book} for parts {list(parts)}: is this the course "
                                "repository (the book/ folder ships with it, not with the package)?")
    return [read_page(f, book) for f in files]


def _sections(page: Page) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) in page order; a fenced block is one paragraph, blank lines and all."""
    sections: list[tuple[str, list[str]]] = [(page.title, [])]
    paragraph: list[str] = []
    in_fence = False

    def flush():
        if paragraph:
            sections[-1][1].append("\n".join(paragraph).strip())
            paragraph.clear()

    for line in page.text.split("\n"):
        if line.strip().startswith("```"):
            in_fence = not in_fence
            paragraph.append(line)
            continue
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            flush()
            if heading.group(1) != "#":
                sections.append((heading.group(2), []))
        elif not in_fence and not line.strip():
            flush()
        else:
            paragraph.append(line)
    flush()
    return [(h, [p for p in ps if p]) for h, ps in sections if any(ps)]


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than max_chars, cut at sentence ends, else at spaces, else anywhere."""
    pieces: list[str] = []
    rest = paragraph
    while len(rest) > max_chars:
        window = rest[:max_chars + 1]
        cut = max(window.rfind(". "), window.rfind(".\n"), window.rfind("? "), window.rfind(": "))
        if cut < max_chars // 3:
            cut = max(window.rfind(" "), window.rfind("\n"))
        if cut < max_chars // 3:
            cut = max_chars - 1
        pieces.append(rest[:cut + 1].strip())
        rest = rest[cut + 1:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def chunk_pages(pages: Sequence[Page], max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Passages of whole paragraphs, at most max_chars characters each, never across a heading.

    Paragraphs are packed greedily in order: a paragraph joins the current passage if the
    passage stays within max_chars, otherwise it starts the next one.
    """
    if max_chars < 50:
        raise ValueError(f"max_chars={max_chars} is too small for a passage of prose: use 50 or more")
    chunks: list[Chunk] = []
    for page in pages:
        for heading, paragraphs in _sections(page):
            current = ""
            for paragraph in paragraphs:
                for piece in _split_long(paragraph, max_chars):
                    if current and len(current) + 2 + len(piece) > max_chars:
                        chunks.append(Chunk(len(chunks), page.path, page.title, heading, current))
                        current = ""
                    current = f"{current}\n\n{piece}" if current else piece
            if current:
                chunks.append(Chunk(len(chunks), page.path, page.title, heading, current))
    return chunks


def load_chunks(max_chars: int = MAX_CHARS) -> list[Chunk]:
    """The passages of Parts I to III, as the exercise, the benchmark and the chapter use them."""
    return chunk_pages(load_pages(), max_chars)


def fingerprint(items: Sequence) -> str:
    """A short hash naming a list of passages (or of questions): page, heading and text of each."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Chunk):
            fields = (item.page, item.heading, item.text)
        else:
            fields = (item["question"], item["page"], item["heading"])
        h.update(json.dumps(fields, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:16]


def load_questions(path: Path = QUESTIONS, chunks: Sequence[Chunk] | None = None) -> list[dict]:
    """The course's question set: dicts with "question", "page" and "heading".

    With chunks given, every question's section must be among them: a question whose page or
    heading was renamed would otherwise count as a retrieval failure for ever.
    """
    questions = json.loads(Path(path).read_text(encoding="utf-8"))["questions"]
    if chunks is not None:
        sections = {c.section for c in chunks}
        lost = [q["question"] for q in questions if f"{q['page']}#{q['heading']}" not in sections]
        if lost:
            raise ValueError(f"{len(lost)} question(s) point at a section the pages no longer have, e.g. "
                             f"{lost[0]!r}: update page/heading in {path}")
    return questions


@dataclass(frozen=True)
class Embeddings:
    chunks: np.ndarray       # (n_chunks, 384) float32, rows of length 1
    questions: np.ndarray    # (n_questions, 384) float32, rows of length 1
    chunks_fingerprint: str
    questions_fingerprint: str


def save_embeddings(path: Path, chunk_vectors: np.ndarray, question_vectors: np.ndarray,
                    chunks: Sequence[Chunk], questions: Sequence[dict]) -> None:
    np.savez(path, chunks=np.asarray(chunk_vectors, np.float32),
             questions=np.asarray(question_vectors, np.float32),
             chunks_fingerprint=fingerprint(chunks), questions_fingerprint=fingerprint(questions))


def load_embeddings(chunks: Sequence[Chunk], questions: Sequence[dict],
                    path: Path = EMBEDDINGS) -> Embeddings:
    """The cached MiniLM embeddings of these passages and questions, refused if they are stale."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: compute it with {RECOMPUTE}")
    with np.load(path) as saved:
        cached = Embeddings(saved["chunks"], saved["questions"], str(saved["chunks_fingerprint"]),
                            str(saved["questions_fingerprint"]))
    for what, items, stored in (("passages", chunks, cached.chunks_fingerprint),
                                ("questions", questions, cached.questions_fingerprint)):
        if fingerprint(items) != stored:
            raise ValueError(f"{path} holds the embeddings of other {what} (fingerprint {stored}, "
                             f"these are {fingerprint(items)}): the book's pages or the question set "
                             f"changed since they were computed; recompute them with {RECOMPUTE}")
    if cached.chunks.shape[0] != len(chunks) or cached.questions.shape[0] != len(questions):
        raise ValueError(f"{path} has {cached.chunks.shape[0]} passage and {cached.questions.shape[0]} "
                         f"question embeddings for {len(chunks)} and {len(questions)}: recompute with {RECOMPUTE}")
    return cached


def for_char_model(text: str, vocabulary: Sequence[str], unknown: str = " ") -> str:
    """text in the characters a character-level model knows: accents and ligatures decomposed
    (NFKD) and dropped when the base letter is known, any other unknown character replaced by
    `unknown` (which must itself be in the vocabulary), runs of spaces squeezed."""
    known = set(vocabulary)
    if unknown not in known:
        raise ValueError(f"the replacement {unknown!r} is not in the vocabulary: pick one that is")
    out = []
    for ch in text:
        if ch in known:
            out.append(ch)
            continue
        decomposed = [c for c in unicodedata.normalize("NFKD", ch) if c in known]
        out.append("".join(decomposed) if decomposed else unknown)
    return re.sub(r"  +", " ", "".join(out))
