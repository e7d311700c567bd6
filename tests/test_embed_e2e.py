"""End to end with records embedded in the pipeline (tf.Transform + the default embedder)."""

from __future__ import annotations

import os

import pytest

from beam_jobs.match_corpora import run_job
from transforms.io.results import read_manifest, read_matches
from transforms.learn.evaluate import evaluate, load_truth
from transforms.testing.people import make_link_corpora, write_records, write_truth

pytestmark = pytest.mark.slow
PEOPLE = os.path.join(os.path.dirname(__file__), "testdata", "people")
FIELDS = "given_name,surname,street_number,address_1,suburb,postcode,state,date_of_birth"


def _run(args):
    return run_job(args + ["--runner", "FnApiRunner", "--id_field", "rec_id", "--text_fields", FIELDS])


def _run_unscored(args):
    # The embedder's own candidates (every top-K pair, ranked by distance): the pairwise scorer,
    # tested in tests/transforms/scoring, would keep only likely matches.
    return _run(args + ["--scorer", "none"])


@pytest.fixture(scope="module")
def link_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("people") / "out"
    _run_unscored(["--queries", f"{PEOPLE}/link/a.csv", "--candidates", f"{PEOPLE}/link/b.csv",
          "--output", str(out), "--top_k", "10"])
    return out


def test_default_embedder_finds_true_links(link_run):
    report = evaluate(read_matches(str(link_run)), load_truth(f"{PEOPLE}/link/true_pairs.csv"),
                      mode="link")
    best_top1 = report["threshold_sweep_top1"]["best"]
    print(f"recall@1 {report['recall_at']['1']:.4f} recall@10 {report['recall_at']['10']:.4f} "
          f"top-1 F1 {report['top1']['f1']:.4f}, at the best threshold {best_top1['f1']:.4f}")
    assert report["recall_at"]["10"] >= 0.99
    assert report["recall_at"]["1"] >= 0.97
    manifest = read_manifest(str(link_run))
    assert manifest["exit_state"] == "succeeded"
    assert manifest["counts"]["dead_letters_total"] == 0
    assert os.path.isdir(link_run / "transform_fn")


def test_default_embedder_links_every_record_febrl4_style(tmp_path):
    # FEBRL4's setting (the issue's field list comes from it): every record of A has exactly one true
    # match in B. Generated here at 4x the committed sample, with another seed; default job flags.
    a, b, links = make_link_corpora(2000, overlap=1.0, seed=1)
    write_records(a, str(tmp_path / "a.csv"), "csv")
    write_records(b, str(tmp_path / "b.csv"), "csv")
    write_truth(links, str(tmp_path / "true_pairs.csv"))
    out = tmp_path / "out"
    _run_unscored(["--queries", str(tmp_path / "a.csv"), "--candidates", str(tmp_path / "b.csv"),
          "--output", str(out), "--top_k", "10"])
    report = evaluate(read_matches(str(out)), load_truth(str(tmp_path / "true_pairs.csv")), mode="link")
    manifest = read_manifest(str(out))
    print(f"overlap 1.0, 2000 x 2000: recall@1 {report['recall_at']['1']:.4f} recall@10 "
          f"{report['recall_at']['10']:.4f} top-1 F1 {report['top1']['f1']:.4f} (audited ANN recall@10 "
          f"{manifest['audit']['recall_at_k']:.4f})")
    assert manifest["counts"]["dead_letters_total"] == 0
    assert report["recall_at"]["10"] >= 0.99
    assert report["top1"]["f1"] >= 0.98


def test_a_user_saved_model_works_and_the_transform_fn_is_reused(link_run, tmp_path):
    from transforms.features.default_embedder import export_default_model

    model = export_default_model(str(tmp_path / "model"), tuple(FIELDS.split(",")), ())
    out = tmp_path / "out"
    _run_unscored(["--queries", f"{PEOPLE}/link/a.csv", "--candidates", f"{PEOPLE}/link/b.csv",
          "--output", str(out), "--top_k", "10", "--model_dir", str(model),
          "--transform_fn_dir", str(link_run / "transform_fn")])
    # Same model, same transform_fn: the same matches as the run that analysed the data itself.
    a, b = read_matches(str(link_run)), read_matches(str(out))
    assert (a[["query_id", "candidate_id", "rank"]].to_numpy() ==
            b[["query_id", "candidate_id", "rank"]].to_numpy()).all()


def test_kept_index_reuses_its_preprocessing(link_run, tmp_path):
    out = tmp_path / "reused"
    _run(["--queries", f"{PEOPLE}/link/a.csv", "--index_dir", str(link_run), "--output", str(out),
          "--top_k", "10"])
    a, b = read_matches(str(link_run)), read_matches(str(out))
    assert (a[["query_id", "candidate_id", "rank"]].to_numpy() ==
            b[["query_id", "candidate_id", "rank"]].to_numpy()).all()
    assert read_manifest(str(out))["flags"]["transform_fn_dir"] == f"{link_run}/transform_fn"


def test_kept_index_refuses_vectors_of_another_model(link_run, tmp_path):
    from beam_jobs.config import ConfigError
    from transforms.features.default_embedder import export_default_model

    manifest = read_manifest(str(link_run))
    assert manifest["model_fingerprint"].startswith("builtin:default_embedder")
    model = export_default_model(str(tmp_path / "model"), tuple(FIELDS.split(",")), ())
    with pytest.raises(ConfigError, match="--model_dir .* is not the model --index_dir"):
        _run(["--queries", f"{PEOPLE}/link/a.csv", "--index_dir", str(link_run), "--model_dir",
              str(model), "--output", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="not a SavedModel"):
        _run(["--queries", f"{PEOPLE}/link/a.csv", "--candidates", f"{PEOPLE}/link/b.csv",
              "--model_dir", str(tmp_path), "--output", str(tmp_path / "y")])


def test_dedup_people_pairwise(tmp_path):
    out = tmp_path / "dedup"
    _run_unscored(["--input", f"{PEOPLE}/dedup/people.csv", "--output", str(out), "--top_k", "5"])
    report = evaluate(read_matches(str(out)), load_truth(f"{PEOPLE}/dedup/true_pairs.csv"),
                      mode="dedup")
    best = report["threshold_sweep"]["best"]
    print(f"dedup pairwise: recall {report['pairs']['recall']:.4f}; best threshold "
          f"{best['threshold']:.3f}: P {best['precision']:.4f} R {best['recall']:.4f} F1 {best['f1']:.4f}")
    assert report["pairs"]["recall"] >= 0.99
    assert best["f1"] >= 0.85
    assert read_manifest(str(out))["clusters"]["num_records"] == 575
