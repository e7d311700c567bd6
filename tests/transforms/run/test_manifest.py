"""Tests for transforms.run.manifest: what --min_recall checks, and what the manifest records of the audit."""

from __future__ import annotations

import json

import pytest

from transforms.run.manifest import RecallBelowMinimumError, _WriteManifestFn

AUDIT = {"sample_size": 100, "recall_at_k": 0.62, "recall_relevant": 0.97, "relevance_cutoff": 0.43,
         "target": "rank-1 and neighbours within distance 0.43 (derived ...)", "per_shard": {0: 0.62},
         "per_shard_relevant": {0: 0.97}, "true_pairs": 1000, "found_pairs": 620, "relevant_pairs": 120,
         "found_relevant_pairs": 116}


def _write(tmp_path, audit, min_recall):
    fn = _WriteManifestFn(str(tmp_path), {"mode": "link"}, 0.01, min_recall)
    return list(fn.process(None, counts={"queries_read": 10, "candidates_read": 10},
                           dead_letters={}, shards=[], audit=audit))


def test_min_recall_applies_to_the_relevant_recall(tmp_path):
    # recall@K of every slot is low (the far ranks are background), the relevant recall passes.
    (manifest,) = _write(tmp_path, AUDIT, 0.95)
    assert manifest["exit_state"] == "pipeline_completed"
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["audit"]["recall_at_k"] == 0.62 and written["audit"]["recall_relevant"] == 0.97
    assert written["audit"]["target"].startswith("rank-1 and neighbours within distance 0.43")

    with pytest.raises(RecallBelowMinimumError, match="0.9700 of the relevant neighbours"):
        _write(tmp_path, AUDIT, 0.98)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["exit_state"] == "failed" and "--min_recall 0.98" in written["error"]


def test_min_recall_reads_recall_at_k_of_an_audit_without_relevance(tmp_path):
    old = {k: AUDIT[k] for k in ("sample_size", "recall_at_k", "per_shard", "true_pairs", "found_pairs")}
    with pytest.raises(RecallBelowMinimumError, match="0.6200"):
        _write(tmp_path, old, 0.9)
    assert _write(tmp_path, old, 0.5)[0]["exit_state"] == "pipeline_completed"
