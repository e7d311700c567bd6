"""Scores a run's match output against ground truth: precision, recall, F1, recall@K, threshold sweep.

Reads the pairs a run emitted (``query_id, candidate_id, rank, distance``; rank 1 = nearest, smaller
distance = closer) and a truth file, and reports:

* link mode: precision / recall / F1 of all emitted pairs, of the rank-1 pairs only (top-1), recall@1
  and recall@K of the true partner, and a distance-threshold sweep (all pairs and rank-1 pairs);
* dedup mode: the same on unordered pairs (a pair emitted in either direction counts once, and a true
  pair is found if either record retrieved the other), without the top-1 line.

Recall counts every true pair, including those whose ids never appear in the output (a truth file for
more records than were matched, or records the run rejected): they are misses, and their number is
reported so such a mismatch is visible. Self pairs and empty slots (``candidate_id == ''``) in the
output are dropped and counted.

Pure pandas/numpy: no Beam, no TensorFlow; local files only (copy gs:// outputs down first). The CLI is
``corpus-match evaluate`` (``beam_jobs.commands.evaluate``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MODES", "load_truth", "evaluate", "format_table"]

_LOGGER = logging.getLogger(__name__)

MODES = ("link", "dedup")
_MATCH_COLUMNS = ("query_id", "candidate_id", "rank", "distance")
_ID_COLUMNS = ("id", "rec_id", "record_id")
_CLUSTER_COLUMNS = ("cluster_id", "entity_id")
_CUTOFFS = (1, 2, 5, 10, 20, 50, 100)
_DEFAULT_SWEEP_POINTS = 50
# Joins two ids into one hashable key without building Python tuples for every row.
_SEP = "\x1f"


def _unordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def load_truth(path: str, *, mode: str | None = None) -> set[tuple[str, str]]:
    """Reads true pairs from a CSV file.

    Two layouts are accepted:

    * pairs: columns ``query_id, candidate_id`` (extra columns ignored);
    * clusters: an id column (``id``, ``rec_id`` or ``record_id``) and a cluster column
      (``cluster_id`` or ``entity_id``); every two records of a cluster are a true pair.

    Ids are read as strings, exactly as written (no number parsing). Cluster pairs, and all pairs when
    ``mode == 'dedup'``, are unordered: stored as ``(min, max)``, self pairs dropped.

    Args:
        path: the CSV file.
        mode: 'dedup' to normalise pairs to unordered; None or 'link' keeps (query, candidate) order.

    Returns:
        The set of true pairs.

    Raises:
        ValueError: the file has neither layout.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = set(frame.columns)
    if {"query_id", "candidate_id"} <= cols:
        pairs = set(zip(frame["query_id"].tolist(), frame["candidate_id"].tolist(), strict=True))
        if mode == "dedup":
            pairs = {_unordered(a, b) for a, b in pairs if a != b}
        return pairs
    id_col = next((c for c in _ID_COLUMNS if c in cols), None)
    cluster_col = next((c for c in _CLUSTER_COLUMNS if c in cols), None)
    if id_col is None or cluster_col is None:
        raise ValueError(f"{path}: truth needs columns query_id,candidate_id or an id column "
                         f"({'/'.join(_ID_COLUMNS)}) with a cluster column ({'/'.join(_CLUSTER_COLUMNS)}); "
                         f"found {sorted(cols)}")
    pairs = set()
    for _, ids in frame.groupby(cluster_col, sort=False)[id_col]:
        members = sorted(set(ids.tolist()))
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1:])
    return pairs


def _prf(tp: int, emitted: int, true: int) -> dict[str, float]:
    precision = tp / emitted if emitted else 0.0
    recall = tp / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _keys(a: pd.Series, b: pd.Series) -> pd.Series:
    return a + _SEP + b


