import math

import numpy as np
import pytest

from mrl_core.metrics import Judgements, fidelity_at_k, mrr_at_k, ndcg_at_k, recall_at_k

# Three queries over a corpus of 10 rows, results best first.
RETRIEVED = np.array([[5, 2, 9], [1, 3, 4], [0, 1, 2]])
# q0: rows 2 (grade 2), 9 and 7 (grade 1; 7 is never retrieved). q1: row 4. q2: only a grade-0
# judgement, so it has nothing relevant and every labelled metric skips it.
JUDGED = [{2: 2, 9: 1, 7: 1}, {4: 1}, {0: 0}]


def test_ndcg_uses_linear_gains_log2_discount_and_ideal_from_judgements():
    # q0: DCG = 0/log2(2) + 2/log2(3) + 1/log2(4); ideal from grades [2, 1, 1] = 2/1 + 1/log2(3) + 1/log2(4)
    q0 = (2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3) + 1 / 2)
    # q1: DCG = 1/log2(4) = 0.5; ideal = 1/log2(2) = 1
    q1 = 0.5
    assert ndcg_at_k(RETRIEVED, JUDGED, 3) == pytest.approx((q0 + q1) / 2)
    # at k=1 neither top document is relevant
    assert ndcg_at_k(RETRIEVED, JUDGED, 1) == 0.0


def test_ndcg_ideal_is_cut_at_k():
    # q0 at k=2: DCG = 2/log2(3); ideal uses the best two grades [2, 1] = 2 + 1/log2(3)
    # q1 at k=2: nothing relevant in [1, 3]
    q0 = (2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(RETRIEVED, JUDGED, 2) == pytest.approx(q0 / 2)


def test_recall_denominator_is_all_relevant_documents():
    # q0 finds rows 2 and 9 of its relevant {2, 9, 7}: 2/3; q1 finds row 4 of {4}: 1/1
    assert recall_at_k(RETRIEVED, JUDGED, 3) == pytest.approx((2 / 3 + 1) / 2)
    # q0's top 2 holds row 2 only: 1/3; q1's top 2 holds nothing
    assert recall_at_k(RETRIEVED, JUDGED, 2) == pytest.approx((1 / 3 + 0) / 2)


def test_mrr_is_reciprocal_rank_of_first_relevant():
    # q0: first relevant at rank 2 -> 1/2; q1: at rank 3 -> 1/3
    assert mrr_at_k(RETRIEVED, JUDGED, 3) == pytest.approx((1 / 2 + 1 / 3) / 2)
    # at k=2 q1 has none -> 0
    assert mrr_at_k(RETRIEVED, JUDGED, 2) == pytest.approx((1 / 2 + 0) / 2)


def test_empty_slots_score_nothing_and_perfect_ranking_scores_one():
    retrieved = np.array([[3, -1, -1]])
    assert ndcg_at_k(retrieved, [{3: 1}], 3) == 1.0
    assert recall_at_k(retrieved, [{3: 1}], 3) == 1.0
    assert mrr_at_k(retrieved, [{3: 1}], 3) == 1.0
    # a second relevant document the search could not return halves recall and lowers nDCG:
    # DCG = 1, ideal = 1 + 1/log2(3)
    assert recall_at_k(retrieved, [{3: 1, 4: 1}], 3) == 0.5
    assert ndcg_at_k(retrieved, [{3: 1, 4: 1}], 3) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a relevant"):
        ndcg_at_k(RETRIEVED, [{}, {}, {1: 0}], 3)


def test_judgements_must_cover_the_same_queries():
    with pytest.raises(ValueError, match="cover 3 queries; judgements cover 1"):
        recall_at_k(RETRIEVED, [{1: 1}], 3)


def test_judgements_lookup_and_mask():
    judgements = Judgements(JUDGED)
    np.testing.assert_array_equal(judgements.grades_of(RETRIEVED), [[0, 2, 1], [0, 0, 1], [0, 0, 0]])
    assert judgements.judged.tolist() == [True, True, False]
    assert judgements.relevant_counts.tolist() == [3, 1, 0]


def test_fidelity_counts_shared_documents_over_k():
    reference = np.array([[1, 2, 3], [4, 5, 6]])
    retrieved = np.array([[3, 2, 9], [7, 8, 4]])
    # q0 shares {2, 3}: 2/3; q1 shares {4}: 1/3
    assert fidelity_at_k(retrieved, reference, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    # order inside the top k does not matter
    assert fidelity_at_k(reference[:, ::-1], reference, 3) == 1.0
    # at k=1 only q0's first ids are compared: 3 vs 1, and 7 vs 4
    assert fidelity_at_k(retrieved, reference, 1) == 0.0


def test_fidelity_with_fewer_documents_than_k():
    reference = np.array([[0, 1, -1]])
    assert fidelity_at_k(np.array([[1, 0, -1]]), reference, 3) == 1.0
    assert fidelity_at_k(np.array([[1, 2, -1]]), reference, 3) == 0.5
