"""Beam metric namespace and names, in one place so the manifest and tests agree on them."""

from __future__ import annotations

import time

__all__ = ["NAMESPACE", "dead_letter_counter", "records_read_counter", "STAGES", "StageTimer"]

NAMESPACE = "corpus_matcher"

# Stage names used in dead letters, metrics, timing and the manifest.
STAGES = ("read", "validate", "preprocess", "embed", "shard", "place", "build", "search", "merge", "write")


def dead_letter_counter(stage: str) -> str:
    return f"dead_letters_{stage}"


def records_read_counter(role: str) -> str:
    return f"{role}_read"


class StageTimer:
    """Busy milliseconds of a stage, as the Beam distribution ``<stage>_ms`` (the manifest's
    ``stage_busy_seconds``). Time only the stage's own work: code between a DoFn's ``yield`` and its
    next step also runs the fused steps downstream, so compute first, then yield.

        timer = StageTimer("validate")      # in the DoFn's __init__
        with timer:                          # in process()
            out = work(element)
    """

    def __init__(self, stage: str):
        self._stage = stage
        self._dist = None
        self._start = 0.0

    def __enter__(self) -> StageTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._dist is None:
            from apache_beam.metrics import Metrics

            self._dist = Metrics.distribution(NAMESPACE, f"{self._stage}_ms")
        self._dist.update(int((time.perf_counter() - self._start) * 1000))

    def __getstate__(self) -> dict:  # a DoFn attribute: pickled without the live metric
        return {"_stage": self._stage, "_dist": None, "_start": 0.0}
