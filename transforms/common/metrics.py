"""Beam metric namespace and names, in one place so the manifest and tests agree on them."""

from __future__ import annotations

import time

__all__ = ["NAMESPACE", "HEAP_SUFFIX", "dead_letter_counter", "records_read_counter", "STAGES",
           "StageTimer", "heap_watch_start", "heap_watch_end"]

NAMESPACE = "corpus_matcher"

# Stage names used in dead letters, metrics, timing and the manifest.
STAGES = ("read", "validate", "preprocess", "embed", "shard", "place", "build", "search", "merge", "write")


# Distribution ``<stage>_heap_mib``: the Python heap's peak (numpy arrays included) while the stage
# ran, in MiB, when the worker runs under tracemalloc (``PYTHONTRACEMALLOC=1``); else not reported.
HEAP_SUFFIX = "_heap_mib"


def heap_watch_start() -> None:
    """Starts a stage's heap watch: resets tracemalloc's peak (a no-op unless tracing)."""
    import tracemalloc

    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()


def heap_watch_end(stage: str) -> None:
    """Reports the Python heap's peak since :func:`heap_watch_start` as ``<stage>_heap_mib``.

    The peak covers the whole process (what the stage allocated plus what was already alive, e.g.
    a loaded index), which is what a worker's memory must hold while the stage runs.
    """
    import tracemalloc

    if tracemalloc.is_tracing():
        from apache_beam.metrics import Metrics

        Metrics.distribution(NAMESPACE, f"{stage}{HEAP_SUFFIX}").update(
            tracemalloc.get_traced_memory()[1] >> 20)


def dead_letter_counter(stage: str) -> str:
    return f"dead_letters_{stage}"


def records_read_counter(role: str) -> str:
    return f"{role}_read"


class StageTimer:
    """Busy milliseconds of a stage, as the Beam distribution ``<stage>_ms`` (the manifest's
    ``stage_busy_seconds``), and its heap peak when tracing (:func:`heap_watch_end`). Time only the
    stage's own work: code between a DoFn's ``yield`` and its next step also runs the fused steps
    downstream, so compute first, then yield.

        timer = StageTimer("validate")      # in the DoFn's __init__
        with timer:                          # in process()
            out = work(element)
    """

    def __init__(self, stage: str):
        self._stage = stage
        self._dist = None
        self._start = 0.0

    def __enter__(self) -> StageTimer:
        heap_watch_start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._dist is None:
            from apache_beam.metrics import Metrics

            self._dist = Metrics.distribution(NAMESPACE, f"{self._stage}_ms")
        self._dist.update(int((time.perf_counter() - self._start) * 1000))
        heap_watch_end(self._stage)

    def __getstate__(self) -> dict:  # a DoFn attribute: pickled without the live metric
        return {"_stage": self._stage, "_dist": None, "_start": 0.0}
