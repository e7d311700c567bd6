"""Models of the user's own: signature inspection, raw text and image inputs, the shared handler.

The models are built from code with seeded weights (tests/byo_models.py); the job's vectors must equal
a direct call of the model on the same inputs.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.pvalue import TaggedOutput

from tests import byo_models
from transforms.common.schema import FeatureBatch, RawBatch
from transforms.features.embed import TFSavedModelHandler, _ToVectorBatchFn
from transforms.features.model_ref import model_fingerprint
from transforms.features.model_signature import InputSpec, ModelInput, read_model_inputs, resolve_model_input
from transforms.features.raw_inputs import _ImageInputsFn, _TextInputsFn, image_kind, text_inputs
from transforms.io.validate import validate_features

FIELDS = ("name", "city")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    text = byo_models.text_model()
    text.export(str(root / "text"), verbose=False)
    text.save(str(root / "text.keras"))
    cnn = byo_models.image_model()
    cnn.export(str(root / "cnn"), verbose=False)
    cnn.save(str(root / "cnn.keras"))
    byo_models.export_encoded_image_model(str(root / "encoded"))
    return {"root": root, "text_keras": text, "cnn_keras": cnn, "text": str(root / "text"),
            "text.keras": str(root / "text.keras"), "cnn": str(root / "cnn"),
            "cnn.keras": str(root / "cnn.keras"), "encoded": str(root / "encoded")}


def _resolve(path, *, text_fields=FIELDS, numeric_fields=(), image_field=None, features=()):
    return resolve_model_input(read_model_inputs(path), model_dir=path, text_fields=text_fields,
                               numeric_fields=numeric_fields, image_field=image_field,
                               feature_names=features)


def _split(outputs):
    good = [o for o in outputs if not isinstance(o, TaggedOutput)]
    dead = [o.value for o in outputs if isinstance(o, TaggedOutput)]
    return good, dead


def _embed(path, batches, max_rows=4096):
    """The handler's vectors for ModelInputBatch elements, as RunInference would get them."""
    handler = TFSavedModelHandler(path, min_batch_size=1, max_batch_size=4096, call_rows=max_rows)
    model = handler.load_model()
    results = list(handler.run_inference(batches, model))
    out = []
    for r in results:
        vb, dead = _split(list(_ToVectorBatchFn().process(r)))
        assert not dead
        out.extend(vb)
    return out


def _feature_batch(columns: dict, ids=None) -> FeatureBatch:
    n = len(next(iter(columns.values())))
    ids = np.array(ids or [f"r{i}" for i in range(n)], dtype=object)
    table = pa.RecordBatch.from_pydict(columns)
    return FeatureBatch(ids=ids, origins=np.array([f"f#{i}" for i in range(n)], dtype=object),
                        table=table)


# --- inspection at launch


def test_the_signature_decides_the_kind_and_a_mismatch_names_the_inputs(models):
    for path in (models["text"], models["text.keras"]):
        assert read_model_inputs(path) == [InputSpec("text", "string", (None,))]
        assert _resolve(path) == ModelInput("text", "text", "string")
    for path in (models["cnn"], models["cnn.keras"]):
        assert read_model_inputs(path) == [InputSpec("image", "float32", (None, 16, 16, 3))]
        assert _resolve(path, text_fields=(), image_field="photo") == ModelInput(
            "image", "image", "float32", 16, 16, 3)
    assert _resolve(models["encoded"], text_fields=(), image_field="photo") == ModelInput(
        "image", "image_bytes", "string")
    assert _resolve(models["encoded"], text_fields=(), image_field="photo").encoded_images

    import keras

    free = keras.Sequential([keras.Input((None, None, 3), name="pixels"), keras.layers.Conv2D(2, 3),
                             keras.layers.GlobalAveragePooling2D()])
    free.save(str(models["root"] / "free.keras"))
    with pytest.raises(ValueError, match=r"--image_field photo: .*fixed height and width.* takes "
                                         r"\{pixels: float32\[None, None, None, 3\]\}"):
        _resolve(str(models["root"] / "free.keras"), text_fields=(), image_field="photo")
    with pytest.raises(ValueError, match=r"--model_dir .*cnn: its serving signature takes "
                                         r"\{image: float32\[None, 16, 16, 3\]\}.*give --image_field"):
        _resolve(models["cnn"])
    with pytest.raises(ValueError, match="--numeric_fields: .* takes raw text only"):
        _resolve(models["text"], numeric_fields=("age",))
    with pytest.raises(ValueError, match="--text_fields: .* takes raw text"):
        _resolve(models["text"], text_fields=())


