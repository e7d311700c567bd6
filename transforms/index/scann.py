"""Building a ScaNN searcher: its text config with every seed pinned, and a tree trained by
:mod:`transforms.index.kmeans` handed to ScaNN as a serialized partitioner.

ScaNN is loaded through :mod:`transforms.index.scann_lib` (its pybind module only; ``import scann``
fails under the pinned TensorFlow), so its proto modules import inside the functions, once the
loader has registered the bare package. What it does not do: search (:class:`ScannIndex` in
:mod:`transforms.index.neighbor_index` wraps the searcher).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from transforms.index.params import kmeans_sample_size

__all__ = ["SCANN_DATASET_FILE", "scann_config", "serialized_partitioner", "scann_with_trained_tree"]



# The float32 dataset ScaNN serialises (for reordering or brute-force scoring): our vectors again.
SCANN_DATASET_FILE = "dataset.npy"


_SCANN_MEASURE = {"cosine": "dot_product", "dot": "dot_product", "squared_l2": "squared_l2"}


def _soar_lambda(params: dict[str, Any], measure: str) -> float | None:
    """SOAR's spilling weight where it applies (ScaNN defines it for dot product only), else None."""
    value = params.get("soar_lambda")
    return float(value) if value is not None and measure == "dot_product" else None


def scann_config(vectors: np.ndarray, distance: str, params: dict[str, Any], seed: int) -> str:
    """ScaNN's text config for these params, with every training seed pinned."""
    from google.protobuf import text_format

    from transforms.index.scann_lib import load_scann_pybind

    scann_ops_pybind = load_scann_pybind()
    from scann.proto import scann_pb2  # Importable once load_scann_pybind registered the package.

    measure = _SCANN_MEASURE[distance]
    # num_neighbors is only the default for searches; ours always pass final_num_neighbors.
    builder = scann_ops_pybind.builder(vectors, 10, measure)
    if int(params["num_leaves"]) > 1:
        builder = builder.tree(
            num_leaves=int(params["num_leaves"]),
            num_leaves_to_search=int(params["num_leaves_to_search"]),
            training_sample_size=int(params["training_sample_size"]),
            # Spherical k-means suits unit vectors only.
            spherical=bool(params.get("spherical")) and distance == "cosine",
            random_init=False,
            soar_lambda=_soar_lambda(params, measure),
        )
    if params["quantization"] == "ah":
        # Anisotropic (score-aware) quantisation is defined for dot product only; NaN turns it off.
        threshold = (float(params["anisotropic_quantization_threshold"])
                     if measure == "dot_product" else float("nan"))
        # 2 dims per block; the builder gives an odd dimension's last dim a 1-dim block of its own.
        builder = builder.score_ah(2, anisotropic_quantization_threshold=threshold)
        if int(params.get("reorder") or 0) > 0:
            builder = builder.reorder(int(params["reorder"]))
    elif params["quantization"] == "brute":
        builder = builder.score_brute_force()
    else:
        raise ValueError(f"params['quantization'] must be 'ah' or 'brute', got {params['quantization']!r}")
    proto = text_format.Parse(builder.create_config(), scann_pb2.ScannConfig())
    if proto.HasField("partitioning"):
        proto.partitioning.clustering_seed = seed
    if proto.HasField("hash"):
        # ScaNN's defaults are 1, so seed 0 reproduces them.
        proto.hash.asymmetric_hash.clustering_seed = seed + 1
        proto.hash.asymmetric_hash.sampling_seed = seed + 1
    return text_format.MessageToString(proto)


def serialized_partitioner(centers: np.ndarray) -> bytes:
    """The ``serialized_partitioner.pb`` of a one-level k-means tree with these leaf centres, as
    ScaNN itself writes it (a test reads back what ScaNN serialises and compares the bytes)."""
    from transforms.index.scann_lib import load_scann_pybind

    load_scann_pybind()
    from scann.partitioning import partitioner_pb2

    partitioner = partitioner_pb2.SerializedPartitioner(n_tokens=len(centers))
    partitioner.kmeans.kmeans_tree.learned_spilling_type = 0  # set explicitly, as ScaNN does
    root = partitioner.kmeans.kmeans_tree.root
    root.leaf_id, root.learned_spilling_threshold = -1, float("nan")
    for leaf, center in enumerate(np.asarray(centers, dtype=np.float32).astype(np.float64)):
        root.centers.add().dimension.extend(center.tolist())
        child = root.children.add()
        child.leaf_id, child.learned_spilling_threshold = leaf, float("nan")
    return partitioner.SerializeToString()


def scann_with_trained_tree(vectors: np.ndarray, distance: str, params: dict[str, Any], config: str,
                             seed: int) -> Any:
    """A ScaNN searcher whose tree has the centres of :func:`transforms.index.kmeans.train_centers`.

    ScaNN's pybind API builds a searcher from an array (training everything) or loads one from a
    directory of assets. Loaded with only the config, the trained partitioner and the float dataset,
    ScaNN completes the rest itself (the datapoints' leaves, the AH codebook and codes) on one
    thread, with the config's pinned seeds. The directory is scratch, deleted before returning.
    """
    import shutil
    import tempfile

    from google.protobuf import text_format

    from transforms.index.kmeans import train_centers
    from transforms.index.scann_lib import load_scann_pybind

    pybind = load_scann_pybind()
    from scann.proto import scann_pb2  # importable once load_scann_pybind has run

    spherical = bool(params.get("spherical")) and distance == "cosine"
    centers = train_centers(vectors, int(params["num_leaves"]),
                            sample_size=kmeans_sample_size(params, len(vectors)), spherical=spherical,
                            seed=seed)
    proto = text_format.Parse(config, scann_pb2.ScannConfig())
    scratch = tempfile.mkdtemp(prefix="scann-build-")
    try:
        with open(os.path.join(scratch, "serialized_partitioner.pb"), "wb") as fh:
            fh.write(serialized_partitioner(centers))
        with open(os.path.join(scratch, "scann_config.pb"), "wb") as fh:
            fh.write(proto.SerializeToString())
        np.save(os.path.join(scratch, SCANN_DATASET_FILE), vectors, allow_pickle=False)
        with open(os.path.join(scratch, "scann_assets.pbtxt"), "w") as fh:
            fh.write('assets {\n  asset_type: PARTITIONER\n  asset_path: "serialized_partitioner.pb"\n}\n'
                     f'assets {{\n  asset_type: DATASET_NPY\n  asset_path: "{SCANN_DATASET_FILE}"\n}}\n')
        return pybind.load_searcher(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
