"""Funnel (adaptive) retrieval: shortlist with a short prefix, rerank with wider prefixes, one stored vector.

A funnel is an ordered list of stages. Stage 1 searches the whole corpus through a FAISS index on the
renormalised prefix of its width: ``flat`` (an exhaustive inner-product scan over fp32 prefixes, what
``IndexFlatIP`` runs, or over fp16 or int8 codes of them), ``binary`` (``IndexBinaryFlat`` over the
prefix's sign bits, Hamming distance), ``hnsw`` (``IndexHNSWFlat``, inner product) or ``ivf``
(``IndexIVFFlat``, inner product over the lists nearest the query). Every later stage rescores only
the previous shortlist with a wider renormalised prefix of the same stored full-width vector (a numpy
gather and matmul); the last stage's shortlist is the answer. Prefix norms come from cumulative sums
of squares, so a later stage never needs a renormalised copy of the corpus.

``FunnelTuner`` measures which funnel is fastest at a target recall@k against exact full-width search,
and always measures the standard single indexes a user would pick instead (HNSW and IVF over the
full-width vectors at the efSearch / lists probed that meet the target), so that the pick is reported
against both, with the RAM and disk each needs per vector.
"""

from mrl_core.funnel.records import (
    HELDOUT_QUERY_COUNT,
    TUNING_QUERY_COUNT,
    funnel_rows,
    load_tuned_funnel,
    save_tuning,
    split_queries,
    tune_funnel,
    tuned_comparison,
    tuned_funnels_by_model,
)
from mrl_core.funnel.searcher import FunnelSearcher
from mrl_core.funnel.stages import Funnel, FunnelResult, FunnelStage
from mrl_core.funnel.timing import live_query, time_funnel, time_round_robin
from mrl_core.funnel.tuner import (
    MAX_BUILD_ROWS,
    MIN_SPEEDUP_OVER_EXACT,
    STANDARD_INDEX_TYPES,
    FunnelTuner,
    pick_fastest,
    shortlist_grid,
)

__all__ = [
    "HELDOUT_QUERY_COUNT",
    "MAX_BUILD_ROWS",
    "MIN_SPEEDUP_OVER_EXACT",
    "STANDARD_INDEX_TYPES",
    "TUNING_QUERY_COUNT",
    "Funnel",
    "FunnelResult",
    "FunnelSearcher",
    "FunnelStage",
    "FunnelTuner",
    "funnel_rows",
    "live_query",
    "load_tuned_funnel",
    "pick_fastest",
    "save_tuning",
    "shortlist_grid",
    "split_queries",
    "time_funnel",
    "time_round_robin",
    "tune_funnel",
    "tuned_comparison",
    "tuned_funnels_by_model",
]