def test_a_feature_model_resolves_as_features_and_strangers_are_refused(tmp_path):
    class _Features(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="name__missing"),
                                      tf.TensorSpec([None, None], tf.int64, name="name__grams")])
        def serve(self, name__missing, name__grams):
            return {"embedding": tf.stack([name__missing, tf.cast(tf.shape(name__grams)[1], tf.float32)
                                           + 0 * name__missing], axis=1)}

    module = _Features()
    tf.saved_model.save(module, str(tmp_path / "f"), signatures=module.serve)
    features = ("name__grams", "name__missing", "name__words")
    assert _resolve(str(tmp_path / "f"), text_fields=("name",), features=features).kind == "features"
    with pytest.raises(ValueError, match=r"takes \{name__grams: int64\[None, None\], name__missing: "
                                         r"float32\[None\]\}, which are not features"):
        _resolve(str(tmp_path / "f"), text_fields=("city",), features=("city__grams",))


# --- raw text


def test_joined_text_vectors_equal_a_direct_call_and_empty_rows_are_embed_dead_letters(models):
    batch = _feature_batch({"name": ["Alice Smith", None, "bob", None, "Émile Zola"],
                            "city": ["London", "Paris", None, None, "paris"]})
    mi = _resolve(models["text"])
    good, dead = _split(list(_TextInputsFn(mi, FIELDS, "join", " | ").process(batch)))
    assert [(d.stage, d.record_id) for d in dead] == [("embed", "r3")]
    assert "no text to embed" in dead[0].error and '"name": null' in dead[0].payload
    (inputs,) = good
    assert inputs.inputs["text"].tolist() == ["Alice Smith | London", "Paris", "bob", "Émile Zola | paris"]
    want = models["text_keras"](tf.constant(inputs.inputs["text"].tolist())).numpy()
    for path in (models["text"], models["text.keras"]):
        for max_rows in (4096, 3):  # one call, or several calls of at most 3 rows
            (vb,) = _embed(path, [inputs], max_rows)
            assert vb.ids.tolist() == ["r0", "r1", "r2", "r4"]
            np.testing.assert_allclose(vb.vectors, want, rtol=1e-5, atol=1e-6)


def test_mean_pooling_embeds_each_field_alone(models):
    batch = _feature_batch({"name": ["alice", None, "carol"], "city": ["leeds", "york", None]})
    strings, segments, empty = text_inputs(batch.table, FIELDS, "mean", " ")
    assert strings.tolist() == ["alice", "leeds", "york", "carol"] and segments.tolist() == [0, 0, 1, 2]
    assert not empty.any()
    mi = _resolve(models["text"])
    (inputs,), _ = _split(list(_TextInputsFn(mi, FIELDS, "mean", " ").process(batch)))
    one = models["text_keras"](tf.constant(strings.tolist())).numpy()
    want = np.stack([(one[0] + one[1]) / 2, one[2], one[3]])
    # Two elements in one RunInference batch: the second one's segments count its own rows.
    vbs = _embed(models["text"], [inputs, inputs], max_rows=3)
    vectors = np.concatenate([v.vectors for v in vbs])
    np.testing.assert_allclose(vectors, np.concatenate([want, want]), rtol=1e-5, atol=1e-6)


def test_empty_text_rows_reach_the_embed_stage_not_preprocess():
    raw = RawBatch("f.jsonl", 0, rows=[{"id": "a", "name": "  ", "city": None}, {"id": "b", "name": "x"}])
    batches, dead = validate_features(raw, role="input", id_field="id", text_fields=FIELDS,
                                      numeric_fields=(), allow_empty=True)
    assert not dead and batches[0].ids.tolist() == ["a", "b"]
    _, dead = validate_features(raw, role="input", id_field="id", text_fields=FIELDS, numeric_fields=())
    assert [(d.stage, d.record_id) for d in dead] == [("preprocess", "a")]  # the built-in path, as before
    mi = ModelInput("text", "text", "string")
    _, dead = _split(list(_TextInputsFn(mi, FIELDS, "mean", " ").process(batches[0])))
    assert [(d.stage, d.record_id) for d in dead] == [("embed", "a")]


# --- images


def _image_batch(values, ids=None) -> FeatureBatch:
    raw = RawBatch("f.parquet", 0, table=pa.RecordBatch.from_pydict(
        {"id": ids or [f"i{k}" for k in range(len(values))], "photo": values}))
    batches, dead = validate_features(raw, role="input", id_field="id", text_fields=(), numeric_fields=(),
                                      image_field="photo", allow_empty=True)
    assert not dead
    return batches[0]


