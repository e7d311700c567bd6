"""Seeded clustered vector corpora (Gaussian mixtures) for tests, the demo and benchmarks.

Not used by the job itself. Vectors are L2-normalised like the data behind shared/FACTS.md.
"""

from __future__ import annotations

import json
import os

import numpy as np

from transforms.common.flags import DEFAULTS

__all__ = ["make_clustered", "make_link_vectors", "make_skewed_link_vectors", "write_vector_corpus"]


def make_clustered(n: int, dims: int, *, clusters: int = 100, spread: float = 0.35, seed: int = 0,
                   centers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n L2-normalised float32 vectors around ``clusters`` random centres; returns (vectors, centres)."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((clusters, dims)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, len(centers), size=n)
    noise = rng.standard_normal((n, dims)).astype(np.float32) * (spread / np.sqrt(dims))
    vecs = centers[labels] + noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), centers


def make_link_vectors(n_candidates: int, n_queries: int, dims: int, *, clusters: int = 100,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and queries drawn from the same mixture (different samples)."""
    cands, centers = make_clustered(n_candidates, dims, clusters=clusters, seed=seed)
    queries, _ = make_clustered(n_queries, dims, centers=centers, seed=seed + 1)
    return cands, queries


def make_skewed_link_vectors(n_candidates: int, n_queries: int, dims: int, *, clusters: int = 1000,
                             spread: float = 0.35, size_sigma: float = 1.0, axis_sigma: float = 0.5,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and queries from a mixture unlike :func:`make_clustered`'s (independent data).

    Cluster sizes are log-normal (weights ``exp(N(0, size_sigma))``: at sigma 1 the largest of 1,000
    clusters holds about 20x the mean, many hold a handful) and the noise is anisotropic: each
    cluster scales each dimension by its own ``exp(N(0, axis_sigma))`` (and the whole cluster by
    another such factor), so clusters are elongated ellipsoids of different widths rather than
    equal spheres. Queries are drawn from the same mixture with other labels and noise. Vectors
    are L2-normalised float32; generated in blocks so no float64 copy of the corpus is made.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dims)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, size_sigma, clusters)
    weights /= weights.sum()
    scales = (np.exp(rng.normal(0.0, axis_sigma, (clusters, dims)))
              * np.exp(rng.normal(0.0, axis_sigma, (clusters, 1)))
              * (spread / np.sqrt(dims))).astype(np.float32)

    def draw(n: int, draw_seed: int) -> np.ndarray:
        r = np.random.default_rng(draw_seed)
        labels = r.choice(clusters, size=n, p=weights)
        out = np.empty((n, dims), dtype=np.float32)
        for start in range(0, n, 65_536):
            lab = labels[start:start + 65_536]
            block = r.standard_normal((len(lab), dims), dtype=np.float32) * scales[lab] + centers[lab]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:start + len(lab)] = block
        return out

    return draw(n_candidates, seed + 1), draw(n_queries, seed + 2)


def write_vector_corpus(out_dir: str, ids: list[str] | np.ndarray, vectors: np.ndarray, *,
                        fmt: str = "parquet", files: int = 1, id_field: str = DEFAULTS["id_field"],
                        vector_field: str = DEFAULTS["vector_field"]) -> list[str]:
    """Writes ids + vectors as ``files`` files of format parquet, jsonl or csv; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    bounds = np.linspace(0, len(ids), files + 1).astype(int)
    for f in range(files):
        lo, hi = bounds[f], bounds[f + 1]
        path = os.path.join(out_dir, f"part-{f:05d}.{fmt}")
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.array(np.ascontiguousarray(vectors[lo:hi]).reshape(-1), type=pa.float32())
            col = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]).cast(
                pa.list_(pa.float32()))
            table = pa.table({id_field: pa.array([str(i) for i in ids[lo:hi]]), vector_field: col})
            pq.write_table(table, path, row_group_size=65536)
        elif fmt == "jsonl":
            with open(path, "w") as fh:
                for i in range(lo, hi):
                    fh.write(json.dumps({id_field: str(ids[i]), vector_field: vectors[i].tolist()}))
                    fh.write("\n")
        elif fmt == "csv":
            import csv

            with open(path, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow([id_field, vector_field])
                for i in range(lo, hi):
                    w.writerow([str(ids[i]), json.dumps(vectors[i].tolist())])
        else:
            raise ValueError(f"unsupported format {fmt!r}")
        paths.append(path)
    return paths
