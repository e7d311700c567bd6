"""StageTimer's busy time and Python heap peak, read back through Beam metrics."""

import tracemalloc

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter

from transforms.common import metrics

_MIB = 1 << 20


class _AllocateFn(beam.DoFn):
    def __init__(self):
        self._timer = metrics.StageTimer("probe")

    def process(self, mib: int):
        with self._timer:
            block = np.ones(mib * _MIB, dtype=np.uint8)  # alive only inside the timed section
            total = int(block[::4096].sum())
        yield total


def _distributions() -> dict:
    p = beam.Pipeline(runner="FnApiRunner")
    _ = p | beam.Create([48]) | beam.ParDo(_AllocateFn())
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    return {d.key.metric.name: d.committed for d in found["distributions"]}


@pytest.fixture
def tracing():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_stage_heap_peak_is_reported_while_tracing(tracing):
    dists = _distributions()
    assert dists["probe_ms"].count == 1
    heap = dists["probe" + metrics.HEAP_SUFFIX]
    assert heap.count == 1
    assert heap.max >= 48  # the 48 MiB block was alive during the stage


def test_no_heap_metric_without_tracing():
    assert not tracemalloc.is_tracing()
    dists = _distributions()
    assert "probe_ms" in dists
    assert "probe" + metrics.HEAP_SUFFIX not in dists
