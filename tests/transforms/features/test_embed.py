"""The SavedModel handler against direct model calls, a user Keras model, and the default embedder's
quality on generated person records (preprocess + embed end to end under TestPipeline)."""

from __future__ import annotations

import glob  # noqa: E402
import os
import pickle  # noqa: E402
import uuid  # noqa: E402

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.testing import test_pipeline  # noqa: E402

from transforms.common.schema import FeatureBatch, VectorBatch  # noqa: E402
from transforms.features.default_embedder import embedding_dim, export_default_model  # noqa: E402
from transforms.features.embed import (
    EmbeddedBatch,
    EmbedRecords,
    TFSavedModelHandler,
    _ToVectorBatchFn,
    features_to_numpy,
)
from transforms.features.preprocess import AnalyzeAndTransformFeatures, TransformedBatch, feature_key
from transforms.testing import people  # noqa: E402

TEXT = ("name", "city")
NUMERIC = ("age",)


def _transformed(n: int, seed: int) -> TransformedBatch:
    """Random preprocessed-looking rows: variable-length id/weight lists per text field."""
    rng = np.random.default_rng(seed)
    columns, names = [], []
    for f in TEXT:
        for kind in ("grams", "words"):
            lengths = rng.integers(0, 12 if kind == "grams" else 3, size=n)
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            total = int(lengths.sum())
            ids = pa.array(rng.integers(0, 2**20, size=total), pa.int64())
            weights = pa.array(rng.uniform(0.1, 5.0, size=total).astype(np.float32))
            columns += [pa.LargeListArray.from_arrays(offsets, ids),
                        pa.LargeListArray.from_arrays(offsets, weights)]
            names += [feature_key(f, kind), feature_key(f, kind[:-1] + "_weights")]
        missing = np.zeros(n, np.float32)
        columns.append(pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1), pa.int64()),
                                                     pa.array(missing)))
        names.append(feature_key(f, "missing"))
    z = rng.normal(size=n).astype(np.float32)
    missing = (rng.random(n) < 0.2).astype(np.float32)
    for kind, values in (("z", np.where(missing > 0, 0, z).astype(np.float32)), ("missing", missing)):
        columns.append(pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1), pa.int64()),
                                                     pa.array(values)))
        names.append(feature_key("age", kind))
    ids = np.array([f"r{seed}-{i}" for i in range(n)], dtype=object)
    return TransformedBatch(ids=ids, origins=ids, table=pa.RecordBatch.from_arrays(columns, names=names))


@pytest.fixture(scope="module")
def default_model_dir(tmp_path_factory):
    return export_default_model(str(tmp_path_factory.mktemp("model") / "default"), TEXT, NUMERIC)


def _direct(model_dir: str, batch: TransformedBatch) -> np.ndarray:
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    feed = features_to_numpy(batch.table, dict(fn.structured_input_signature[1]))
    out = fn(**{k: tf.constant(v) for k, v in feed.items()})
    return next(iter(out.values())).numpy()


def test_features_to_numpy_pads_lists_and_checks_shapes():
    table = pa.RecordBatch.from_arrays(
        [pa.array([[1, 2], [3], []], pa.large_list(pa.int64())), pa.array([[0.5], [1.0], [2.0]])],
        names=["ids", "x"])
    specs = {"ids": tf.TensorSpec([None, None], tf.int64), "x": tf.TensorSpec([None], tf.float32)}
    out = features_to_numpy(table, specs)
    np.testing.assert_array_equal(out["ids"], [[1, 2], [3, 0], [0, 0]])
    np.testing.assert_array_equal(out["x"], np.array([0.5, 1.0, 2.0], np.float32))
    assert out["x"].dtype == np.float32
    with pytest.raises(ValueError, match="one value per row"):
        features_to_numpy(table, {"ids": tf.TensorSpec([None], tf.int64)})
    with pytest.raises(ValueError, match="not a preprocessed feature"):
        features_to_numpy(table, {"nope": tf.TensorSpec([None], tf.float32)})


