"""Large pieces of candidate vectors reach their shard through files, not the runner's shuffle.

Placement (``routing.PlaceCandidates``) writes each batch's rows of a shard as one ``.npy`` file
under a spill directory when that piece holds at least ``MIN_SPILL_BYTES`` of vectors (the job's
``--spill_min_mb``; 0 turns spilling off), and sends
only ``SpilledRows`` (ids, origins, the file's path) through the GroupByKey; the shard's assembly
reads the files straight into one preallocated array. Smaller pieces travel in the shuffle as
before, so the number of files stays below the corpus's bytes / ``MIN_SPILL_BYTES`` however many
shards there are (many shards make many small pieces, which a shuffle handles better than an
object store).

Why: a shuffle encodes, copies and decodes every value several times (pickling, the data channel,
the runner's grouping buffer), and the vectors are nearly all of a candidate corpus's bytes. On the
1M x 128 benchmark (``bench/ann_join.py``, one shard) writing and reading the 512 MB as files cost
several seconds less than the shuffle, and the assembly no longer holds the grouped pieces and
their concatenation at once.

Where: a fresh directory per run under ``--temp_location`` when given (``gs://`` on Dataflow),
else under the output directory. It is deleted once every shard's index is built
(:class:`DeleteSpillDir`, gated on the builds' output). A run that fails before then leaves it
behind; it holds nothing but these files. The deletion assumes, as Dataflow and the local runners
guarantee, that a finished step is not recomputed later; a runner that recomputes lost shuffle
output from its inputs (Spark, Flink) would need the files kept until the job ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common.artifacts import is_local_path, join_path
from transforms.common.flags import DEFAULTS
from transforms.common.schema import SpilledRows, VectorBatch

__all__ = ["MIN_SPILL_BYTES", "should_spill", "spill_rows", "assemble_parts", "delete_spill_dir",
           "new_spill_dir", "DeleteSpillDir"]

_LOGGER = logging.getLogger(__name__)
# Pieces with fewer bytes of vectors stay in the shuffle (see the module docstring); the job's
# --spill_min_mb sets it per run; this is its default (1 MB): a
# default read batch (--batch_size 4096) of 128-dim vectors is 2 MB, so it spills whole when there
# are one or two shards; files stay few (at most one per MB of the corpus) and none is tiny.
MIN_SPILL_BYTES = round(DEFAULTS["spill_min_mb"] * (1 << 20))


def new_spill_dir(temp_location: str | None, output_dir: str) -> str:
    """A directory of its own for one run's spill files."""
    root = temp_location or join_path(output_dir, ".spill")
    return join_path(root, f"corpus-match-spill-{uuid.uuid4().hex}")


def should_spill(batch: VectorBatch, min_bytes: int = MIN_SPILL_BYTES) -> bool:
    """Whether this piece's vectors are large enough (``min_bytes``) to go through a spill file."""
    return len(batch) > 0 and batch.vectors.nbytes >= min_bytes


def spill_rows(batch: VectorBatch, spill_dir: str, shard: int) -> SpilledRows:
    """Writes ``batch``'s vectors to a new file under ``spill_dir``; returns what stays in memory."""
    vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
    # A retried bundle writes new files; the directory is deleted as a whole at the end.
    path = join_path(spill_dir, f"shard-{shard:05d}-{uuid.uuid4().hex}.npy")
    if is_local_path(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
    else:
        with FileSystems.create(path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as f:
            np.save(f, vectors, allow_pickle=False)
    return SpilledRows(batch.ids, batch.origins, path, int(vectors.shape[1]))


def _read_into(path: str, out: np.ndarray) -> None:
    """Reads the float32 ``.npy`` at ``path`` into ``out`` (its exact shape), with no extra copy."""
    opener = (lambda: open(path, "rb")) if is_local_path(path) else (
        lambda: FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    with opener() as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{path}: .npy format version {version} is not one np.save writes here")
        shape, fortran, dtype = read_header(f)
        if tuple(shape) != out.shape or fortran or dtype != np.float32:
            raise ValueError(f"{path}: spill file holds {dtype} {shape}, expected float32 {out.shape}")
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(view):  # every Beam filesystem's reader is an io stream with readinto
            got = f.readinto(view[pos:])
            if not got:
                raise ValueError(f"{path}: spill file ends after {pos} of {len(view)} bytes")
            pos += got


def assemble_parts(parts: Iterable[VectorBatch | SpilledRows]) -> VectorBatch | None:
    """One shard's rows, in part order, in one array: in-memory parts copied, spilled parts read
    from their files straight into place."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    dims = {p.dims if isinstance(p, SpilledRows) else p.vectors.shape[1] for p in parts}
    if len(dims) != 1:
        raise ValueError(f"parts of one shard have different vector lengths: {sorted(dims)}")
    vectors = np.empty((sum(len(p) for p in parts), dims.pop()), dtype=np.float32)
    pos = 0
    for p in parts:
        if isinstance(p, SpilledRows):
            _read_into(p.path, vectors[pos:pos + len(p)])
        else:
            vectors[pos:pos + len(p)] = p.vectors
        pos += len(p)
    return VectorBatch(np.concatenate([p.ids for p in parts]), vectors,
                       np.concatenate([p.origins for p in parts]))


def delete_spill_dir(spill_dir: str) -> None:
    """Deletes a run's spill directory (all its files); a missing directory is fine."""
    try:
        if is_local_path(spill_dir):
            shutil.rmtree(spill_dir, ignore_errors=True)
            parent = os.path.dirname(spill_dir.rstrip("/"))
            if os.path.basename(parent) == ".spill" and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
        else:  # a trailing '/' deletes everything under the prefix (gs://)
            FileSystems.delete([spill_dir.rstrip("/") + "/"])
    except (BeamIOError, OSError) as e:  # cleanup only
        _LOGGER.warning("could not delete spill directory %s: %s", spill_dir, e)


def _delete_after_builds(spill_dir: str, built: list) -> None:
    """Runs once every shard is built (``built`` is their ShardIndexInfos): the spill files are spent."""
    delete_spill_dir(spill_dir)
    _LOGGER.info("deleted spill directory %s after building %d shards", spill_dir, len(built))


class DeleteSpillDir(beam.PTransform):
    """PBegin -> a singleton None once ``spill_dir`` is deleted, after every element of ``built``
    (the ShardIndexInfo of every built shard) exists."""

    def __init__(self, *, spill_dir: str, built: beam.PCollection):
        super().__init__()
        if not spill_dir:
            raise ValueError("DeleteSpillDir needs a spill_dir")
        self._spill_dir = spill_dir
        self._built = built

    def expand(self, pbegin):
        return (pbegin
                | "SpillDir" >> beam.Create([self._spill_dir])
                | "Delete" >> beam.Map(_delete_after_builds, built=beam.pvalue.AsList(self._built)))
