"""Published shard indexes held in memory per worker process, for the steps that search them.

``load_shard(path, build)`` loads a published shard (copying it down from remote storage) and keeps
the last few in an LRU cache, so a worker searching many query groups of one shard loads it once.
The build step hands its just-built index over (:func:`build_started`, :func:`build_finished`): a
search in the process that built the shard (on the local runners, unless their workers are separate
processes) takes it as it is instead of reading back what was just written.

Keys are (path, build token): ``ShardIndexInfo.build`` is fresh for every build ('' for a shard kept
from an earlier run, read from disk), and publishing a shard forgets every entry of its path, so a
shard rebuilt at the same path is never served stale.

Memory: at most ``_CACHE_SIZE`` shards are held in all, the handed-over one included, and none is
handed over while another build runs in the process (builds hold their own index, as before).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import shutil
import threading
import time
from typing import Any, NamedTuple

import numpy as np

__all__ = ["LoadedShard", "load_shard", "build_started", "build_finished"]

_LOGGER = logging.getLogger(__name__)


class LoadedShard(NamedTuple):
    index: Any  # a transforms.index.neighbor_index.NeighborIndex
    ids: np.ndarray  # object [size]: the shard's ids, position by position


_LOCK = threading.Lock()
_CACHE: collections.OrderedDict[tuple[str, str], LoadedShard] = collections.OrderedDict()
# Shards kept loaded per worker process: enough for two harness threads on different shards, small
# enough that memory stays bounded by a couple of shards.
_CACHE_SIZE = 2
# The index this process built last, until a load takes it or drops it, or a build starts.
_built: tuple[tuple[str, str], LoadedShard] | None = None
_builds_running = 0


def build_started() -> None:
    """A build begins in this process: the index handed over by an earlier build is released."""
    global _built, _builds_running
    with _LOCK:
        _builds_running += 1
        _built = None


def build_finished(path: str, build: str, loaded: LoadedShard | None) -> None:
    """A build ended (``loaded`` None: it failed). Forgets everything cached for ``path``, whose
    files were just replaced, and hands ``loaded`` to the next ``load_shard(path, build)`` unless
    another build is still running here."""
    global _built, _builds_running
    with _LOCK:
        _builds_running -= 1
        for key in [k for k in _CACHE if k[0] == path]:
            del _CACHE[key]
        if loaded is None or _builds_running > 0:
            return
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.popitem(last=False)
        _built = ((path, build), loaded)


def _read_local(directory: str, name: str) -> bytes | None:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return fh.read()


def load_shard(path: str, build: str = "") -> LoadedShard:
    """The shard index published at ``path`` (``build``: its ``ShardIndexInfo.build``), cached.

    Any other call than the one taking the handed-over index releases that index first, so at most
    ``_CACHE_SIZE`` shards are ever held.
    """
    from apache_beam.io.filesystems import FileSystems

    from transforms.common.artifacts import SUCCESS_MARKER, fetch_dir
    from transforms.index.neighbor_index import NeighborIndex
    from transforms.index.shard_files import load_ids

    global _built
    key = (path, build)
    with _LOCK:
        handed, _built = _built, None
        if handed is not None and handed[0] == key:
            _LOGGER.info("shard index %s: searching the index this worker built (not reloaded)", path)
            _remember(key, handed[1])
            return handed[1]
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    start = time.perf_counter()
    if FileSystems.get_scheme(path) is None and os.path.exists(os.path.join(path, SUCCESS_MARKER)):
        local, copied = path, False  # a complete local directory: read it where it is
    else:
        local, copied = fetch_dir(path), True
    try:
        loaded = LoadedShard(index=NeighborIndex.load(local),
                             ids=load_ids(functools.partial(_read_local, local)))
    finally:
        if copied:  # everything is in memory now; do not leave a copy per shard on the worker's disk
            shutil.rmtree(local, ignore_errors=True)
    _LOGGER.info("loaded shard index %s (%d vectors) in %.1f s", path, len(loaded.ids),
                 time.perf_counter() - start)
    with _LOCK:
        _remember(key, loaded)
    return loaded


def _remember(key: tuple[str, str], loaded: LoadedShard) -> None:
    """Adds to the LRU cache; the caller holds _LOCK."""
    _CACHE[key] = loaded
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
