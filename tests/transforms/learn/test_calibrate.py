"""corpus-match calibrate: threshold choice on hand-made pairs, and on a person corpus split by entity.

The person-corpus test embeds a generated dedup corpus with the default embedder, writes the top-10
neighbours as a run's match output, calibrates ``--max_distance`` for precision 0.98 on the labels of
half of the entities (a cluster file, singletons included, ``--unlabelled ignore``) and checks the
precision that threshold gives on the other, held-out half: at least the target minus ``TOLERANCE``.
The tolerance is about two standard errors of a precision near 0.98 estimated from ~350 pairs; both
halves are independent samples of entities, so the held-out precision may fall on either side of the
target by sampling noise alone.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from beam_jobs.commands.calibrate import calibrate_main
from tests.transforms.learn.calibration_cases import LINK_ROWS, _matches, _write_run
from transforms.learn.calibrate import (
    CALIBRATION_KEY,
    CalibrationLabels,
    TargetNotReachedError,
    calibrate,
    label_pairs,
    read_calibration_labels,
)

TARGET = 0.98
TOLERANCE = 0.015
TOP_K = 10


LINK_TRUTH = CalibrationLabels(pairs={("q1", "c1"), ("q2", "c2"), ("q4", "c4"), ("q6", "c6")},
                               labelled_ids={"q1", "q2", "q3", "q4", "q5", "q6"})


def test_largest_threshold_reaching_the_target_precision():
    result = calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_precision=0.75)
    assert result[CALIBRATION_KEY] == 0.4
    assert result["achieved_precision"] == 0.75
    assert result["recall"] == 0.75  # q6's pair was never emitted: 3 of 4
    assert result["counts"]["unlabelled_pairs_ignored"] == 1
    assert result["counts"]["true_pairs_not_emitted"] == 1
    assert result["target_precision"] == 0.75 and result["target_recall"] is None
    assert {p["max_distance"] for p in result["curve"]} == {0.1, 0.2, 0.3, 0.4, 0.5}


def test_unlabelled_negative_counts_every_pair():
    ignored = calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_precision=0.6)
    assert ignored[CALIBRATION_KEY] == 0.5  # precision 1, 1, 2/3, 3/4, 3/5
    result = calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_precision=0.6,
                       unlabelled="negative")
    # u1-cz (0.15) is now a false pair: precision 1, 1/2, 2/3, 2/4, 3/5, 3/6
    assert result[CALIBRATION_KEY] == 0.4
    assert result["counts"]["unlabelled_pairs_ignored"] == 0


def test_smallest_threshold_reaching_the_target_recall():
    result = calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_recall=0.5)
    assert result[CALIBRATION_KEY] == 0.2 and result["recall"] == 0.5


def test_unreachable_target_raises_with_the_best_there_is():
    with pytest.raises(TargetNotReachedError, match="highest recall is 0.75"):
        calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_recall=0.9)


def test_dedup_pairs_are_unordered_and_self_pairs_dropped():
    rows = [("a", "b", 0.2), ("b", "a", 0.1), ("a", "a", 0.0), ("c", "d", 0.3), ("e", "", np.inf)]
    truth = CalibrationLabels(pairs={("a", "b")}, labelled_ids={"a", "b", "c"})
    pairs, counts = label_pairs(_matches(rows), truth, mode="dedup")
    assert pairs[["a", "b", "distance"]].values.tolist() == [["a", "b", 0.1], ["c", "d", 0.3]]
    assert pairs["true"].tolist() == [True, False]
    assert counts["self_pairs_dropped"] == 1 and counts["empty_slots_dropped"] == 1


def test_cluster_truth_labels_singletons_too(tmp_path):
    path = tmp_path / "clusters.csv"
    path.write_text("rec_id,entity_id\nr1,e1\nr2,e1\nr3,e2\n")
    labels = read_calibration_labels(str(path), mode="dedup")
    assert labels.pairs == {("r1", "r2")}
    assert labels.labelled_ids == {"r1", "r2", "r3"}


def test_probability_threshold_is_the_smallest_reaching_the_target():
    # The same pairs scored: probability falls as distance grows, so the sweep mirrors the distance one.
    matches = _matches(LINK_ROWS).assign(match_probability=lambda f: 1.0 - f["distance"])
    result = calibrate(matches, LINK_TRUTH, mode="link", target_precision=0.75, threshold="probability")
    assert result["threshold"] == "probability" and CALIBRATION_KEY not in result
    assert result["min_probability"] == pytest.approx(0.6)  # q4's pair: precision 3/4
    assert result["pairs_at_threshold"] == 4 and result["true_positives_at_threshold"] == 3
    with pytest.raises(ValueError, match="match_probability"):
        calibrate(_matches(LINK_ROWS), LINK_TRUTH, mode="link", target_precision=0.75,
                  threshold="probability")


@pytest.mark.slow
def test_calibrated_threshold_holds_on_heldout_people(tmp_path):
    from transforms.features.default_embedder import build_default_model
    from transforms.learn.train import default_vectors, preprocess_corpora
    from transforms.testing.people import MATCH_FIELDS, make_dedup_corpus, write_records

    records, _ = make_dedup_corpus(900, seed=21)
    write_records(records, str(tmp_path / "people.csv"), "csv")
    corpora, _ = preprocess_corpora({"input": str(tmp_path / "people.csv")}, text_fields=MATCH_FIELDS,
                                    id_field="rec_id")
    corpus = corpora["input"]
    vectors = default_vectors(build_default_model(MATCH_FIELDS), corpus.table).astype(np.float64)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :TOP_K]
    rows = np.repeat(np.arange(len(corpus)), TOP_K)
    matches = pd.DataFrame({"query_id": corpus.ids[rows], "candidate_id": corpus.ids[top.ravel()],
                            "rank": np.tile(np.arange(1, TOP_K + 1), len(corpus)),
                            "distance": 1.0 - sims[rows, top.ravel()]})
    out = str(tmp_path / "run")
    _write_run(out, matches)

    entities = sorted({r["entity_id"] for r in records})
    half = set(np.random.default_rng(3).permutation(entities)[: len(entities) // 2].tolist())
    for name, keep in (("calibration", True), ("heldout", False)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("rec_id", "entity_id"))
            writer.writerows((r["rec_id"], r["entity_id"]) for r in records
                             if (r["entity_id"] in half) == keep)

    assert calibrate_main(["--matches", out, "--truth", str(tmp_path / "calibration.csv"),
                           "--mode", "dedup", "--target_precision", str(TARGET)]) == 0
    result = json.loads(open(os.path.join(out, "calibration.json")).read())
    threshold = result[CALIBRATION_KEY]
    with open(os.path.join(out, "calibration.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

    held = read_calibration_labels(str(tmp_path / "heldout.csv"), mode="dedup")
    pairs, _ = label_pairs(matches, held, mode="dedup")
    accepted = pairs[pairs["labelled"] & (pairs["distance"] <= threshold)]
    precision = accepted["true"].mean()
    recall = accepted["true"].sum() / len(held.pairs)
    print(f"\ncalibrated max_distance {threshold:.4f} for precision {TARGET}: calibration half "
          f"{result['achieved_precision']:.4f} over {result['pairs_at_threshold']} pairs (recall "
          f"{result['recall']:.4f}); held-out half {precision:.4f} over {len(accepted)} pairs "
          f"(recall {recall:.4f}); tolerance {TOLERANCE}")
    assert result["achieved_precision"] >= TARGET
    assert precision >= TARGET - TOLERANCE
