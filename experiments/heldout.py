"""Test-query subsets shared by the training experiments."""

from mrl_core.evaluate import relevance_rows


def query_subsets(dataset) -> tuple[list[dict[int, int]], dict[str, list[int]]]:
    """Per-query relevance, and the query rows of two subsets: all test queries, and those whose relevant
    documents are never a training positive (supervised training can learn to favour the positives)."""
    relevance = relevance_rows(dataset)
    training_positives = {positive for _, positive in dataset.train_pairs}
    unseen = [
        row for row in range(len(relevance))
        if not any(
            dataset.corpus_texts[doc_row] in training_positives
            for doc_row, grade in relevance[row].items()
            if grade > 0 and doc_row < dataset.corpus_size
        )
    ]
    return relevance, {"all test queries": list(range(len(relevance))), "queries with unseen relevant docs": unseen}
