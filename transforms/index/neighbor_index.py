"""Nearest-neighbour index of one candidate shard: ScaNN, or its brute-force twin.

``build_index`` turns a shard's prepared vectors into a :class:`NeighborIndex`; ``search`` returns
each query's top-k positions in the shard with EXACT float64 distances (smaller is closer, ties broken
by position), whatever the index kind: ScaNN only proposes candidates, which are then rescored from
the kept float32 vectors, so the two kinds differ in recall only, never in the distances they report.

Distances: ``cosine`` (1 - dot of L2-normalised vectors), ``dot`` (-dot) and ``squared_l2``.
:func:`prepare_vectors` must be applied to both corpora first (float32 copy, cosine normalisation,
and the mask of rows that cannot be indexed).

Saved layout (a local directory; copying it to and from remote storage is the caller's job)::

    index_config.json   kind, distance, dims, size, params, format_version, vectors_file (written last)
    vectors.npy         the prepared float32 vectors, used for exact rescoring; not written when
                        ScaNN's own scann/dataset.npy (its float dataset, kept for reordering or
                        brute-force scoring) holds the same array byte for byte: ``vectors_file``
                        names the file (absent: vectors.npy), and such an index is format_version 2
                        so that code reading only version 1 refuses it clearly
    scann/              ScaNN's own assets, serialised with relative paths so the directory can move

Pure numpy + scann: no Beam, no TensorFlow. ScaNN is imported lazily (through
:mod:`transforms.index.scann_lib`) only when a ScaNN index is built or loaded.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import time
from typing import Any

import numpy as np

from transforms.common.schema import DISTANCES
from transforms.common.vectors import check_distance
from transforms.index.params import (
    INDEX_KINDS,
    TREE_TRAINING_SAMPLED,
    TREE_TRAINING_SCANN,
    TREE_TRAININGS,
    ScannParams,
    params_dict,
    too_small,
)
from transforms.index.scann import SCANN_DATASET_FILE, scann_config, scann_with_trained_tree

__all__ = ["DISTANCES", "exact_distances", "NeighborIndex", "ScannIndex", "ExactIndex", "build_index"]

_LOGGER = logging.getLogger(__name__)


_CONFIG_FILE = "index_config.json"
_VECTORS_FILE = "vectors.npy"
_SCANN_DIR = "scann"
# 1: vectors in vectors.npy; 2: in the file index_config.json's vectors_file names.
_FORMAT_VERSION = 1
_FORMAT_VERSION_VECTORS_FILE = 2
# Rows compared per step when checking that ScaNN's dataset is our vectors byte for byte.
_COMPARE_BLOCK = 65_536


# Exact search scores blocks of at most _QUERY_BLOCK queries against tiles of the shard, one tile
# at a time, so one block of float32 scores holds at most _SCORE_BLOCK_ELEMENTS floats (128 MiB)
# however large the shard, and each tile is read once per block of queries (a few queries against
# a whole large shard would re-read all its vectors for each few).
_QUERY_BLOCK = 256
_SCORE_BLOCK_ELEMENTS = 1 << 25
# Gathered float64 candidate vectors per rescoring block (64 MiB).
_RESCORE_BLOCK_ELEMENTS = 1 << 23
_NO_POSITION = -1


def _json_scalar(value: Any) -> Any:
    # numpy scalars (e.g. sizes computed with numpy) are not JSON; store them as Python ones.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"index params must be JSON-serialisable, got {type(value).__name__}: {value!r}")


def _fetch_count(k: int, size: int) -> int:
    """Candidates fetched per query before exact rescoring.

    The margin over k absorbs float32 rounding (exact search) and quantisation error (ScaNN), so
    the rescored top-k does not depend on which approximate scores happened to round which way.
    """
    return min(size, 2 * k + 10)


def exact_distances(distance: str, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Row-wise exact distances in float64: queries [n, d] vs candidates [n, k, d] -> [n, k].

    ``cosine`` is 1 - dot (inputs already normalised by :func:`prepare_vectors`), ``dot`` is -dot,
    ``squared_l2`` is the sum of squared differences (not the norm expansion, which cancels badly).
    What the job reports goes through :func:`clamp_distances` (in ``transforms.search.search`` and the
    audit's exact search).
    Smaller is closer.
    """
    check_distance(distance)
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    if q.ndim != 2 or c.ndim != 3 or c.shape[0] != q.shape[0] or c.shape[2] != q.shape[1]:
        raise ValueError(f"expected queries [n, d] and candidates [n, k, d], got {q.shape} and "
                         f"{c.shape}")
    if distance == "squared_l2":
        diff = c - q[:, None, :]
        return np.einsum("nkd,nkd->nk", diff, diff)
    dots = np.matmul(c, q[:, :, None])[:, :, 0]
    return 1.0 - dots if distance == "cosine" else -dots


