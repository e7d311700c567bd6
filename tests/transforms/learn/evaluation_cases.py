"""Hand-made link matches and truth shared by the evaluation tests
(tests/transforms/learn/test_evaluate.py and tests/beam_jobs/commands/test_evaluate.py)."""

from __future__ import annotations

import pandas as pd


def _matches(rows):
    return pd.DataFrame(rows, columns=["query_id", "candidate_id", "rank", "distance"])


# Three queries, one true partner each: q1 finds it at rank 1, q2 at rank 2, q3 never.
LINK_TRUTH = {("q1", "c1"), ("q2", "c2"), ("q3", "c3")}
LINK_MATCHES = _matches([
    ("q1", "c1", 1, 0.1), ("q1", "cx", 2, 0.5),
    ("q2", "cy", 1, 0.2), ("q2", "c2", 2, 0.3),
    ("q3", "cz", 1, 0.4),
])
