"""Shared test set-up: TF on the CPU and quiet, every RNG seeded per test.

Set here, before any test module imports TensorFlow (pytest imports conftest.py first), so no test
file carries its own copy. ``CUDA_VISIBLE_DEVICES`` is forced empty (tests run on the CPU even where
a GPU exists, as the GPU paths must); ``TF_CPP_MIN_LOG_LEVEL`` is only defaulted, so a developer can
turn TF's logs back on. Pipelines started as subprocesses inherit both.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEED = 0


@pytest.fixture(autouse=True)
def _seeded_rngs():
    """Python's and numpy's global RNGs, and TF's where a test module has imported it, start from
    one seed in every test (tests that need randomness still pass their own seeded generators)."""
    random.seed(SEED)
    np.random.seed(SEED)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.random.set_seed(SEED)
    yield