def test_handler_matches_a_direct_model_call(default_model_dir):
    handler = TFSavedModelHandler(default_model_dir, min_batch_size=8, max_batch_size=256)
    assert handler.batch_elements_kwargs()["max_batch_size"] == 256
    assert handler.batch_elements_kwargs()["element_size_fn"](_transformed(7, 0)) == 7  # rows, not elements
    assert not handler.share_model_across_processes()
    model = handler.load_model()
    batches = [_transformed(300, 1), _transformed(0, 2), _transformed(500, 3)]
    results = handler.run_inference(batches, model)  # 800 rows, 4 model calls of <= 256 rows
    for batch, result in zip(batches, results, strict=True):
        assert result.ids is batch.ids and result.table is batch.table
        if len(batch) == 0:
            assert len(result.vectors) == 0
            continue
        expected = _direct(default_model_dir, batch)
        assert result.vectors.shape == (len(batch), embedding_dim(TEXT, NUMERIC))
        np.testing.assert_allclose(result.vectors, expected, atol=2e-6)
        norms = np.linalg.norm(result.vectors, axis=1)  # rows with no terms and no age: zero
        assert (np.isclose(norms, 1.0, atol=1e-5) | (norms == 0)).all() and (norms > 0).mean() > 0.9


def test_a_user_keras_model_runs_through_the_same_handler(tmp_path):
    import keras  # Keras 3, as users write models today
    import tf_keras  # and Keras 2 (what tf.keras is here): both export plain SavedModels

    keras.utils.set_random_seed(0)
    z = keras.Input(shape=(), name=feature_key("age", "z"))
    missing = keras.Input(shape=(), name=feature_key("age", "missing"))
    weights = keras.Input(shape=(None,), name=feature_key("name", "gram_weights"))
    total = keras.layers.Lambda(lambda w: keras.ops.sum(w, axis=1, keepdims=True))(weights)
    stacked = keras.layers.Concatenate()([keras.layers.Reshape((1,))(z), keras.layers.Reshape((1,))(missing),
                                          total])
    model = keras.Model([z, missing, weights], keras.layers.Dense(4)(stacked))
    model.export(str(tmp_path / "keras3"))
    legacy_in = tf_keras.Input(shape=(), name=feature_key("age", "z"))
    legacy = tf_keras.Model(legacy_in, tf_keras.layers.Dense(3)(tf_keras.layers.Reshape((1,))(legacy_in)))
    legacy.export(str(tmp_path / "keras2"))

    batch = _transformed(50, 4)
    handler = TFSavedModelHandler(str(tmp_path / "keras3"))
    (result,) = handler.run_inference([batch], handler.load_model())
    feed = features_to_numpy(batch.table, {
        feature_key("age", "z"): tf.TensorSpec([None], tf.float32),
        feature_key("age", "missing"): tf.TensorSpec([None], tf.float32),
        feature_key("name", "gram_weights"): tf.TensorSpec([None, None], tf.float32)})
    expected = model([feed[feature_key("age", "z")], feed[feature_key("age", "missing")],
                      feed[feature_key("name", "gram_weights")]])
    np.testing.assert_allclose(result.vectors, np.asarray(expected), rtol=1e-5, atol=1e-5)

    handler = TFSavedModelHandler(str(tmp_path / "keras2"))
    (result,) = handler.run_inference([batch], handler.load_model())
    expected = legacy(feed[feature_key("age", "z")]).numpy()
    np.testing.assert_allclose(result.vectors, expected, rtol=1e-5, atol=1e-5)


def _feature_batches(records: list[dict], prefix: str, size: int = 500) -> list[FeatureBatch]:
    out = []
    for start in range(0, len(records), size):
        chunk = records[start:start + size]
        table = pa.RecordBatch.from_arrays(
            [pa.array([r.get(f) or None for r in chunk], pa.string()) for f in people.MATCH_FIELDS],
            names=list(people.MATCH_FIELDS))
        ids = np.array([r["rec_id"] for r in chunk], dtype=object)
        origins = np.array([f"{prefix}#{start + i}" for i in range(len(chunk))], dtype=object)
        out.append(FeatureBatch(ids=ids, origins=origins, table=table))
    return out


def _dump(element, out_dir: str) -> None:
    with open(os.path.join(out_dir, f"{uuid.uuid4().hex}.pkl"), "wb") as fh:
        pickle.dump(element, fh)


