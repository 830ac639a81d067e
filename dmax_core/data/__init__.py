"""Datasets for dmax: the synthetic running-total task (GSM8K stand-in) and its jsonl helpers.

Only data generation and storage live here; tokenization is in ``dmax_core.tokenizer`` and scoring in
``dmax_core.evaluation.scoring``.
"""

from dmax_core.data.synthetic import (
    DEFAULT_ADD_VERBS,
    DEFAULT_NAMES,
    DEFAULT_OBJECTS,
    DEFAULT_SUB_VERBS,
    Problem,
    count_questions,
    generate_problems,
    load_problems,
    make_splits,
    save_problems,
    vocabulary,
)

__all__ = [
    "DEFAULT_ADD_VERBS",
    "DEFAULT_NAMES",
    "DEFAULT_OBJECTS",
    "DEFAULT_SUB_VERBS",
    "Problem",
    "count_questions",
    "generate_problems",
    "load_problems",
    "make_splits",
    "save_problems",
    "vocabulary",
]
