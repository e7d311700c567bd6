"""ScorePairs under the local runner against a numpy oracle, and the scorer in the whole job."""

from __future__ import annotations

import json
import os
import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from transforms.common.schema import FeatureBatch, PairBatch, ScoredPairBatch
from transforms.scoring.comparisons import compare_fields, record_fields, take_rows
from transforms.scoring.fellegi_sunter import (
    FellegiSunterModel,
    pattern_histogram,
    term_frequencies,
    term_sketch,
)
from transforms.scoring.score_pairs import ScorePairs, distance_levels, model_path, read_level_patterns
from transforms.testing.people import MATCH_FIELDS, make_link_corpora

FIELDS = MATCH_FIELDS


def _features(records, role):
    ids = np.array([r["rec_id"] for r in records], dtype=object)
    origins = np.array([f"{role}.csv#{i}" for i in range(len(records))], dtype=object)
    table = pa.record_batch({f: pa.array([r[f] or None for r in records], pa.string()) for f in FIELDS})
    return FeatureBatch(ids, origins, table)


def _candidate_pairs(a, b, links, rng, k=5):
    """Each query's true partner (when it has one) and k-1 other candidates, ranked by a noisy
    distance where the partner is usually nearest."""
    partner = dict(links)
    b_ids = [r["rec_id"] for r in b]
    q, c, d = [], [], []
    for rec in a:
        qid = rec["rec_id"]
        others = list(rng.choice(b_ids, size=k, replace=False))
        cands = ([partner[qid]] if qid in partner else []) + [x for x in others if x != partner.get(qid)]
        dist = np.sort(rng.uniform(0.3, 0.9, size=len(cands[:k])))
        if qid in partner:
            dist[0] = rng.uniform(0.0, 0.35)
        for cid, dd in zip(cands[:k], np.sort(dist), strict=True):
            q.append(qid), c.append(cid), d.append(dd)
    ranks = np.concatenate([np.arange(1, k + 1)] * len(a))[:len(q)]
    return PairBatch(np.array(q, dtype=object), np.array(c, dtype=object), ranks.astype(np.int64),
                     np.array(d, dtype=np.float64))


@pytest.fixture(scope="module")
def link_data():
    a, b, links = make_link_corpora(400, overlap=0.8, seed=11, soc_sec_id=False)
    pairs = _candidate_pairs(a, b, links, np.random.default_rng(0))
    return a, b, links, pairs


def _dump(batches, path):
    with open(path, "wb") as fh:
        pickle.dump(batches, fh)


