"""Tests for transforms.index.scann_lib: the pybind searcher loads without TensorFlow, or fails clearly."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from transforms.index import scann_lib

os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forgets the cached module (and the registered package) for one test, restoring both after."""
    scann_lib.load_scann_pybind.cache_clear()
    monkeypatch.delitem(sys.modules, "scann", raising=False)
    yield
    scann_lib.load_scann_pybind.cache_clear()


def test_loader_returns_a_working_pybind_module():
    pybind = scann_lib.load_scann_pybind()
    assert pybind is scann_lib.load_scann_pybind()  # cached
    db = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    searcher = pybind.create_searcher(db, pybind.builder(db, 3, "dot_product").score_brute_force()
                                      .create_config())
    idx, _ = searcher.search_batched(db[:2], final_num_neighbors=1)
    assert idx[:, 0].tolist() == np.argmax(db[:2] @ db.T, axis=1).tolist()


def test_loader_does_not_import_tensorflow():
    # A fresh process: in this one another test may already have imported TF.
    code = ("import sys; from transforms.index.scann_lib import load_scann_pybind; load_scann_pybind(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))


@pytest.mark.parametrize("spec", [None, importlib.machinery.ModuleSpec("scann", None)],
                         ids=["not_installed", "not_a_package"])
def test_missing_scann_gives_install_hint(fresh_loader, monkeypatch, spec):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "scann" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"pip install scann==1\.4\.2"):
        scann_lib.load_scann_pybind()
    assert "scann" not in sys.modules
