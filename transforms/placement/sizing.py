"""Shard count and capacity from the corpus size, the vector length and the worker's memory.

Pure arithmetic (no Beam): the pipeline sizes the shards from the counted corpus with it, and the
launcher uses it to tell whether an ``--index auto`` corpus fits one shard. :func:`size_shards` gives
the answer a type (:class:`ShardSizing`), so the stages that pass it on (routing, the gate, the
launch-time decision) read fields, not dict keys. It does not assign records
to shards (``transforms.placement.place``, ``transforms.placement.routing``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["shard_sizing", "bytes_per_vector", "ShardSizing", "size_shards"]


def bytes_per_vector(dims: int) -> int:
    """Estimated worker memory per indexed vector while a shard is built or searched.

    Our float32 copy (exact rescoring) + ScaNN's float32 dataset for reordering + 4-bit hash codes
    (twice: SOAR files each vector in a second leaf with a code of its own) + the id, doubled for
    training/partitioning buffers and Python overhead during the build.
    """
    return 2 * (4 * dims + 4 * dims + 2 * (dims // 2) + 64)


def shard_sizing(num_records: int, dims: int, *, fixed: int | None, max_shard_vectors: int,
                 worker_memory_gb: float) -> dict:
    """Shard count and capacity for a corpus; ``ok`` is False when one shard cannot fit a worker.

    Capacity is the smaller of --max_shard_vectors and what --worker_memory_gb holds at these dims.
    Without --num_shards the count is ceil(records / capacity); with it, a shard larger than the
    capacity is an error naming the flags to change.
    """
    fits = int(worker_memory_gb * (1 << 30) // max(1, bytes_per_vector(max(dims, 1))))
    capacity = max(1, min(max_shard_vectors, fits))
    if fixed:
        per_shard = math.ceil(num_records / fixed)
        if per_shard > capacity:
            gb = per_shard * bytes_per_vector(dims) / (1 << 30)
            return {"ok": False, "num_shards": fixed, "capacity": capacity,
                    "message": (f"--num_shards {fixed} makes shards of ~{per_shard} vectors x {dims} "
                                f"dims (~{gb:.1f} GB), more than one worker holds (capacity {capacity}: "
                                f"--max_shard_vectors {max_shard_vectors}, --worker_memory_gb "
                                f"{worker_memory_gb}); raise --num_shards or --worker_memory_gb")}
        # Hash shards are not perfectly even; routing packs partitions up to the capacity.
        return {"ok": True, "num_shards": fixed, "capacity": capacity, "message": ""}
    return {"ok": True, "num_shards": max(1, math.ceil(num_records / capacity)),
            "capacity": capacity, "message": ""}


class ShardSizing(NamedTuple):
    """The shard count for a corpus and one shard's capacity; ``ok`` is False (and ``message`` says
    which flags to change) when one shard cannot fit a worker."""

    ok: bool
    num_shards: int
    capacity: int
    message: str

    @classmethod
    def fixed(cls, num_shards: int) -> ShardSizing:
        """The sizing of a kept index: its shards are already built (no capacity to plan with)."""
        return cls(ok=True, num_shards=num_shards, capacity=0, message="")


def size_shards(num_records: int, dims: int, *, fixed: int | None, max_shard_vectors: int,
                worker_memory_gb: float) -> ShardSizing:
    """:func:`shard_sizing` of the corpus, as a ShardSizing."""
    found = shard_sizing(num_records, dims, fixed=fixed, max_shard_vectors=max_shard_vectors,
                         worker_memory_gb=worker_memory_gb)
    return ShardSizing(ok=found["ok"], num_shards=found["num_shards"], capacity=found["capacity"],
                       message=found["message"])