def clamp_distances(distance: str, dist: np.ndarray) -> np.ndarray:
    """Clamps distances of prepared vectors to their valid range, in place: cosine to [0, 2] (unit
    vectors' dot products round past +-1: identical vectors gave 1 - dot = -3.8e-08), squared_l2 to
    >= 0; dot is unbounded. Deterministic, and a no-op on distances already in range."""
    if distance == "cosine":
        np.clip(dist, 0.0, 2.0, out=dist)
    elif distance == "squared_l2":
        np.maximum(dist, 0.0, out=dist)
    return dist


# Columns per block when picking the best few of a score row by block minima (see _smallest_columns).
_SELECT_BLOCK = 256


def _smallest_columns(scores: np.ndarray, fetch: int) -> np.ndarray:
    """Column positions of the ``fetch`` smallest scores per row, unordered, int64 [n, fetch].

    The same set as ``np.argpartition(scores, fetch - 1)[:, :fetch]`` (up to which of several equal
    scores at the cut-off is kept), about 9x faster on long rows: the best ``fetch`` scores lie in
    the ``fetch`` column blocks with the smallest minima (any block left out has ``fetch`` blocks
    whose minima are no larger, each holding a score at least as good as everything in it), so
    only those blocks are partitioned.
    """
    n, size = scores.shape
    width = _SELECT_BLOCK
    full = size // width
    if full + (size > full * width) < 4 * fetch:  # short rows: blocks would not narrow much
        return np.argpartition(scores, fetch - 1, axis=1)[:, :fetch].astype(np.int64)
    minima = scores[:, :full * width].reshape(n, full, width).min(axis=2)
    if size > full * width:  # a last, partial block
        minima = np.concatenate([minima, scores[:, full * width:].min(axis=1, keepdims=True)], axis=1)
    best = np.argpartition(minima, fetch - 1, axis=1)[:, :fetch]
    cols = (best[:, :, None] * width + np.arange(width)).reshape(n, -1)
    inside = cols < size
    sub = np.take_along_axis(scores, np.minimum(cols, size - 1), axis=1)
    # Past the end of the partial block: never chosen (fetch - 1 full blocks + 1 column suffice).
    sub[~inside] = np.inf
    pick = np.argpartition(sub, fetch - 1, axis=1)[:, :fetch]
    return np.take_along_axis(cols, pick, axis=1).astype(np.int64)