def _load(out_dir: str) -> list:
    out = []
    for path in glob.glob(os.path.join(out_dir, "*.pkl")):
        with open(path, "rb") as fh:
            out.append(pickle.load(fh))
    return out


def _stack(batches) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([b.ids for b in batches]), np.concatenate([b.vectors for b in batches]))


@pytest.mark.slow
def test_default_embedder_finds_the_true_partner(tmp_path):
    """Link 600 generated people (typos, nicknames, swaps, moves, missing values, reformatted
    dates) to their corrupted duplicates: the true partner must be the nearest for >= 95 %."""
    a, b, links = people.make_link_corpora(600, seed=0)
    junk = {"rec_id": "junk", **{f: "---" for f in people.MATCH_FIELDS}}  # nothing left to embed
    dirs = {name: str(tmp_path / name) for name in ("q", "c", "dead")}
    for d in dirs.values():
        os.makedirs(d)
    with test_pipeline.TestPipeline() as p:
        corpora = {"queries": p | "CreateQueries" >> beam.Create(_feature_batches(b + [junk], "b")),
                   "candidates": p | "CreateCandidates" >> beam.Create(_feature_batches(a, "a"))}
        pre = corpora | "Preprocess" >> AnalyzeAndTransformFeatures(
            text_fields=people.MATCH_FIELDS, temp_dir=str(tmp_path / "tft"))
        run_dir = str(tmp_path / "run")
        embedded = {role: getattr(pre, role) | f"Embed{role.title()}" >> EmbedRecords(
            run_dir=run_dir, text_fields=people.MATCH_FIELDS, min_batch_size=64, max_batch_size=4096)
            for role in ("queries", "candidates")}
        _ = embedded["queries"].vectors | "DumpQ" >> beam.Map(_dump, dirs["q"])
        _ = embedded["candidates"].vectors | "DumpC" >> beam.Map(_dump, dirs["c"])
        dead = (embedded["queries"].dead_letters, embedded["candidates"].dead_letters,
                pre.dead_letters) | "FlattenDead" >> beam.Flatten()
        _ = dead | "DumpDead" >> beam.Map(_dump, dirs["dead"])

    assert os.path.exists(os.path.join(run_dir, "default_model", "saved_model.pb"))
    assert [(d.stage, d.record_id) for d in _load(dirs["dead"])] == [("embed", "junk")]
    q_ids, q_vec = _stack(_load(dirs["q"]))
    c_ids, c_vec = _stack(_load(dirs["c"]))
    assert len(q_ids) == len(b) and len(c_ids) == len(a)
    assert q_vec.shape[1] == embedding_dim(people.MATCH_FIELDS, ())
    row_of = {cid: i for i, cid in enumerate(c_ids)}
    partner = {bid: aid for aid, bid in links}
    q_rows = [i for i, qid in enumerate(q_ids) if qid in partner]
    target = np.array([row_of[partner[q_ids[i]]] for i in q_rows])
    scores = q_vec[q_rows] @ c_vec.T
    rank = (scores > scores[np.arange(len(q_rows)), target][:, None]).sum(axis=1)
    recall_1, recall_10 = (rank < 1).mean(), (rank < 10).mean()
    print(f"default embedder on {len(q_rows)} generated links: recall@1 {recall_1:.4f}, "
          f"recall@10 {recall_10:.4f}")
    assert recall_1 >= 0.95
    assert recall_10 >= 0.99


def test_non_finite_and_zero_vectors_become_dead_letters():
    batch = _transformed(4, 5)
    vectors = np.array([[0.6, 0.8], [np.nan, 1.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    out = list(_ToVectorBatchFn().process(EmbeddedBatch(batch.ids, batch.origins, vectors, batch.table)))
    (good,) = [o for o in out if isinstance(o, VectorBatch)]
    dead = [o.value for o in out if not isinstance(o, VectorBatch)]
    assert list(good.ids) == [batch.ids[0], batch.ids[3]]
    np.testing.assert_array_equal(good.vectors, vectors[[0, 3]])
    assert [(d.stage, d.record_id) for d in dead] == [("embed", batch.ids[1]), ("embed", batch.ids[2])]
    assert "not finite" in dead[0].error and "zero vector" in dead[1].error
    assert feature_key("name", "grams") in dead[0].payload  # the row's features are kept
