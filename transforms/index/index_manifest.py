"""The index manifest: one JSON file naming every shard index of a run (and the routing centroids),
written once all shards are built and read back by a run that keeps the index (``--index_dir``).
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np

from transforms.common.schema import ShardIndexInfo

__all__ = ["INDEX_MANIFEST", "CENTROIDS_FILE", "index_manifest_path", "WriteIndexManifest",
           "read_index_manifest"]



INDEX_MANIFEST = "index_manifest.json"


CENTROIDS_FILE = "routing_centroids.npy"


def index_manifest_path(index_root: str) -> str:
    return f"{index_root.rstrip('/')}/{INDEX_MANIFEST}"


class _WriteIndexManifestFn(beam.DoFn):
    def __init__(self, index_root: str, static: dict[str, Any]):
        self._root = index_root.rstrip("/")
        self._static = static

    def process(self, _: Any, shards: list[ShardIndexInfo], dims: int, plan: Any = None):
        import io
        import json

        from transforms.common.artifacts import write_bytes, write_text

        manifest = dict(self._static)
        manifest["dims"] = int(dims)
        manifest["shards"] = [{k: v for k, v in s._asdict().items() if k != "build"}
                              for s in sorted(shards, key=lambda s: s.shard)]
        manifest["candidates_indexed"] = sum(s.size for s in shards)
        if plan is not None:
            manifest["routing"] = plan.to_dict() | {"distance": plan.distance}
            if plan.kind == "centroids":
                buf = io.BytesIO()
                np.save(buf, plan.centroids, allow_pickle=False)
                write_bytes(f"{self._root}/{CENTROIDS_FILE}", buf.getvalue())
                manifest["routing"]["centroids_file"] = CENTROIDS_FILE
        write_text(index_manifest_path(self._root), json.dumps(manifest, indent=2, sort_keys=True,
                                                               default=str))
        yield manifest


class WriteIndexManifest(beam.PTransform):
    """Writes ``indexes/index_manifest.json`` (and the routing centroids) once every shard is built,
    so a later run can reuse the indices with ``--index_dir``.

    Args:
        index_root: ``DIR/indexes``.
        static: launch-time facts (distance, index kind, id field, embedding settings, versions).
        dims: singleton PCollection with the vector dimension.
        plan: optional singleton RoutingPlan.
    """

    def __init__(self, *, index_root: str, static: dict[str, Any], dims, plan=None):
        super().__init__()
        self._fn = _WriteIndexManifestFn(index_root, static)
        self._dims = dims
        self._plan = plan

    def expand(self, infos):
        side = {"plan": beam.pvalue.AsSingleton(self._plan)} if self._plan is not None else {}
        return (infos.pipeline
                | "Once" >> beam.Create([None])
                | "WriteIndexManifest" >> beam.ParDo(
                    self._fn, shards=beam.pvalue.AsList(infos), dims=beam.pvalue.AsSingleton(self._dims),
                    **side))


def read_index_manifest(index_dir: str) -> dict[str, Any]:
    """Reads a kept index (``--index_dir``: a run's output dir or its ``indexes/`` dir).

    Returns the manifest with ``shards`` as ShardIndexInfo and, for centroid routing, the plan as a
    RoutingPlan under ``plan``. Raises FileNotFoundError naming --index_dir when nothing is there.
    """
    import io
    import json

    from transforms.common.artifacts import read_bytes, read_text
    from transforms.placement.routing import RoutingPlan

    root = index_dir.rstrip("/")
    candidates = [root, f"{root}/indexes"]
    for r in candidates:
        try:
            manifest = json.loads(read_text(index_manifest_path(r)))
            break
        except (OSError, ValueError):
            continue
    else:
        raise FileNotFoundError(f"--index_dir {index_dir}: no {INDEX_MANIFEST} there or under "
                                "indexes/ (is it the output directory of a finished run?)")
    manifest["shards"] = [ShardIndexInfo(**s) for s in manifest["shards"]]
    routing = manifest.get("routing")
    manifest["plan"] = None
    if routing:
        centroids = np.zeros((0, 0), np.float32)
        if routing.get("centroids_file"):
            centroids = np.load(io.BytesIO(read_bytes(f"{r}/{routing['centroids_file']}")),
                                allow_pickle=False)
        manifest["plan"] = RoutingPlan(centroids=centroids, distance=routing["distance"],
                                       pieces=tuple(tuple(p) for p in routing["pieces"]),
                                       num_shards=routing["num_shards"], kind=routing["kind"])
    return manifest