def _exact_candidates(distance: str, vectors: np.ndarray, sq_norms: np.ndarray | None,
                      queries: np.ndarray, fetch: int) -> np.ndarray:
    """The ``fetch`` nearest positions per query by float32 brute force, unordered, int64 [n, fetch].

    Uses a rank-equivalent float32 score (-dot, or |v|^2 - 2 q.v for squared_l2, dropping the
    per-query |q|^2); the exact rescoring afterwards repairs its rounding. Among vectors tied exactly
    at the cut-off, which ones are kept is unspecified (but deterministic for the same input).
    Each block of queries is scored tile by tile; a tile's best ``fetch`` join the block's best so far.
    """
    size, n = len(vectors), len(queries)
    if fetch >= size:
        return np.broadcast_to(np.arange(size, dtype=np.int64), (n, size)).copy()
    out = np.empty((n, fetch), dtype=np.int64)
    block = min(_QUERY_BLOCK, max(1, n))
    tile = max(fetch + 1, _SCORE_BLOCK_ELEMENTS // block)
    for start in range(0, n, block):
        q = queries[start:start + block]
        best_scores = best_positions = None
        for first in range(0, size, tile):
            scores = q @ vectors[first:first + tile].T
            if distance == "squared_l2":
                scores *= -2.0
                scores += sq_norms[first:first + tile]
            else:
                np.negative(scores, out=scores)
            if scores.shape[1] > fetch:
                cols = _smallest_columns(scores, fetch)
            else:  # a last tile of at most fetch vectors: all of them
                cols = np.broadcast_to(np.arange(scores.shape[1], dtype=np.int64), scores.shape)
            tile_scores = np.take_along_axis(scores, cols, axis=1)
            if best_scores is None:
                best_scores, best_positions = tile_scores, cols + first
                continue
            both_scores = np.concatenate([best_scores, tile_scores], axis=1)
            both_positions = np.concatenate([best_positions, cols + first], axis=1)
            keep = np.argpartition(both_scores, fetch - 1, axis=1)[:, :fetch]
            best_scores = np.take_along_axis(both_scores, keep, axis=1)
            best_positions = np.take_along_axis(both_positions, keep, axis=1)
        out[start:start + block] = best_positions
    return out


def _rescore(distance: str, queries: np.ndarray, vectors: np.ndarray, candidates: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each row's candidate positions (-1 = none): (positions, distances) [n, k]."""
    n, m = candidates.shape
    positions = np.full((n, k), _NO_POSITION, dtype=np.int64)
    distances = np.full((n, k), np.inf, dtype=np.float64)
    width = min(k, m)
    if width == 0:
        return positions, distances
    block = max(1, _RESCORE_BLOCK_ELEMENTS // max(1, m * vectors.shape[1]))
    for start in range(0, n, block):
        cand = candidates[start:start + block]
        valid = cand >= 0
        dist = exact_distances(distance, queries[start:start + block], vectors[np.where(valid, cand, 0)])
        dist[~valid] = np.inf
        # Sort by distance, then position; missing slots (inf, max position) go last.
        tie_key = np.where(valid, cand, np.iinfo(np.int64).max)
        order = np.lexsort((tie_key, dist), axis=-1)[:, :width]
        top_pos = np.take_along_axis(cand, order, axis=1)
        top_dist = np.take_along_axis(dist, order, axis=1)
        top_valid = np.take_along_axis(valid, order, axis=1)
        positions[start:start + block, :width] = np.where(top_valid, top_pos, _NO_POSITION)
        distances[start:start + block, :width] = np.where(top_valid, top_dist, np.inf)
    return positions, distances


class NeighborIndex(abc.ABC):
    """A searchable index over one shard's prepared vectors.

    Attributes:
        kind: 'scann' or 'exact'.
        distance: one of DISTANCES.
        size: number of indexed vectors.
        dims: vector dimensionality.
        params: JSON-serialisable build/search parameters (as given, plus e.g. ``fallback``).
        vectors: the prepared float32 [size, dims] vectors, kept for exact rescoring.
    """

    kind: str = ""

    def __init__(self, vectors: np.ndarray, *, distance: str, params: dict[str, Any]) -> None:
        check_distance(distance)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D [n, d], got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.distance = distance
        self.size, self.dims = self.vectors.shape
        self.params = dict(params)

    def search(self, queries: np.ndarray, k: int, *, leaves_to_search: int | None = None,
               reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Finds each query's k nearest indexed vectors.

        Args:
            queries: [n, dims] float32, already prepared with :func:`prepare_vectors` (and finite).
            k: neighbours per query, >= 1.
            leaves_to_search: ScaNN leaves searched per query; None uses params. Ignored by exact.
            reorder: ScaNN reorder depth; None uses params. Ignored by exact and by ScaNN indices
                built without a reorder stage.

        Returns:
            (positions int64 [n, k], distances float64 [n, k]), nearest first. Positions index into
            ``vectors``. Distances are exact (recomputed in float64), ties broken by position. Slots
            beyond the shard's size are position -1, distance +inf.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dims:
            raise ValueError(f"queries must be [n, {self.dims}], got shape {queries.shape}")
        if not np.isfinite(queries).all():
            raise ValueError("queries contain non-finite values; drop rows prepare_vectors masks")
        if len(queries) == 0 or self.size == 0:
            return (np.full((len(queries), k), _NO_POSITION, dtype=np.int64),
                    np.full((len(queries), k), np.inf, dtype=np.float64))
        candidates = self._candidates(queries, k, _fetch_count(k, self.size),
                                      leaves_to_search=leaves_to_search, reorder=reorder)
        return _rescore(self.distance, queries, self.vectors, candidates, k)

    @abc.abstractmethod
    def _candidates(self, queries: np.ndarray, k: int, fetch: int, *, leaves_to_search: int | None,
                    reorder: int | None) -> np.ndarray:
        """Up to ``fetch`` candidate positions per query (int64 [n, m], -1 = none), any order."""

    def save(self, local_dir: str) -> None:
        """Writes the index to a local directory (created if missing); see the module docstring."""
        os.makedirs(local_dir, exist_ok=True)
        self._save_searcher(local_dir)
        vectors_file = self._saved_vectors_file(local_dir)
        if vectors_file is None:
            vectors_file = _VECTORS_FILE
            np.save(os.path.join(local_dir, vectors_file), self.vectors)
        version = _FORMAT_VERSION if vectors_file == _VECTORS_FILE else _FORMAT_VERSION_VECTORS_FILE
        config = {"format_version": version, "kind": self.kind, "distance": self.distance,
                  "dims": self.dims, "size": self.size, "params": self.params,
                  "vectors_file": vectors_file}
        # Written last: a directory with index_config.json holds a complete index.
        with open(os.path.join(local_dir, _CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=_json_scalar)

    @abc.abstractmethod
    def _save_searcher(self, local_dir: str) -> None:
        """Writes kind-specific files into ``local_dir`` (before the vectors, which may be among
        them: see ``_saved_vectors_file``)."""

    def _saved_vectors_file(self, local_dir: str) -> str | None:
        """A file ``_save_searcher`` wrote that holds exactly ``self.vectors``, relative to
        ``local_dir``; None: vectors.npy must be written."""
        return None

    @staticmethod
    def load(local_dir: str) -> NeighborIndex:
        """Loads an index written by :meth:`save`, of whichever kind it is."""
        with open(os.path.join(local_dir, _CONFIG_FILE)) as f:
            config = json.load(f)
        if config.get("format_version") not in (_FORMAT_VERSION, _FORMAT_VERSION_VECTORS_FILE):
            raise ValueError(f"{local_dir}: unsupported index format_version "
                             f"{config.get('format_version')!r} (expected {_FORMAT_VERSION} or "
                             f"{_FORMAT_VERSION_VECTORS_FILE})")
        kinds = {"scann": ScannIndex, "exact": ExactIndex}
        if config["kind"] not in kinds:
            raise ValueError(f"{local_dir}: unknown index kind {config['kind']!r}")
        vectors_file = config.get("vectors_file", _VECTORS_FILE)
        parts = vectors_file.split("/") if isinstance(vectors_file, str) else [""]
        if not isinstance(vectors_file, str) or vectors_file.startswith("/") or ".." in parts or "" in parts:
            raise ValueError(f"{local_dir}: unsafe vectors_file {vectors_file!r} in {_CONFIG_FILE}")
        vectors = np.load(os.path.join(local_dir, *parts), allow_pickle=False)
        if vectors.shape != (config["size"], config["dims"]) or vectors.dtype != np.float32:
            raise ValueError(f"{local_dir}: {vectors_file} holds {vectors.dtype} {vectors.shape}, "
                             f"config says float32 ({config['size']}, {config['dims']})")
        return kinds[config["kind"]]._load(local_dir, vectors, distance=config["distance"],
                                          params=config["params"])

    @classmethod
    @abc.abstractmethod
    def _load(cls, local_dir: str, vectors: np.ndarray, *, distance: str,
              params: dict[str, Any]) -> NeighborIndex:
        """Builds the instance from its saved parts."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(distance={self.distance!r}, size={self.size}, "
                f"dims={self.dims}, params={self.params!r})")


class ExactIndex(NeighborIndex):
    """Brute force: blocked float32 matmul + argpartition, then exact float64 rescoring.

    Fetches ``min(size, 2k + 10)`` candidates per query so float32 rounding cannot change which
    neighbours win (short of near-ties among more than k + 10 vectors). Score blocks stay under
    128 MiB whatever the shard size.
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray, *, distance: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(vectors, distance=distance, params=params or {})
        # |v|^2 in float64, stored as float32 to match the float32 score block.
        self._sq_norms = (np.einsum("nd,nd->n", self.vectors.astype(np.float64),
                                    self.vectors.astype(np.float64)).astype(np.float32)
                          if distance == "squared_l2" else None)

    def _candidates(self, queries: np.ndarray, k: int, fetch: int, *, leaves_to_search: int | None,
                    reorder: int | None) -> np.ndarray:
        del k, leaves_to_search, reorder  # Brute force has no knobs.
        return _exact_candidates(self.distance, self.vectors, self._sq_norms, queries, fetch)

    def _save_searcher(self, local_dir: str) -> None:
        del local_dir  # vectors.npy is the whole index.

    @classmethod
    def _load(cls, local_dir: str, vectors: np.ndarray, *, distance: str,
              params: dict[str, Any]) -> ExactIndex:
        return cls(vectors, distance=distance, params=params)


class ScannIndex(NeighborIndex):
    """A ScaNN (pybind) searcher proposing candidates, rescored exactly from the kept vectors.

    Build it with :func:`build_index`. Builds are deterministic for the same vectors, params and
    seed. ScaNN's random k-means initialisation gave a different tree on every build (even on one
    thread), and its k-means++ initialisation (which honours ``clustering_seed``) doubled the build
    at 2,000 leaves. With ``params['tree_training'] == 'sampled_kmeans'`` (what the job builds) the
    leaves' centres come from :func:`transforms.index.kmeans.train_centers` (seeded sample and
    initialisation, BLAS Lloyd iterations) and are handed to ScaNN as a trained partitioner; ScaNN
    then assigns the datapoints to leaves and trains the AH codebook single-threaded, with pinned
    seeds, so every file is byte-identical from build to build, whatever ``training_threads`` says
    (a test checks it). Without the key (indexes built before), ScaNN trains the tree itself with
    k-means++ on ``params.get('training_threads', 1)`` threads (0 = all cores): one thread builds
    byte-identical files; on several threads the tree is the same, but the assignment of the
    datapoints to leaves (``datapoint_to_token.npy``) and so the AH codebook trained on it
    (``ah_codebook.pb``) can differ between builds (430 of 20,000 assignments on 40 clustered 16-d
    blobs; none on 6,000 random vectors); every other file is identical (tests check both).
    Searches rescore exactly, so the matches were identical.
    Queries whose searched leaves held fewer than k vectors are completed by brute force, so every
    row has min(k, size) neighbours.
    """

    kind = "scann"

    def __init__(self, vectors: np.ndarray, *, distance: str, params: dict[str, Any], searcher: Any) -> None:
        super().__init__(vectors, distance=distance, params=params)
        self._searcher = searcher
        self._sq_norms = None  # Computed on first need (brute-force completion under squared_l2).

    @property
    def _has_tree(self) -> bool:
        return int(self.params["num_leaves"]) > 1

    @property
    def _has_reorder(self) -> bool:
        return self.params["quantization"] == "ah" and int(self.params.get("reorder") or 0) > 0

    def _candidates(self, queries: np.ndarray, k: int, fetch: int, *, leaves_to_search: int | None,
                    reorder: int | None) -> np.ndarray:
        leaves = None
        if leaves_to_search is not None and leaves_to_search < 1:
            raise ValueError(f"leaves_to_search must be >= 1, got {leaves_to_search}")
        if self._has_tree:
            if leaves_to_search is None:
                leaves_to_search = self.params["num_leaves_to_search"]
            leaves = min(int(leaves_to_search), int(self.params["num_leaves"]))
        pre_reorder = None
        if self._has_reorder:
            # ScaNN returns at most pre_reorder_num_neighbors results, so never fewer than fetch.
            pre_reorder = max(int(self.params["reorder"] if reorder is None else reorder), fetch)
        idx, dist = self._searcher.search_batched(queries, final_num_neighbors=fetch,
                                                  leaves_to_search=leaves,
                                                  pre_reorder_num_neighbors=pre_reorder)
        candidates = np.asarray(idx, dtype=np.int64)
        # ScaNN pads missing results with index 0 and distance NaN.
        candidates[np.isnan(np.asarray(dist))] = _NO_POSITION
        short = (candidates >= 0).sum(axis=1) < min(k, self.size)
        if short.any():
            _LOGGER.debug("ScaNN found fewer than %d neighbours for %d of %d queries; completing "
                          "them by brute force", k, int(short.sum()), len(queries))
            if self.distance == "squared_l2" and self._sq_norms is None:
                self._sq_norms = np.einsum("nd,nd->n", self.vectors, self.vectors)
            candidates[short] = _exact_candidates(self.distance, self.vectors, self._sq_norms,
                                                  queries[short], fetch)
        return candidates

    def _save_searcher(self, local_dir: str) -> None:
        scann_dir = os.path.join(local_dir, _SCANN_DIR)
        os.makedirs(scann_dir, exist_ok=True)
        # relative_path=True: asset paths in scann_assets.pbtxt stay valid after the dir is copied.
        self._searcher.serialize(scann_dir, relative_path=True)

    def _saved_vectors_file(self, local_dir: str) -> str | None:
        # ScaNN keeps its float32 dataset when it reorders or scores by brute force; reuse it when
        # it is our array byte for byte (checked, so a ScaNN storing something else costs only
        # the vectors.npy written instead).
        path = os.path.join(local_dir, _SCANN_DIR, SCANN_DATASET_FILE)
        if not os.path.exists(path):
            return None
        try:
            stored = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:
            return None
        if stored.dtype != np.float32 or stored.shape != self.vectors.shape:
            return None
        for start in range(0, len(stored), _COMPARE_BLOCK):  # as bits: -0.0 is not 0.0 here
            block = slice(start, start + _COMPARE_BLOCK)
            if not np.array_equal(stored[block].view(np.uint32), self.vectors[block].view(np.uint32)):
                return None
        return f"{_SCANN_DIR}/{SCANN_DATASET_FILE}"

    @classmethod
    def _load(cls, local_dir: str, vectors: np.ndarray, *, distance: str,
              params: dict[str, Any]) -> ScannIndex:
        from transforms.index.scann_lib import load_scann_pybind

        searcher = load_scann_pybind().load_searcher(os.path.join(local_dir, _SCANN_DIR))
        if searcher.size() != len(vectors):
            raise ValueError(f"{local_dir}: ScaNN searcher holds {searcher.size()} vectors, "
                             f"its vectors {len(vectors)}")
        return cls(vectors, distance=distance, params=params, searcher=searcher)


def build_index(vectors: np.ndarray, *, distance: str, kind: str, params: ScannParams | dict[str, Any],
                seed: int = 0) -> NeighborIndex:
    """Builds one shard's index.

    ``kind='scann'`` falls back to an :class:`ExactIndex` (recording ``params['fallback'] =
    'too_small'``) when the shard has fewer than ``MIN_SCANN_SIZE`` (2000) vectors or fewer than
    2 per leaf: exact search is as cheap there, and ScaNN's tree has nothing to learn.

    Args:
        vectors: [n, d] float32, already prepared with :func:`prepare_vectors` (masked rows dropped).
        distance: one of DISTANCES.
        kind: 'scann' or 'exact'.
        params: for ScaNN, a :class:`ScannParams` (``beam_jobs.config.scann_params``) or its dict (num_leaves,
            num_leaves_to_search, training_sample_size, quantization, anisotropic_quantization_threshold,
            reorder, spherical; optionally training_threads and tree_training, see
            :class:`ScannIndex`). Kept, copied, in ``index.params``.
        seed: seeds ScaNN's k-means and quantiser training.

    Raises:
        ValueError: bad distance, kind, params or vectors.
    """
    check_distance(distance)
    if kind not in INDEX_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"vectors must be [n, d] with d >= 1, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain non-finite values; drop rows prepare_vectors masks")
    params = params_dict(params)
    if kind == "exact":
        return ExactIndex(vectors, distance=distance, params=params)
    if too_small(len(vectors), params):
        _LOGGER.info("Shard of %d vectors is too small for a ScaNN tree of %s leaves; using exact "
                     "search", len(vectors), params["num_leaves"])
        params["fallback"] = "too_small"
        return ExactIndex(vectors, distance=distance, params=params)
    if int(params["num_leaves"]) > 1 and int(params["training_sample_size"]) < int(params["num_leaves"]):
        # ScaNN's own error ("Number of points is less than the number of clusters") names neither.
        raise ValueError(f"ScaNN training_sample_size ({params['training_sample_size']}) must be >= "
                         f"num_leaves ({params['num_leaves']})")

    from transforms.index.scann_lib import load_scann_pybind

    config = scann_config(vectors, distance, params, seed)
    started = time.perf_counter()
    training = params.get("tree_training", TREE_TRAINING_SCANN)
    if training not in TREE_TRAININGS:
        raise ValueError(f"params['tree_training'] must be one of {', '.join(TREE_TRAININGS)}, got "
                         f"{training!r}")
    if int(params["num_leaves"]) > 1 and training == TREE_TRAINING_SAMPLED:
        searcher = scann_with_trained_tree(vectors, distance, params, config, seed)
    else:
        threads = int(params.get("training_threads", 1))
        searcher = load_scann_pybind().create_searcher(vectors, config, threads)
    _LOGGER.info("Built ScaNN index: %d x %d, %s, %s leaves (%s) in %.1f s", len(vectors),
                 vectors.shape[1], distance, params["num_leaves"], training,
                 time.perf_counter() - started)
    return ScannIndex(vectors, distance=distance, params=params, searcher=searcher)