def _run_scorer(tmp_path, a, b, pairs, *, min_probability=None, batches=3):
    os.makedirs(tmp_path, exist_ok=True)
    dump = os.path.join(str(tmp_path), "scored.pkl")
    with beam.Pipeline(runner="FnApiRunner") as p:
        step = max(1, len(pairs) // batches)
        chunks = [PairBatch(*(col[i:i + step] for col in pairs)) for i in range(0, len(pairs), step)]
        records = {"queries": p | "Q" >> beam.Create([_features(a[:200], "a"), _features(a[200:], "a")]),
                   "candidates": p | "C" >> beam.Create([_features(b, "b")])}
        result = (p | "Pairs" >> beam.Create(chunks)
                  | ScorePairs(records=records, text_fields=FIELDS, min_probability=min_probability,
                               num_buckets=3, output_dir=str(tmp_path)))
        _ = result.pairs | beam.combiners.ToList() | beam.Map(_dump, dump)
    with open(dump, "rb") as fh:
        return pickle.load(fh)


def _concat(batches):
    return ScoredPairBatch(*(np.concatenate([b[i] for b in batches]) for i in range(6)))


def test_scores_equal_the_fitted_model_on_directly_compared_records(tmp_path, link_data):
    a, b, links, pairs = link_data
    scored = _concat(_run_scorer(tmp_path, a, b, pairs))
    assert len(scored) == len(pairs)  # min_probability None keeps every pair
    model = FellegiSunterModel.from_json(open(model_path(str(tmp_path))).read())
    assert model.fields == FIELDS + ("embedding_distance",)
    # Oracle: compare the same records in numpy, outside Beam, and apply the written model.
    af = _features(a, "a")
    bf = _features(b, "b")
    A = record_fields(af.ids, af.origins, af.table, FIELDS, ())
    B = record_fields(bf.ids, bf.origins, bf.table, FIELDS, ())
    ai = {k: i for i, k in enumerate(A.ids)}
    bi = {k: i for i, k in enumerate(B.ids)}
    left = take_rows(A, np.array([ai[x] for x in scored.query_ids]))
    right = take_rows(B, np.array([bi[x] for x in scored.candidate_ids]))
    cuts = np.array(model.fit["distance_cuts"])
    levels = np.concatenate([compare_fields(left, right), distance_levels(scored.distances, cuts)[:, None]],
                            axis=1)
    agreed = np.where(levels[:, :len(FIELDS)] == 0, left.hashes, np.uint64(0))
    sketch = term_sketch(np.concatenate([A.hashes, B.hashes]))
    freq = term_frequencies(sketch, agreed)
    np.testing.assert_allclose(scored.match_weights, model.weights(levels, freq), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scored.match_probabilities, 1 / (1 + 2.0 ** -scored.match_weights))
    # The EM input written beside the model is the histogram of these same levels.
    fields, rank1, everything = read_level_patterns(str(tmp_path))
    assert fields == model.fields
    assert everything == pattern_histogram(levels)
    assert rank1 == pattern_histogram(levels[scored.ranks == 1])


def test_true_links_score_high_and_others_low(tmp_path, link_data):
    a, b, links, pairs = link_data
    scored = _concat(_run_scorer(tmp_path, a, b, pairs))
    truth = set(links)
    is_true = np.array([(q, c) in truth for q, c in zip(scored.query_ids, scored.candidate_ids, strict=True)])
    keep = scored.match_probabilities >= 0.5
    precision = is_true[keep].mean()
    recall = is_true[keep].sum() / len(truth)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    fit = json.loads(open(model_path(str(tmp_path))).read())["fit"]
    assert fit["converged"] and fit["candidate_pairs"] == len(pairs)


def test_min_probability_filters_and_output_does_not_depend_on_batching(tmp_path, link_data):
    a, b, _, pairs = link_data
    everything = _concat(_run_scorer(tmp_path / "a", a, b, pairs, batches=2))
    kept = _concat(_run_scorer(tmp_path / "b", a, b, pairs, min_probability=0.5, batches=7))
    order = np.lexsort((everything.candidate_ids.astype(str), everything.query_ids.astype(str)))
    wanted = everything.match_probabilities[order] >= 0.5
    order_k = np.lexsort((kept.candidate_ids.astype(str), kept.query_ids.astype(str)))
    assert (kept.query_ids[order_k] == everything.query_ids[order][wanted]).all()
    np.testing.assert_array_equal(kept.match_weights[order_k], everything.match_weights[order][wanted])
    assert open(model_path(str(tmp_path / "a"))).read() == open(model_path(str(tmp_path / "b"))).read()


def test_pairs_whose_records_are_missing_compare_as_missing(tmp_path, link_data):
    a, b, _, pairs = link_data
    ghost = PairBatch(np.array(["no-such-query"], dtype=object), pairs.candidate_ids[:1], np.array([1]),
                      np.array([0.5]))
    both = PairBatch(*(np.concatenate([x, y]) for x, y in zip(pairs, ghost, strict=True)))
    scored = _concat(_run_scorer(tmp_path, a, b, both))
    model = FellegiSunterModel.from_json(open(model_path(str(tmp_path))).read())
    row = int(np.flatnonzero(scored.query_ids == "no-such-query")[0])
    # Every field missing: only the prior and the distance speak.
    dist_level = distance_levels(np.array([0.5]), np.array(model.fit["distance_cuts"]))[0]
    expected = model.prior_weight + model.level_weights[-1, dist_level]
    assert scored.match_weights[row] == pytest.approx(expected)


def test_composite_checks_its_arguments():
    with pytest.raises(ValueError, match="records"):
        ScorePairs(records={"queries": None}, text_fields=("a",), output_dir="x")
    with pytest.raises(ValueError, match="min_probability"):
        ScorePairs(records={"input": None}, text_fields=("a",), min_probability=2.0, output_dir="x")
    with pytest.raises(ValueError, match="field"):
        ScorePairs(records={"input": None}, text_fields=(), output_dir="x")


def test_a_dedup_pair_found_from_both_records_is_scored_once(tmp_path):
    records = make_link_corpora(60, overlap=1.0, seed=5)[0]
    feats = _features(records, "d")
    ids = [r["rec_id"] for r in records]
    # Canonical pairs (smaller id first), every pair twice as if found from both of its records,
    # the copies in different batches.
    q = np.array(ids[:-1], dtype=object)
    c = np.array(ids[1:], dtype=object)
    one = PairBatch(q, c, np.ones(len(q), np.int64), np.full(len(q), 0.2))
    two = PairBatch(q.copy(), c.copy(), np.full(len(q), 2, np.int64), np.full(len(q), 0.2))
    dump = str(tmp_path / "scored.pkl")
    with beam.Pipeline(runner="FnApiRunner") as p:
        result = (p | "Pairs" >> beam.Create([one, two])
                  | ScorePairs(records={"input": p | "D" >> beam.Create([feats])}, text_fields=FIELDS,
                               num_buckets=2, output_dir=str(tmp_path)))
        _ = result.pairs | beam.combiners.ToList() | beam.Map(_dump, dump)
    scored = _concat(pickle.load(open(dump, "rb")))
    assert len(scored) == len(q) and (scored.ranks == 1).all()  # the better copy
    fit = json.loads(open(model_path(str(tmp_path))).read())["fit"]
    assert fit["candidate_pairs"] == len(q)