def _sweep(distances: np.ndarray, is_true: np.ndarray, n_true: int,
           thresholds: Sequence[float] | None) -> dict[str, Any]:
    """P/R/F1 of the pairs with ``distance <= t`` for each threshold t, and the best-F1 threshold."""
    order = np.argsort(distances, kind="stable")
    dist = distances[order]
    tp_cum = np.concatenate([[0], np.cumsum(is_true[order])])
    finite = dist[np.isfinite(dist)]
    if thresholds is None:
        ts = (np.unique(np.quantile(finite, np.linspace(0.0, 1.0, _DEFAULT_SWEEP_POINTS)))
              if finite.size else np.zeros(0))
    else:
        ts = np.unique(np.asarray(list(thresholds), dtype=np.float64))
    rows = []
    for t in ts.tolist():
        accepted = int(np.searchsorted(dist, t, side="right"))
        row = {"threshold": t, "pairs": accepted, **_prf(int(tp_cum[accepted]), accepted, n_true)}
        rows.append(row)
    best = max(rows, key=lambda r: (r["f1"], -r["threshold"])) if rows else None
    return {"rows": rows, "best": best}


def _validate(matches: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _MATCH_COLUMNS if c not in matches.columns]
    if missing:
        raise ValueError(f"matches lack columns {missing}; expected {list(_MATCH_COLUMNS)}")
    df = pd.DataFrame({
        "query_id": matches["query_id"].astype(str),
        "candidate_id": matches["candidate_id"].fillna("").astype(str),
        "rank": pd.to_numeric(matches["rank"]).astype(np.int64),
        "distance": pd.to_numeric(matches["distance"]).astype(np.float64),
    })
    return df


