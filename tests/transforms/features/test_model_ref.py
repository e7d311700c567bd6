"""Model fingerprints: content decides, paths do not."""

from __future__ import annotations

import shutil

import pytest

from transforms.features.model_ref import ModelNotFoundError, model_fingerprint


def _fake_saved_model(root, graph: bytes, index: bytes):
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(graph)
    (root / "variables" / "variables.index").write_bytes(index)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
    return root


def test_a_copied_model_keeps_its_fingerprint_and_changed_weights_change_it(tmp_path):
    a = _fake_saved_model(tmp_path / "a", b"graph", b"index crc 1")
    copy = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, copy)
    assert model_fingerprint(str(a)) == model_fingerprint(str(copy) + "/")
    assert model_fingerprint(str(a)).startswith("sha256:")
    (copy / "variables" / "variables.index").write_bytes(b"index crc 2")  # new weights
    assert model_fingerprint(str(a)) != model_fingerprint(str(copy))
    (copy / "variables" / "variables.index").write_bytes(b"index crc 1")
    (copy / "saved_model.pb").write_bytes(b"graph 2")  # new graph or signature
    assert model_fingerprint(str(a)) != model_fingerprint(str(copy))


def test_not_a_saved_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="--model_dir .* no .*saved_model.pb"):
        model_fingerprint(str(tmp_path))


def test_the_builtin_embedder_is_fingerprinted_by_version_and_fields():
    one = model_fingerprint(None, ("name", "city"), ())
    assert one == model_fingerprint(None, ("name", "city"), ())
    assert one.startswith("builtin:default_embedder-v")
    assert one != model_fingerprint(None, ("city", "name"), ())
    assert one != model_fingerprint(None, ("name", "city"), ("age",))


def test_a_keras_file_is_fingerprinted_by_its_bytes(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK zip of config and weights")
    copy = tmp_path / "copy" / "M.keras"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    assert model_fingerprint(str(model)) == model_fingerprint(str(copy))
    assert model_fingerprint(str(model)).startswith("sha256:")
    copy.write_bytes(b"PK zip of config and other weights")
    assert model_fingerprint(str(model)) != model_fingerprint(str(copy))
    with pytest.raises(ModelNotFoundError, match="--model_dir .*gone.keras: no such Keras model file"):
        model_fingerprint(str(tmp_path / "gone.keras"))