def _image_fn(model_input):
    fn = _ImageInputsFn(model_input, "photo")
    fn.setup()
    return fn


def test_image_vectors_equal_a_direct_call_and_bad_images_are_embed_dead_letters(models, tmp_path):
    images = byo_models.random_images(6, seed=4, sizes=[(16, 16), (16, 16), (20, 24)])
    encoded = [byo_models.encode_png(im) for im in images]
    jpeg = tf.io.encode_jpeg(images[3]).numpy()
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "broken.png").write_bytes(encoded[0][:50])
    assert image_kind(encoded[0]) == "PNG" and image_kind(jpeg) == "JPEG"
    assert image_kind(b"BMW/photos/1.png") is None
    values = [encoded[0], encoded[1], encoded[2], str(tmp_path / "a.jpg").encode(),
              encoded[4][:40],  # a truncated PNG
              b"no such image.png", str(tmp_path / "broken.png").encode(), str(tmp_path).encode(),
              None]
    batch = _image_batch(values)
    mi = _resolve(models["cnn"], text_fields=(), image_field="photo")
    good, dead = _split(list(_image_fn(mi).process(batch)))
    assert {d.record_id: d.stage for d in dead} == {f"i{k}": "embed" for k in (4, 5, 6, 7, 8)}
    reasons = {d.record_id: d.error for d in dead}
    assert reasons["i4"].startswith("cannot decode the image") and "not a readable file" in reasons["i5"]
    assert reasons["i6"].startswith("cannot decode") and "not a readable file" in reasons["i7"]
    assert reasons["i8"] == "no image in field 'photo'"
    assert "bytes of PNG" in next(d.payload for d in dead if d.record_id == "i4")
    (inputs,) = good
    assert inputs.ids.tolist() == ["i0", "i1", "i2", "i3"]
    pixels = inputs.inputs["image"]
    assert pixels.shape == (4, 16, 16, 3) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[:2], np.stack(images[:2]).astype(np.float32))  # no resize
    np.testing.assert_allclose(pixels[2], tf.image.resize(images[2], [16, 16]).numpy(), atol=1e-4)
    np.testing.assert_allclose(pixels[3], tf.image.resize(tf.io.decode_jpeg(jpeg), [16, 16]).numpy(),
                               atol=1e-4)
    want = models["cnn_keras"](pixels).numpy()
    direct = models["cnn_keras"](np.stack(images[:2]).astype(np.float32)).numpy()
    for path in (models["cnn"], models["cnn.keras"]):
        (vb,) = _embed(path, [inputs])
        np.testing.assert_allclose(vb.vectors, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vb.vectors[:2], direct, rtol=1e-5, atol=1e-6)


def test_an_encoded_image_model_gets_the_bytes_after_a_decoding_check(models):
    images = byo_models.random_images(3, seed=5)
    encoded = [byo_models.encode_png(im) for im in images]
    batch = _image_batch([encoded[0], b"\x89PNG\r\n\x1a\n broken", encoded[2]])
    mi = _resolve(models["encoded"], text_fields=(), image_field="photo")
    good, dead = _split(list(_image_fn(mi).process(batch)))
    assert [(d.stage, d.record_id) for d in dead] == [("embed", "i1")]
    (inputs,) = good
    assert inputs.inputs["image_bytes"].tolist() == [encoded[0], encoded[2]]
    served = tf.saved_model.load(models["encoded"]).signatures["serving_default"]
    want = served(image_bytes=tf.constant([encoded[0], encoded[2]]))["embedding"].numpy()
    (vb,) = _embed(models["encoded"], [inputs])
    np.testing.assert_allclose(vb.vectors, want, rtol=1e-6)


def test_image_values_validate_as_bytes_or_paths():
    raw = RawBatch("f.jsonl", 0, rows=[{"id": "a", "photo": "gs://b/x.jpg "}, {"id": "b", "photo": 3},
                                       {"id": "c", "photo": [b"\x89PNG..."]}, {"id": "d"}])
    (batch,), dead = validate_features(raw, role="input", id_field="id", text_fields=(),
                                       numeric_fields=(), image_field="photo", allow_empty=True)
    assert batch.table.column("photo").to_pylist() == [b"gs://b/x.jpg", b"\x89PNG...", None]
    assert [(d.stage, d.record_id) for d in dead] == [("preprocess", "b")]
    assert "expected image bytes or a path" in dead[0].error


