"""Index kinds, the ScaNN parameters of one shard (:class:`ScannParams`) and their rules: when a shard
is too small for a tree, how the tree is trained, how many rows its k-means sees.

Light: constants and pure functions, no ScaNN import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["INDEX_KINDS", "MIN_SCANN_SIZE", "TREE_TRAINING_SCANN", "TREE_TRAINING_SAMPLED", "TREE_TRAININGS",
           "KMEANS_ROWS_PER_LEAF", "ScannParams", "params_dict", "too_small", "kmeans_sample_size"]


INDEX_KINDS = ("scann", "exact")


# Below this many vectors a shard gets an ExactIndex even when ScaNN is asked for. A blocked matmul
# over 2000 vectors is about as fast per query as ScaNN plus rescoring, and ScaNN's k-means (minimum
# cluster size 50 by default) has too little data for the ~2*sqrt(n) leaves the config asks for.
MIN_SCANN_SIZE = 2000


# A tree whose leaves would hold fewer than this many vectors on average partitions nothing useful.
_MIN_VECTORS_PER_LEAF = 2


# How a ScaNN shard's tree is trained (params['tree_training']): ScaNN's own k-means++ (indexes built
# before issue #14 have no key and were built so), or transforms.index.kmeans on a seeded sample.
TREE_TRAINING_SCANN = "scann_kmeans++"


TREE_TRAINING_SAMPLED = "sampled_kmeans"


TREE_TRAININGS = (TREE_TRAINING_SCANN, TREE_TRAINING_SAMPLED)


# The k-means sample is at most this many rows per leaf (see kmeans_sample_size).
KMEANS_ROWS_PER_LEAF = 50


def too_small(size: int, params: dict[str, Any]) -> bool:
    return size < MIN_SCANN_SIZE or size < _MIN_VECTORS_PER_LEAF * int(params["num_leaves"])


def kmeans_sample_size(params: dict[str, Any], size: int) -> int:
    """Rows the tree's k-means trains on: ``training_sample_size``, at most ``KMEANS_ROWS_PER_LEAF``
    per leaf (at 2,000 leaves of 1M skewed vectors, 100k rows trained in a third of 250k's time and
    gave the same recall: 0.9465 vs 0.9427 at 5 leaves searched), never fewer than the leaves."""
    leaves = int(params["num_leaves"])
    return max(leaves, min(int(params["training_sample_size"]), KMEANS_ROWS_PER_LEAF * leaves, size))


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """One shard's ScaNN build and search parameters (``beam_jobs.config.scann_params`` chooses them).

    An index keeps them as the plain dict of :meth:`to_dict` (``index.params``, the shard's
    ``index_config.json``, the run manifest): the field order here is that dict's key order.
    """

    num_leaves: int
    num_leaves_to_search: int
    training_sample_size: int
    quantization: str
    anisotropic_quantization_threshold: float
    reorder: int
    spherical: bool
    training_threads: int
    # SOAR's second leaf per vector (dot-product measures only; None: off).
    soar_lambda: float | None
    tree_training: str

    def to_dict(self) -> dict[str, Any]:
        """The parameters as the index stores them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> ScannParams:
        """The parameters of a stored index (keys the index added, like ``fallback``, are left out;
        an index from before SOAR or issue #14 has no ``soar_lambda`` or ``tree_training``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {"soar_lambda": None, "tree_training": TREE_TRAINING_SCANN, "training_threads": 1,
                  **{k: v for k, v in params.items() if k in known}}
        return cls(**values)


def params_dict(params: ScannParams | Mapping[str, Any]) -> dict[str, Any]:
    """The index's own (mutable) copy of its parameters: a ScannParams' dict, or a dict copied."""
    return params.to_dict() if isinstance(params, ScannParams) else dict(params)
