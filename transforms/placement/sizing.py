"""How many candidate shards a corpus needs and how many vectors one holds: a typed ShardSizing.

The rule itself (memory per vector, ``--max_shard_vectors``, ``--num_shards``) is
``transforms.placement.shard_records.shard_sizing``; this module gives its answer a type, so the stages
that pass it on (routing, the gate, the launch-time decision) read fields, not dict keys. It does not
place anything.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ShardSizing", "size_shards"]


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
    """:func:`transforms.placement.shard_records.shard_sizing` of the corpus, as a ShardSizing."""
    from transforms.placement.shard_records import shard_sizing

    found = shard_sizing(num_records, dims, fixed=fixed, max_shard_vectors=max_shard_vectors,
                         worker_memory_gb=worker_memory_gb)
    return ShardSizing(ok=found["ok"], num_shards=found["num_shards"], capacity=found["capacity"],
                       message=found["message"])
