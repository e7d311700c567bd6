"""The pairwise scorer in the whole job: columns, thresholds, determinism, explain, dedup clusters."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from beam_jobs.match_corpora import run_job
from transforms.io.results import read_manifest, read_matches
from transforms.learn.evaluate import evaluate, load_truth
from transforms.scoring.explain import explain_pair, format_explanation
from transforms.testing.people import (
    FEBRL3_CLUSTER_SIZES,
    MATCH_FIELDS,
    Corruption,
    make_dedup_corpus,
    make_link_corpora,
    write_records,
    write_truth,
)

pytestmark = pytest.mark.slow
FIELDS = ",".join(MATCH_FIELDS + ("soc_sec_id",))


def _run(args):
    return run_job(args + ["--runner", "FnApiRunner", "--id_field", "rec_id", "--text_fields", FIELDS])


@pytest.fixture(scope="module")
def link_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("febrl4_like")
    a, b, links = make_link_corpora(600, overlap=0.8, seed=21, soc_sec_id=True)
    write_records(a, str(d / "a.csv"), "csv")
    write_records(b, str(d / "b.csv"), "csv")
    write_truth(links, str(d / "true_pairs.csv"))
    return d


@pytest.fixture(scope="module")
def link_run(link_data):
    out = link_data / "out"
    _run(["--queries", str(link_data / "a.csv"), "--candidates", str(link_data / "b.csv"),
          "--output", str(out)])
    return out


def test_scored_matches_have_probabilities_and_link_true_pairs(link_run, link_data):
    matches = read_matches(str(link_run))
    assert list(matches.columns) == ["query_id", "candidate_id", "rank", "distance", "match_weight",
                                     "match_probability"]
    assert (matches.match_probability >= 0.5).all()  # the default --min_probability
    np.testing.assert_allclose(matches.match_probability, 1 / (1 + 2.0 ** -matches.match_weight))
    # Ranks follow the match weight within each query.
    for _, rows in matches.groupby("query_id"):
        assert rows.sort_values("rank").match_weight.is_monotonic_decreasing
    report = evaluate(matches, load_truth(str(link_data / "true_pairs.csv")), mode="link")
    print(f"scored link: top-1 P {report['top1']['precision']:.4f} R {report['top1']['recall']:.4f} "
          f"F1 {report['top1']['f1']:.4f}")
    # 20 % of the queries have no partner, and this generator's hardest negatives share a household
    # (surname and address): a threshold that works keeps most of them out.
    assert report["top1"]["precision"] >= 0.9 and report["top1"]["recall"] >= 0.95
    manifest = read_manifest(str(link_run))
    assert manifest["scoring"]["fields"][-1] == "embedding_distance"
    assert manifest["scoring"]["fit"]["candidate_pairs"] > 0


def test_rerun_gives_identical_files_and_min_probability_zero_keeps_all(link_run, link_data, tmp_path):
    out = tmp_path / "again"
    _run(["--queries", str(link_data / "a.csv"), "--candidates", str(link_data / "b.csv"),
          "--output", str(out)])
    for sub in ("matches", "scoring"):
        for name in sorted(os.listdir(link_run / sub)):
            assert (link_run / sub / name).read_bytes() == (out / sub / name).read_bytes(), name
    everything = tmp_path / "all"
    _run(["--queries", str(link_data / "a.csv"), "--candidates", str(link_data / "b.csv"),
          "--output", str(everything), "--min_probability", "0"])
    assert len(read_matches(str(everything))) == 600 * 10


def test_a_fitted_model_scores_another_run_alike(link_run, link_data, tmp_path):
    from beam_jobs.config import ConfigError

    model = link_run / "scoring" / "model.json"
    out = tmp_path / "given"
    _run(["--queries", str(link_data / "a.csv"), "--candidates", str(link_data / "b.csv"),
          "--output", str(out), "--scoring_model", str(model)])
    fresh, given = read_matches(str(link_run)), read_matches(str(out))
    # Same data, same model (no EM): the same pairs and weights.
    assert (fresh[["query_id", "candidate_id", "rank"]].to_numpy() ==
            given[["query_id", "candidate_id", "rank"]].to_numpy()).all()
    # (model.json keeps m and u to 12 decimals)
    np.testing.assert_allclose(given.match_weight, fresh.match_weight, rtol=1e-9)
    assert read_manifest(str(out))["scoring"]["fit"]["reused"] is True
    with pytest.raises(ConfigError, match="--scoring_model"):
        run_job(["--queries", str(link_data / "a.csv"), "--candidates", str(link_data / "b.csv"),
                 "--output", str(tmp_path / "x"), "--id_field", "rec_id", "--text_fields", "surname",
                 "--scoring_model", str(model), "--runner", "FnApiRunner"])


def test_explain_adds_up_to_the_written_weight(link_run, link_data):
    matches = read_matches(str(link_run))
    row = matches.iloc[len(matches) // 2]
    explained = explain_pair(str(link_run), row.query_id, row.candidate_id)
    assert explained["emitted"]
    assert explained["terms"][-1]["weight"] == pytest.approx(row.match_weight, abs=1e-9)
    text = format_explanation(explained)
    assert "date_of_birth" in text and "embedding_distance" in text
    with pytest.raises(KeyError, match="not among"):
        explain_pair(str(link_run), "no-such-id", row.candidate_id)


def test_scored_dedup_clusters_use_the_kept_pairs(tmp_path):
    records, pairs = make_dedup_corpus(300, seed=5, soc_sec_id=True)
    write_records(records, str(tmp_path / "d.csv"), "csv")
    write_truth(pairs, str(tmp_path / "true_pairs.csv"))
    out = tmp_path / "out"
    _run(["--input", str(tmp_path / "d.csv"), "--output", str(out), "--top_k", "5"])
    matches = read_matches(str(out))
    report = evaluate(matches, load_truth(str(tmp_path / "true_pairs.csv")), mode="dedup")
    print(f"scored dedup: pairwise P {report['pairs']['precision']:.4f} R {report['pairs']['recall']:.4f}")
    # Households (shared surname and address) are this generator's hardest negatives: two-class EM
    # let them in (precision 0.64 on this data), the three classes keep most of them out (0.944).
    assert report["pairs"]["precision"] >= 0.93 and report["pairs"]["recall"] >= 0.95
    clusters = pd.read_parquet(out / "clusters")
    kept = set(matches.query_id) | set(matches.candidate_id)
    multi = clusters[clusters.cluster_size > 1]
    assert set(multi.record_id) == kept


def test_febrl_like_link_and_dedup_reach_the_issue_targets(tmp_path):
    # FEBRL's own corruption (transforms.testing.people.Corruption.febrl), no households, default
    # flags: the scorer's threshold, not a tuned one.
    a, b, links = make_link_corpora(1000, overlap=1.0, seed=3, corruption=Corruption.febrl(4),
                                    household_rate=0.0, soc_sec_id=True)
    write_records(a, str(tmp_path / "a.csv"), "csv")
    write_records(b, str(tmp_path / "b.csv"), "csv")
    _run(["--queries", str(tmp_path / "a.csv"), "--candidates", str(tmp_path / "b.csv"),
          "--output", str(tmp_path / "link")])
    link = evaluate(read_matches(str(tmp_path / "link")), set(links), mode="link")
    records, pairs = make_dedup_corpus(400, seed=4, corruption=Corruption.febrl(3),
                                       cluster_weights=FEBRL3_CLUSTER_SIZES, household_rate=0.0,
                                       soc_sec_id=True)
    write_records(records, str(tmp_path / "d.csv"), "csv")
    _run(["--input", str(tmp_path / "d.csv"), "--output", str(tmp_path / "dedup")])
    dedup = evaluate(read_matches(str(tmp_path / "dedup")), set(pairs), mode="dedup")
    print(f"FEBRL-like: link top-1 F1 {link['top1']['f1']:.4f} (P {link['top1']['precision']:.4f}); "
          f"dedup pairwise F1 at p >= 0.5 {dedup['pairs']['f1']:.4f}")
    assert link["top1"]["f1"] >= 0.995
    assert dedup["pairs"]["f1"] >= 0.99


def _best_top1_f1(matches: pd.DataFrame, truth: set, queries: set) -> float:
    matches = matches[matches.query_id.isin(queries)]
    cuts = np.unique(np.quantile(matches[matches["rank"] == 1].match_probability, np.linspace(0, 1, 101)))
    return max(evaluate(matches[matches.match_probability >= t], truth, mode="link")["top1"]["f1"]
               for t in cuts)


def _rescored_by(run_dir: str, model_file: str) -> pd.DataFrame:
    """A scored link run's pairs rescored offline by another model, ranked per query by weight."""
    import dataclasses

    from transforms.common.artifacts import read_text
    from transforms.scoring.fellegi_sunter import FellegiSunterModel
    from transforms.scoring.labelled import labelled_levels, rescore, with_cuts

    matches = read_matches(run_dir)
    matches = matches[matches.candidate_id != ""].reset_index(drop=True)
    model = FellegiSunterModel.from_json(read_text(model_file))
    compared = labelled_levels(run_dir, matches.query_id.to_numpy(), matches.candidate_id.to_numpy(),
                               matches.distance.to_numpy())
    compared = with_cuts(compared, matches.distance.to_numpy(), np.asarray(model.fit["distance_cuts"]))
    model = dataclasses.replace(model, tf_base=compared.model.tf_base, records=compared.model.records)
    weights, probs = rescore(model, compared)
    out = matches.assign(match_weight=weights, match_probability=probs)
    out = out.sort_values(["query_id", "match_weight", "distance", "candidate_id"],
                          ascending=[True, False, True, True])  # as io.rank_by_weight
    out["rank"] = out.groupby("query_id").cumcount() + 1
    return out.reset_index(drop=True)


