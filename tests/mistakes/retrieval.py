"""Wrong versions of BM25, dense_top_k, reciprocal_rank_fusion and the metrics (exercise 17_retrieval).

Each mistake is the solution cell with one small change; `edited` fails loudly if the text it
changes is not in that cell exactly once.
"""
from . import Mistake, edited, solution_source

EXERCISE = "17_retrieval"

# The solution cells' own code, which every mistake edits.
RIGHT = {cell: solution_source(EXERCISE, cell)
         for cell in ("BM25", "dense_top_k", "reciprocal_rank_fusion", "metrics")}

MISTAKES = [
    # BM25 (tokenize and the index)
    Mistake("idf_without_the_one", "BM25", edited(
        RIGHT["BM25"], ("math.log(1 + (self.n_docs - n + 0.5) / (n + 0.5))",
                        "math.log((self.n_docs - n + 0.5) / (n + 0.5))")), says="negative idf"),
    Mistake("no_length_normalisation", "BM25", edited(
        RIGHT["BM25"], ("length_norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(self.avgdl, 1e-12))",
                        "length_norm = self.k1")), says="length normalisation"),
    Mistake("query_terms_deduplicated", "BM25", edited(
        RIGHT["BM25"], ("for term in query:", "for term in set(query):")), says="repeated query term"),
    Mistake("document_frequency_counts_occurrences", "BM25", edited(
        RIGHT["BM25"], ("Counter(term for d in documents for term in set(d))",
                        "Counter(term for d in documents for term in d)")), says="count each document once"),
    Mistake("tokenize_splits_on_spaces", "BM25", edited(
        RIGHT["BM25"], ("return WORD.findall(text.lower())", "return text.lower().split()")), says="punctuation"),
    # dense_top_k
    Mistake("dot_product_without_normalising", "dense_top_k", edited(
        RIGHT["dense_top_k"], ("similarity = q @ d.T", "similarity = queries_raw @ docs.T"),
        ("q = np.atleast_2d(queries)\n", "q = np.atleast_2d(queries)\n    queries_raw = q\n")),
        says="normalise every query and document"),
    Mistake("normalised_along_columns", "dense_top_k", edited(
        RIGHT["dense_top_k"], ("d = docs / np.linalg.norm(docs, axis=1, keepdims=True)",
                               "d = docs / np.linalg.norm(docs, axis=0, keepdims=True)")), says="each row"),
    Mistake("ties_to_the_larger_index", "dense_top_k", edited(
        RIGHT["dense_top_k"], ('order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]',
                               'order = np.argsort(similarity, axis=1, kind="stable")[:, ::-1][:, :k]')),
        says="ties go to the smaller index"),
    Mistake("ascending_order", "dense_top_k", edited(
        RIGHT["dense_top_k"], ('order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]',
                               'order = np.argsort(similarity, axis=1, kind="stable")[:, :k]')),
        says="decreasing similarity"),
    # reciprocal_rank_fusion
    Mistake("fusion_ranks_from_zero", "reciprocal_rank_fusion", edited(
        RIGHT["reciprocal_rank_fusion"], ("enumerate(ranking, start=1)", "enumerate(ranking)")),
        says="ranks count from 1"),
    Mistake("fusion_drops_documents_missing_from_a_ranking", "reciprocal_rank_fusion", edited(
        RIGHT["reciprocal_rank_fusion"],
        ("    order = sorted(fused,",
         "    fused = {doc: s for doc, s in fused.items() if all(doc in set(map(int, r)) for r in rankings)}\n"
         "    order = sorted(fused,")), says="missing from one ranking"),
    Mistake("fusion_ignores_k", "reciprocal_rank_fusion", edited(
        RIGHT["reciprocal_rank_fusion"], ("1.0 / (k + rank)", "1.0 / rank")), says="ignore k"),
    Mistake("fusion_ties_to_the_larger_index", "reciprocal_rank_fusion", edited(
        RIGHT["reciprocal_rank_fusion"], ("key=lambda doc: (-fused[doc], doc)", "key=lambda doc: (-fused[doc], -doc)")),
        says="ties go to the smaller index"),
    # recall_at_k and reciprocal_rank
    Mistake("recall_off_by_one", "metrics", edited(
        RIGHT["metrics"], ("set(list(ranked)[:k])", "set(list(ranked)[:k + 1])")), says="off by one"),
    Mistake("reciprocal_rank_from_zero", "metrics", edited(
        RIGHT["metrics"], ("for rank, item in enumerate(ranked, start=1):", "for rank, item in enumerate(ranked):")),
        says="ranks count from 1"),
    Mistake("recall_divided_by_k", "metrics", edited(
        RIGHT["metrics"], ("return len(found) / len(set(relevant))", "return len(found) / k")), says="precision@k"),
    Mistake("reciprocal_rank_of_the_last_relevant", "metrics", edited(
        RIGHT["metrics"], ("            return 1.0 / rank\n    return 0.0",
                           "            last = 1.0 / rank\n    return last if 'last' in locals() else 0.0")),
        says="first relevant"),
    # rank_bm25 inside the index: the exercise (and the checks' reference) done by the library.
    Mistake("bm25_by_rank_bm25", "BM25", edited(
        RIGHT["BM25"], ("        self.n_docs = len(documents)\n",
                        "        self.n_docs = len(documents)\n"
                        "        from rank_bm25 import BM25Okapi\n"
                        "        self.library = BM25Okapi(documents, k1=k1, b=b)\n")),
        says="uses rank_bm25, which does the exercise for you"),
]