def evaluate(matches: pd.DataFrame, truth: Iterable[tuple[str, str]], *, mode: str = "link",
             thresholds: Sequence[float] | None = None, k: int | None = None) -> dict[str, Any]:
    """Scores emitted pairs against true pairs.

    Args:
        matches: columns ``query_id, candidate_id, rank, distance`` (one row per emitted pair).
        truth: true pairs; ``(query, candidate)`` in link mode, either order in dedup mode.
        mode: 'link' (queries and candidates are different corpora) or 'dedup' (one corpus).
        thresholds: distance thresholds for the sweep; default: 50 quantiles of the emitted distances.
        k: the K of recall@K; default: the largest rank in ``matches``.

    Returns:
        A JSON-serialisable dict: ``mode``, ``k``, ``counts`` (true pairs, true pairs with an id never
        seen in the output, emitted rows and pairs, queries, dropped self pairs and empty slots, true
        positives), ``pairs`` (precision/recall/F1 of all emitted pairs; unordered in dedup mode),
        ``top1`` (same for rank-1 pairs; link mode, else None), ``recall_at`` (cut-off -> recall,
        keys as strings), ``threshold_sweep`` and, in link mode, ``threshold_sweep_top1`` (each
        ``{"rows": [{threshold, pairs, precision, recall, f1}], "best": row}``). Precision of an empty
        set of pairs is reported as 0.

    Raises:
        ValueError: unknown mode, missing columns or a non-positive k.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    df = _validate(matches)
    n_rows = len(df)
    empty = df["candidate_id"] == ""
    self_pair = (df["query_id"] == df["candidate_id"]) & ~empty
    # Ids the run saw: every query (even one whose slots are all empty), and in dedup mode candidates.
    seen = set(df["query_id"])
    n_queries = len(seen)
    if mode == "dedup":
        seen |= set(df.loc[~empty, "candidate_id"])
    df = df[~empty & ~self_pair]

    if mode == "dedup":
        true_pairs = {_unordered(str(a), str(b)) for a, b in truth if a != b}
        lo = np.minimum(df["query_id"].to_numpy(), df["candidate_id"].to_numpy())
        hi = np.maximum(df["query_id"].to_numpy(), df["candidate_id"].to_numpy())
        df = df.assign(a=lo, b=hi)
        missing_ids = sum(1 for a, b in true_pairs if a not in seen or b not in seen)
    else:
        true_pairs = {(str(a), str(b)) for a, b in truth}
        df = df.assign(a=df["query_id"], b=df["candidate_id"])
        missing_ids = sum(1 for a, _ in true_pairs if a not in seen)
    # One row per (ordered or unordered) pair: its best rank and smallest distance.
    pairs = df.groupby(["a", "b"], sort=False).agg(rank=("rank", "min"), distance=("distance", "min"))
    pairs = pairs.reset_index()
    truth_keys = pd.Index([a + _SEP + b for a, b in true_pairs])
    pair_true = _keys(pairs["a"], pairs["b"]).isin(truth_keys).to_numpy()
    n_true = len(true_pairs)
    tp = int(pair_true.sum())
    kk = int(k if k is not None else (df["rank"].max() if len(df) else 1))
    # Best rank at which each found true pair was retrieved (either direction in dedup mode).
    found_rank = pairs.loc[pair_true, "rank"].to_numpy()
    cutoffs = sorted({c for c in _CUTOFFS if c <= kk} | {kk})
    recall_at = {str(c): (int((found_rank <= c).sum()) / n_true if n_true else 0.0) for c in cutoffs}

    report: dict[str, Any] = {
        "mode": mode,
        "k": kk,
        "counts": {
            "true_pairs": n_true,
            "true_pairs_missing_ids": missing_ids,
            "emitted_rows": n_rows,
            "emitted_pairs": len(pairs),
            "queries": n_queries,
            "self_pairs_dropped": int(self_pair.sum()),
            "empty_slots_dropped": int(empty.sum()),
            "true_positives": tp,
        },
        "pairs": _prf(tp, len(pairs), n_true),
        "top1": None,
        "recall_at": recall_at,
        "threshold_sweep": _sweep(pairs["distance"].to_numpy(), pair_true, n_true, thresholds),
    }
    if mode == "link":
        top = pairs["rank"].to_numpy() == 1
        report["top1"] = {**_prf(int(pair_true[top].sum()), int(top.sum()), n_true),
                          "pairs": int(top.sum())}
        report["threshold_sweep_top1"] = _sweep(pairs["distance"].to_numpy()[top], pair_true[top],
                                                n_true, thresholds)
    if missing_ids:
        _LOGGER.warning("%d of %d true pairs have an id that never appears in the match output; "
                        "they count as misses", missing_ids, n_true)
    return report


def _fmt(x: float | None) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.4f}"


def format_table(report: dict[str, Any]) -> str:
    """Renders a report from :func:`evaluate` as a compact text table."""
    c = report["counts"]
    lines = [
        f"mode {report['mode']}  K={report['k']}  queries {c['queries']}  emitted pairs "
        f"{c['emitted_pairs']}  true pairs {c['true_pairs']} ({c['true_pairs_missing_ids']} with an id "
        f"not in the output)  true positives {c['true_positives']}",
    ]
    dropped = [f"{c[key]} {label}" for key, label in (("self_pairs_dropped", "self pairs"),
                                                      ("empty_slots_dropped", "empty slots")) if c[key]]
    if dropped:
        lines.append("dropped: " + ", ".join(dropped))
    lines.append(f"{'':28s}{'precision':>10s}{'recall':>10s}{'F1':>10s}")

    def row(label: str, m: dict[str, float] | None) -> str:
        m = m or {}
        return (f"{label:28s}{_fmt(m.get('precision')):>10s}{_fmt(m.get('recall')):>10s}"
                f"{_fmt(m.get('f1')):>10s}")

    lines.append(row("all pairs" + (" (unordered)" if report["mode"] == "dedup" else ""), report["pairs"]))
    if report.get("top1") is not None:
        lines.append(row("top-1 pairs", report["top1"]))
    for key, label in (("threshold_sweep", "all pairs"), ("threshold_sweep_top1", "top-1 pairs")):
        best = (report.get(key) or {}).get("best")
        if best:
            lines.append(row(f"{label} @ distance <= {best['threshold']:.4g}", best))
    lines.append("recall@" + "  recall@".join(f"{cut} {_fmt(v).strip()}"
                                               for cut, v in report["recall_at"].items()))
    return "\n".join(lines)
