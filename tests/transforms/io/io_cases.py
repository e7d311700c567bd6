"""Tiny input files, pair rows and pipeline helpers shared by the tests of transforms/io/.

Pipelines run on ``FnApiRunner`` by name: the default ``DirectRunner`` first tries to download the Prism
runner binary (slow, or a failed network call offline) and then falls back to this same in-process
FnApiRunner; naming it skips the download. ``BundleBasedDirectRunner`` measured the same speed here but
is the legacy engine, so tests would exercise something other than what local runs use.
"""

from __future__ import annotations

from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing import test_pipeline

from transforms.common.dead_letters import DEAD_LETTER_TAG
from transforms.common.schema import RawBatch
from transforms.io.tfrecord import encode_example, frame_tfrecord

RUNNER = "FnApiRunner"


def _pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=RUNNER)


def _tfrecord_bytes():
    good = [encode_example({"id": "t1", "embedding": [0.5, 0.25]}),
            encode_example({"id": "t2", "embedding": [1.0], "n": 3}),
            encode_example({"id": "t3", "embedding": [2.0]})]
    corrupt = bytearray(frame_tfrecord(encode_example({"id": "bad crc"})))
    corrupt[14] ^= 0xFF  # a data byte: the data checksum no longer matches
    truncated = frame_tfrecord(encode_example({"id": "cut"}))[:-3]
    return b"".join([frame_tfrecord(good[0]), frame_tfrecord(b"\xff\xff\xff"), frame_tfrecord(good[1]),
                     bytes(corrupt), frame_tfrecord(good[2]), truncated])


def _read_directly(path: str, fmt: str, batch_size: int = 4096) -> tuple[list, list]:
    """Runs the planning and reading DoFns in-process: (RawBatches, DeadLetters)."""
    from transforms.io.read_corpus import _PlanReadUnitsFn, _ReadUnitFn

    outputs = list(_PlanReadUnitsFn(fmt, "candidates").process(FileMetadata(path, 0)))
    for unit in [o for o in outputs if isinstance(o, tuple)]:
        outputs += list(_ReadUnitFn("candidates", batch_size).process(unit))
    batches = [o for o in outputs if isinstance(o, RawBatch)]
    dead = [o.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == DEAD_LETTER_TAG]
    return batches, dead