def test_a_keras_file_fingerprint_is_its_bytes(models):
    assert model_fingerprint(models["text.keras"]) == model_fingerprint(models["text.keras"])
    assert model_fingerprint(models["text.keras"]) != model_fingerprint(models["cnn.keras"])


# --- launch


def test_a_model_the_flags_cannot_feed_fails_at_launch_with_exit_code_2(models, tmp_path, capsys):
    from beam_jobs.match_corpora import main

    (tmp_path / "a.csv").write_text("id,name,photo\n1,x,p.png\n")
    base = ["--input", str(tmp_path / "a.csv"), "--runner", "FnApiRunner"]
    cases = [
        (["--text_fields", "name", "--model_dir", models["cnn"]],
         r"--model_dir .*cnn: its serving signature takes \{image: float32\[None, 16, 16, 3\]\}"),
        (["--image_field", "photo", "--model_dir", models["cnn"], "--transform_fn_dir", "t"],
         "--transform_fn_dir"),
        (["--image_field", "photo", "--model_dir", str(tmp_path / "gone.keras")],
         "no such Keras model file"),
        (["--text_fields", "name", "--model_dir", models["text"], "--transform_fn_dir",
          str(tmp_path)], "--transform_fn_dir: .* takes raw text"),
    ]
    for i, (flags, message) in enumerate(cases):
        code = main(base + ["--output", str(tmp_path / f"out{i}")] + flags)
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("corpus-match: configuration error")
        assert re.search(message, err), err
        assert not (tmp_path / f"out{i}").exists()  # nothing ran, nothing was written


def test_a_kept_index_remembers_how_raw_inputs_were_fed():
    import dataclasses

    from beam_jobs.config import ConfigError, config_from_flags
    from beam_jobs.kept_index import check_kept_index
    from beam_jobs.kept_index import index_static as _index_static

    cfg = config_from_flags({"queries": "q", "candidates": "c", "output": "o", "text_fields": "name",
                             "model_dir": "m", "text_pooling": "mean"})
    cfg = dataclasses.replace(cfg, model_input=ModelInput("text", "text", "string"))
    kept = _index_static(cfg, "sha256:abc")
    assert kept["transform_fn_used"] is None and kept["model_input"]["kind"] == "text"
    check_kept_index(dataclasses.replace(cfg, index_dir="o"), kept, "sha256:abc")
    joined = dataclasses.replace(cfg, index_dir="o", text_pooling=None)
    with pytest.raises(ConfigError, match="--text_pooling 'mean'; this run has --text_pooling 'join'"):
        check_kept_index(joined, kept, "sha256:abc")
    # the defaults, given or not, are the same feed
    kept = _index_static(joined, "sha256:abc")
    assert (kept["text_pooling"], kept["text_separator"]) == ("join", " ")
    check_kept_index(dataclasses.replace(joined, text_pooling="join", text_separator=" "), kept,
                     "sha256:abc")


def test_tf_example_files_keep_the_image_field_as_bytes(models, tmp_path):
    from transforms.io.read_corpus import _read_rows
    from transforms.io.tfrecord import encode_example, frame_tfrecord

    images = byo_models.random_images(2, seed=6)
    encoded = [byo_models.encode_png(im) for im in images]
    with open(tmp_path / "photos.tfrecord", "wb") as fh:
        for i, data in enumerate(encoded):
            fh.write(frame_tfrecord(encode_example({"id": f"t{i}", "photo": data, "title": "x"})))
    (raw,) = list(_read_rows(str(tmp_path / "photos.tfrecord"), "tfrecord", 10, frozenset({"photo"})))
    assert [row["photo"] for row in raw.rows] == [[e] for e in encoded]
    assert raw.rows[0]["title"] == ["x"]  # other bytes features still decode as text
    (plain,) = list(_read_rows(str(tmp_path / "photos.tfrecord"), "tfrecord", 10))
    assert isinstance(plain.rows[0]["photo"][0], str)  # without binary_fields: UTF-8 text, as before
    (batch,), dead = validate_features(raw, role="input", id_field="id", text_fields=(), numeric_fields=(),
                                       image_field="photo", allow_empty=True)
    mi = _resolve(models["cnn"], text_fields=(), image_field="photo")
    (inputs,), dead = _split(list(_image_fn(mi).process(batch)))
    assert not dead
    np.testing.assert_array_equal(inputs.inputs["image"], np.stack(images).astype(np.float32))