def test_calibrate_fits_the_scorer_to_labels_and_the_job_applies_it(tmp_path):
    """Labels of half the queries: calibrate compares their pairs as the job does, counts m/u from
    them, picks --min_probability for precision 0.98; a rerun with --calibration scores with that
    model (same weights as calibrate computed) and holds the precision on the other half, and the
    supervised model ranks the held-out queries at least as well as the unsupervised fit."""
    from beam_jobs.commands.calibrate import calibrate_main
    from transforms.learn.calibrate import read_calibration_labels, refit_scorer

    a, b, links = make_link_corpora(1000, overlap=0.8, seed=5)
    write_records(a, str(tmp_path / "a.csv"), "csv")
    write_records(b, str(tmp_path / "b.csv"), "csv")
    queries = sorted({q for q, _ in links})
    half = set(np.random.default_rng(0).permutation(queries)[: len(queries) // 2].tolist())
    write_truth([p for p in links if p[0] in half], str(tmp_path / "cal.csv"))
    write_truth([p for p in links if p[0] not in half], str(tmp_path / "held.csv"))
    inputs = ["--queries", str(tmp_path / "a.csv"), "--candidates", str(tmp_path / "b.csv")]
    first, second = (str(tmp_path / n) for n in ("r1", "r2"))
    fields = ["--text_fields", ",".join(MATCH_FIELDS)]
    base = ["--runner", "FnApiRunner", "--id_field", "rec_id"] + fields + inputs
    run_job(base + ["--output", first, "--min_probability", "0"])

    assert calibrate_main(["--matches", first, "--truth", str(tmp_path / "cal.csv"),
                           "--target_precision", "0.98", "--fit_scorer"]) == 0
    result = pd.read_json(os.path.join(first, "calibration.json"), typ="series")
    # The scoring model is named relative to the calibration file (beside it).
    assert result["threshold"] == "probability" and not os.path.isabs(result["scoring_model"])
    assert os.path.exists(os.path.join(first, result["scoring_model"]))
    assert result["scorer_fit"]["true_pairs_fitted"] > 0.9 * len(half)
    run_job(base + ["--output", second, "--calibration", os.path.join(first, "calibration.json")])
    manifest = read_manifest(second)
    assert manifest["flags"]["scorer"] == "model"
    assert manifest["scoring"]["fit"]["method"] == "supervised"
    applied = read_matches(second)
    assert len(applied) and (applied.match_probability >= result["min_probability"]).all()

    # The job's weights are calibrate's: one set of comparisons.
    labels = read_calibration_labels(str(tmp_path / "cal.csv"), mode="link")
    _, rescored, _ = refit_scorer(first, read_matches(first), labels, mode="link")
    joined = rescored.merge(applied, on=["query_id", "candidate_id"], suffixes=("_cal", "_job"))
    assert len(joined) > 0.5 * len(half)
    np.testing.assert_allclose(joined.match_weight_job, joined.match_weight_cal, atol=1e-6)

    held = load_truth(str(tmp_path / "held.csv"))
    held_queries = {q for q, _ in held}
    report = evaluate(applied[applied.query_id.isin(held_queries)], held, mode="link")["top1"]
    print(f"\nsupervised scorer at min_probability {result['min_probability']:.6g}: held-out top-1 "
          f"P {report['precision']:.4f} R {report['recall']:.4f}")
    assert report["precision"] >= 0.98 - 0.015

    # The supervised model on all of the first run's pairs, as a run with --scoring_model would score
    # them (its distance cuts, this run's term frequencies; weights equal the job's, checked above),
    # each query's pairs ranked by weight as the job ranks them.
    unsupervised = _best_top1_f1(read_matches(first), held, held_queries)
    supervised = _best_top1_f1(_rescored_by(first, os.path.join(first, result["scoring_model"])), held,
                               held_queries)
    print(f"held-out best top-1 F1: unsupervised {unsupervised:.4f}, supervised {supervised:.4f}")
    assert supervised >= unsupervised
