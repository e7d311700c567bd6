"""corpus-match train on a generated person corpus, judged on entities it never saw.

One training run (module fixture) on a dedup corpus of people split by entity: 60 % of the entities train
(with deliberately bad labels mixed into the truth), 40 % are held out and preprocessed afterwards with the
transform_fn the training wrote, as the match job would with ``--transform_fn_dir``. Both the default
embedder and the trained SavedModel embed the held-out records; their pairwise F1 (best distance
threshold over each record's top-10 neighbours, :func:`transforms.learn.evaluate.evaluate` in dedup mode) is
printed and compared.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from beam_jobs.commands.train import train_main
from transforms.features.default_embedder import build_default_model
from transforms.features.embed import TFSavedModelHandler
from transforms.features.preprocess import TransformedBatch
from transforms.learn.evaluate import evaluate
from transforms.learn.train import (
    REPORT_JSON,
    REPORT_PNG,
    TRANSFORM_FN_DIRNAME,
    TrainConfig,
    default_vectors,
    preprocess_corpora,
    read_labels,
    split_by_entity,
)
from transforms.testing.people import MATCH_FIELDS, make_dedup_corpus, write_records, write_truth

pytestmark = pytest.mark.slow

ENTITIES = 1000
EPOCHS = 5
TOP_K = 10
# Bad labels mixed into the training truth: each must be counted and skipped.
BAD_LABELS = {"unknown_ids": 2, "duplicate_pairs": 2, "self_pairs": 1, "empty_ids": 1}


def _split_corpus(records: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    entities = sorted({r["entity_id"] for r in records})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(entities)[: int(0.4 * len(entities))].tolist())
    return ([r for r in records if r["entity_id"] not in held],
            [r for r in records if r["entity_id"] in held])


def _pairs(records: list[dict]) -> list[tuple[str, str]]:
    members: dict[str, list[str]] = {}
    for r in records:
        members.setdefault(r["entity_id"], []).append(r["rec_id"])
    return sorted((a, b) for group in members.values() for a in group for b in group if a < b)


def _pairwise_f1(ids: np.ndarray, vectors: np.ndarray, truth: list[tuple[str, str]]) -> dict:
    """Brute-force top-K by cosine (numpy oracle), scored as a dedup run."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :TOP_K]
    rows = np.repeat(np.arange(len(ids)), TOP_K)
    frame = pd.DataFrame({"query_id": ids[rows], "candidate_id": ids[top.ravel()],
                          "rank": np.tile(np.arange(1, TOP_K + 1), len(ids)),
                          "distance": 1.0 - sims[rows, top.ravel()]})
    return evaluate(frame, truth, mode="dedup")["threshold_sweep"]["best"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    records, _ = make_dedup_corpus(ENTITIES, seed=11)
    train_records, held_records = _split_corpus(records, seed=1)
    write_records(train_records, str(root / "train.csv"), "csv")
    write_records(held_records, str(root / "heldout.csv"), "csv")
    good = _pairs(train_records)
    a, b = good[0]
    bad = [("r-nope", a), (b, "r-missing"),  # unknown ids
           (a, b), (b, a),  # the same unordered pair twice more
           (a, a),  # a record with itself
           ("", b)]  # empty id
    write_truth(good + bad, str(root / "train_pairs.csv"))
    model_dir = root / "model"
    started = time.perf_counter()
    code = train_main(["--input", str(root / "train.csv"), "--truth", str(root / "train_pairs.csv"),
                       "--id_field", "rec_id", "--text_fields", ",".join(MATCH_FIELDS),
                       "--model_dir", str(model_dir), "--epochs", str(EPOCHS), "--seed", "0"])
    seconds = time.perf_counter() - started
    assert code == 0
    held, _ = preprocess_corpora({"input": str(root / "heldout.csv")}, text_fields=MATCH_FIELDS,
                                 id_field="rec_id",
                                 transform_fn_dir_in=str(model_dir / TRANSFORM_FN_DIRNAME))
    return {"root": root, "model_dir": str(model_dir), "good_pairs": good, "seconds": seconds,
            "held": held["input"], "held_truth": _pairs(held_records),
            "report": json.loads((model_dir / REPORT_JSON).read_text())}


def _batch(corpus, start: int, stop: int) -> TransformedBatch:
    """Rows [start, stop) as the TransformedBatch the match job's embed step receives."""
    (table,) = corpus.table.slice(start, stop - start).combine_chunks().to_batches()
    return TransformedBatch(ids=corpus.ids[start:stop], origins=corpus.ids[start:stop], table=table)


def _trained_vectors(model_dir: str, corpus) -> np.ndarray:
    handler = TFSavedModelHandler(model_dir)
    (result,) = handler.run_inference([_batch(corpus, 0, len(corpus))], handler.load_model())
    return result.inference


def test_trained_model_beats_default_on_heldout_entities(trained):
    held = trained["held"]
    default = default_vectors(build_default_model(MATCH_FIELDS), held.table)
    learned = _trained_vectors(trained["model_dir"], held)
    before = _pairwise_f1(held.ids, default, trained["held_truth"])
    after = _pairwise_f1(held.ids, learned, trained["held_truth"])
    print(f"\nheld-out dedup pairwise F1 ({len(held)} records, {len(trained['held_truth'])} true pairs): "
          f"default {before['f1']:.4f} (P {before['precision']:.4f} R {before['recall']:.4f}) -> trained "
          f"{after['f1']:.4f} (P {after['precision']:.4f} R {after['recall']:.4f}); "
          f"train_main took {trained['seconds']:.1f} s")
    assert after["f1"] > before["f1"]


def test_saved_model_serves_unit_vectors_with_the_default_contract(trained):
    held = trained["held"]
    handler = TFSavedModelHandler(trained["model_dir"])
    model = handler.load_model()
    default = build_default_model(MATCH_FIELDS)
    assert set(model.input_specs) == set(default.serve.input_signature[0])
    assert model.output_key == "embedding"
    results = handler.run_inference([_batch(held, 0, 37), _batch(held, 37, 100)], model)
    assert [r.inference.shape for r in results] == [(37, default.dim), (63, default.dim)]
    vectors = np.concatenate([r.inference for r in results])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_report_has_every_epoch_from_the_default_embedder_on(trained):
    report, model_dir = trained["report"], trained["model_dir"]
    epochs = report["training"]["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS + 1))
    for row in epochs:
        assert row["loss"] is not None and np.isfinite(row["loss"])
        for key in ("recall_at_1", "recall_at_10", "top1_f1", "pairwise_f1", "average_precision"):
            assert 0.0 <= row["validation"][key] <= 1.0
    best = report["training"]["best_epoch"]
    selected = [e["validation"]["average_precision"] for e in epochs]
    assert selected[best] == max(selected)
    assert report["split"]["validation_records"] > 0 and report["split"]["training_records"] > 0
    with open(os.path.join(model_dir, REPORT_PNG), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isdir(os.path.join(model_dir, TRANSFORM_FN_DIRNAME, "transform_fn"))


def test_bad_labels_are_counted_and_skipped(trained):
    labels = trained["report"]["labels"]
    for reason, count in BAD_LABELS.items():
        assert labels[reason] == count, reason
    assert labels["usable_pairs"] == len(trained["good_pairs"])
    assert labels["pairs_read"] == len(trained["good_pairs"]) + sum(BAD_LABELS.values())


def test_link_mode_reusing_a_transform_fn(trained, tmp_path):
    """Link training on the committed people corpora, with the dedup run's transform_fn reused."""
    data = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "testdata", "people", "link")
    model_dir = tmp_path / "link_model"
    code = train_main(["--queries", os.path.join(data, "a.csv"), "--candidates", os.path.join(data, "b.csv"),
                       "--truth", os.path.join(data, "true_pairs.csv"), "--id_field", "rec_id",
                       "--text_fields", ",".join(MATCH_FIELDS), "--model_dir", str(model_dir),
                       "--transform_fn_dir", os.path.join(trained["model_dir"], TRANSFORM_FN_DIRNAME),
                       "--epochs", "2", "--validation_fraction", "0.3"])
    assert code == 0
    report = json.loads((model_dir / REPORT_JSON).read_text())
    assert report["mode"] == "link" and report["labels"]["usable_pairs"] == 400
    assert report["records"]["queries"] == 500 and report["records"]["candidates"] == 500
    first, last = report["training"]["epochs"][0], report["training"]["epochs"][-1]
    print(f"\nlink validation recall@1 {first['validation']['recall_at_1']:.4f} -> "
          f"{last['validation']['recall_at_1']:.4f}, pairwise F1 {first['validation']['pairwise_f1']:.4f} -> "
          f"{last['validation']['pairwise_f1']:.4f}")
    assert first["validation"]["recall_at_1"] > 0.9
    assert os.path.isdir(model_dir / TRANSFORM_FN_DIRNAME / "transform_fn")
    handler = TFSavedModelHandler(str(model_dir))
    held = trained["held"]
    (result,) = handler.run_inference([_batch(held, 0, 20)], handler.load_model())
    np.testing.assert_allclose(np.linalg.norm(result.inference, axis=1), 1.0, atol=1e-5)


def test_read_labels_in_link_mode_keeps_equal_ids_of_two_corpora(tmp_path):
    path = tmp_path / "links.csv"
    write_truth([("7", "7"), ("1", "9"), ("1", "9"), ("2", "x")], str(path))
    labels = read_labels(str(path), mode="link", query_ids=np.array(["1", "2", "7"], dtype=object),
                         candidate_ids=np.array(["7", "9"], dtype=object))
    # query "7" is position 2, candidate "7" is 3 + 0, candidate "9" is 3 + 1
    assert labels.pairs.tolist() == [[0, 4], [2, 3]]
    assert labels.counts["self_pairs"] == 0
    assert labels.counts["duplicate_pairs"] == 1 and labels.counts["unknown_ids"] == 1


def test_read_labels_orients_link_clusters_and_skips_same_corpus_pairs(tmp_path):
    path = tmp_path / "clusters.csv"
    path.write_text("id,cluster_id\nb1,e1\na1,e1\na2,e1\na3,e2\nzz,e2\n")
    labels = read_labels(str(path), mode="link", query_ids=np.array(["a1", "a2", "a3"], dtype=object),
                         candidate_ids=np.array(["b1"], dtype=object))
    assert labels.pairs.tolist() == [[0, 3], [1, 3]]  # a1-b1, a2-b1 (written b1 first)
    assert labels.counts["same_corpus_pairs"] == 1  # a1-a2
    assert labels.counts["unknown_ids"] == 1  # a3-zz


def test_split_by_entity_is_seeded_and_never_splits_an_entity():
    rng = np.random.default_rng(0)
    entity = rng.integers(0, 300, size=2000)
    labelled = entity % 3 == 0
    first = split_by_entity(entity, labelled, 0.25, seed=4)
    assert np.array_equal(first, split_by_entity(entity, labelled, 0.25, seed=4))
    assert not np.array_equal(first, split_by_entity(entity, labelled, 0.25, seed=5))
    for e in np.unique(entity):
        assert len(set(first[entity == e].tolist())) == 1
    held = np.unique(entity[first])
    assert abs(len(held) / len(np.unique(entity)) - 0.25) < 0.02


@pytest.mark.parametrize("kwargs, flag", [
    ({"input": "a.csv", "queries": "q.csv"}, "--input"),
    ({"queries": "q.csv"}, "--candidates"),
    ({"input": "a.csv", "validation_fraction": 0.95}, "--validation_fraction"),
    ({"input": "a.csv", "negatives": "some"}, "--negatives"),
    ({"input": "a.csv", "text_fields": ()}, "--text_fields"),
])
def test_config_errors_name_the_flag(kwargs, flag):
    base = {"model_dir": "m", "truth": "t.csv", "text_fields": ("name",)}
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**{**base, **kwargs})


def test_trained_model_round_trips_through_the_match_job(trained, tmp_path):
    """The trained SavedModel and its transform_fn serve the job unchanged (--model_dir)."""
    from beam_jobs.match_corpora import run_job
    from transforms.io.results import read_matches
    from transforms.learn.evaluate import evaluate

    out = tmp_path / "out"
    run_job(["--input", str(trained["root"] / "heldout.csv"), "--id_field", "rec_id",
             "--text_fields", ",".join(MATCH_FIELDS), "--model_dir", trained["model_dir"],
             "--transform_fn_dir", os.path.join(trained["model_dir"], TRANSFORM_FN_DIRNAME),
             "--output", str(out), "--top_k", "5", "--runner", "FnApiRunner",
             "--scorer", "none"])  # the model's own candidates, not the pairwise scorer's choice
    report = evaluate(read_matches(str(out)), set(trained["held_truth"]), mode="dedup")
    assert report["pairs"]["recall"] >= 0.95
    assert report["threshold_sweep"]["best"]["f1"] >= 0.9


def test_train_counts_the_pairwise_scorer_from_the_labels_and_the_job_scores_with_it(trained, tmp_path):
    """train writes scoring_model.json (m/u counted from the training pairs, compared as the job
    compares them, distance cut where true and false pairs overlap); the job takes it as
    --scoring_model on the held-out corpus, and its pairs there beat the unsupervised fit's."""
    from beam_jobs.match_corpora import run_job
    from transforms.io.results import read_manifest, read_matches
    from transforms.learn.evaluate import evaluate
    from transforms.learn.train import SCORING_MODEL_JSON

    scorer = trained["report"]["scorer"]
    print(f"\ntrain scorer: {scorer}")
    assert scorer["training_true_pairs"] > 0 and scorer["training_pairs"] > scorer["training_true_pairs"]
    assert scorer["validation"]["best_pairwise_f1_by_probability"] >= 0.95
    job = ["--input", str(trained["root"] / "heldout.csv"), "--id_field", "rec_id",
           "--text_fields", ",".join(MATCH_FIELDS), "--model_dir", trained["model_dir"],
           "--transform_fn_dir", os.path.join(trained["model_dir"], TRANSFORM_FN_DIRNAME),
           "--top_k", "5", "--runner", "FnApiRunner"]
    f1 = {}
    for name, extra in (("supervised", ["--scoring_model", os.path.join(trained["model_dir"],
                                                                        SCORING_MODEL_JSON)]),
                        ("unsupervised", [])):
        out = str(tmp_path / name)
        run_job(job + extra + ["--output", out])
        method = read_manifest(out)["scoring"]["fit"].get("method", "EM")
        assert (method == "supervised") == (name == "supervised")
        f1[name] = evaluate(read_matches(out), set(trained["held_truth"]), mode="dedup")["pairs"]["f1"]
    print(f"held-out pairwise F1 at match_probability >= 0.5: {f1}")
    assert f1["supervised"] >= f1["unsupervised"]
