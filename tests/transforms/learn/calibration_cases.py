"""Hand-made link pairs and a run writer shared by the calibration tests
(tests/transforms/learn/test_calibrate.py and tests/beam_jobs/commands/test_calibrate.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.common.schema import PairBatch
from transforms.io.write_matches import match_shard_path, write_match_shard


def _matches(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"query_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
                         "rank": [1] * len(rows), "distance": [r[2] for r in rows]})


# Link pairs by distance: T = true, F = false. Precision of "distance <= t" walks 1, 1, 2/3, 3/4, 3/5.
LINK_ROWS = [("q1", "c1", 0.1), ("q2", "c2", 0.2), ("q3", "cx", 0.3), ("q4", "c4", 0.4),
             ("q5", "cy", 0.5), ("u1", "cz", 0.15)]  # u1 is not labelled


def _write_run(out_dir: str, frame: pd.DataFrame) -> None:
    write_match_shard(match_shard_path(out_dir, "parquet", 0, 1), PairBatch(
        query_ids=frame["query_id"].to_numpy(object), candidate_ids=frame["candidate_id"].to_numpy(object),
        ranks=frame["rank"].to_numpy(np.int64), distances=frame["distance"].to_numpy(np.float64)), "parquet")
