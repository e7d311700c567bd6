"""Benchmark: embedding through RunInference (``EmbedRecords``) vs a raw batched call of the same model.

Both paths embed the same rows with the same SavedModel (default: the built-in embedder) in the same
process, and the bench prints rows/s of each and the ratio (target: RunInference >= 0.8x raw):

* raw: ``tf.saved_model.load`` once, then per batch of ``--batch_rows`` rows the same feature
  conversion the handler does (Arrow -> padded numpy), one signature call, one ``.numpy()``;
  also reported without the conversion (model call only, features converted beforehand);
* RunInference: a DirectRunner pipeline, batches in -> ``EmbedRecords(model_dir=...)`` -> vectors
  counted. Reported end to end (pipeline start-up and model load included) and steady state: rows
  out after the 10th batch went in, over the time from then to the last vector out (measured inside
  the pipeline; the first batches pay the model load, BatchElements' start and Beam's sizing of the
  first 10 elements of every PCollection, which a real run amortises over thousands of batches).

Rows: person records from ``transforms.testing.people`` (a small built-in generator stands in when
that module is absent) are preprocessed once with ``AnalyzeAndTransformFeatures`` (``--records``
distinct records), and their transformed features are tiled, with fresh ids, to ``--rows`` rows.

    python -m bench.embed --rows 200000 --records 20000
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import tempfile
import time
from typing import Any

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the brief's numbers are CPU numbers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from transforms.common.schema import FeatureBatch  # noqa: E402

__all__ = ["main", "synthetic_people", "make_records"]

_LOGGER = logging.getLogger(__name__)

FIELDS = ("given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state",
          "date_of_birth")


def synthetic_people(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A small stand-in person generator (used only when transforms.testing.people is missing)."""
    rng = np.random.default_rng(seed)
    given = np.array("john mary peter anna james linda david susan michael karen paul emma mark lisa "
                     "robert sarah thomas julie daniel helen".split())
    surnames = np.array("smith jones brown wilson taylor nguyen martin white walker harris lee ryan "
                        "king kelly baker hall wood young allen scott".split())
    streets = np.array("high church station park george king queen main bridge mill".split())
    suburbs = np.array("sydney parramatta blacktown penrith newtown richmond kew carlton".split())
    states = np.array(["NSW", "VIC", "QLD", "WA", "SA"])
    out = []
    for i in range(n):
        out.append({
            "rec_id": f"s-{i:07d}",
            "given_name": str(rng.choice(given)).title(),
            "surname": str(rng.choice(surnames)).title() + ("" if rng.random() < 0.7 else "s"),
            "street_number": str(rng.integers(1, 300)),
            "address_1": f"{rng.choice(streets).title()} Street",
            "suburb": str(rng.choice(suburbs)).title(),
            "postcode": str(rng.integers(2000, 4000)),
            "state": str(rng.choice(states)),
            "date_of_birth": f"{rng.integers(1930, 2005)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
        })
    return out


def make_records(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` person records: both corpora of the people generator, or the stand-in."""
    try:
        from transforms.testing.people import make_link_corpora
    except ImportError:
        _LOGGER.warning("transforms.testing.people not found: using the built-in stand-in generator")
        return synthetic_people(n, seed)
    a, b, _ = make_link_corpora(max(1, n // 2), seed=seed)
    return (a + b)[:n]


def to_feature_batches(records: list[dict], batch_rows: int) -> list[FeatureBatch]:
    batches = []
    for start in range(0, len(records), batch_rows):
        chunk = records[start:start + batch_rows]
        table = pa.RecordBatch.from_arrays(
            [pa.array([r.get(f) or None for r in chunk], pa.string()) for f in FIELDS], names=list(FIELDS))
        batches.append(FeatureBatch(ids=np.array([r["rec_id"] for r in chunk], dtype=object),
                                    origins=np.array([f"bench#{start + i}" for i in range(len(chunk))],
                                                     dtype=object), table=table))
    return batches


def preprocess(records: list[dict], work_dir: str, batch_rows: int) -> pa.Table:
    """Runs AnalyzeAndTransformFeatures on the records; returns the transformed feature table."""
    from transforms.features.preprocess import AnalyzeAndTransformFeatures

    out_path = os.path.join(work_dir, "transformed.pkl")

    def save(batches: list[Any]) -> None:
        with open(out_path, "wb") as fh:
            pickle.dump(pa.Table.from_batches([b.table for b in batches]), fh)

    with beam.Pipeline() as p:
        result = ({"input": p | "CreateRecords" >> beam.Create(to_feature_batches(records, batch_rows))}
                  | "Preprocess" >> AnalyzeAndTransformFeatures(
                      text_fields=FIELDS, temp_dir=os.path.join(work_dir, "tft_tmp")))
        _ = result.input | "Collect" >> beam.combiners.ToList() | "Save" >> beam.Map(save)
    with open(out_path, "rb") as fh:
        return pickle.load(fh)


class _Tiles:
    """Batch i of the tiled rows: a copy of a slice of the transformed sample with fresh ids.

    All batches are made on the first call in a process (outside the steady-state window) and
    cached, so the pipeline's timed part does no more work per batch than the raw loop.
    """

    def __init__(self, sample_path: str, batch_rows: int, rows: int):
        self._path = sample_path
        self._batch_rows = batch_rows
        self._rows = rows
        self._batches = None

    def __getstate__(self) -> dict:  # the pipeline gets the recipe, not the batches
        return {**self.__dict__, "_batches": None}

    def _make(self, sample: pa.Table, i: int) -> Any:
        from transforms.features.preprocess import TransformedBatch

        n = min(self._batch_rows, self._rows - i * self._batch_rows)
        start = (i * self._batch_rows) % max(1, sample.num_rows - n + 1)
        # take() copies: a batch owns its buffers, as a preprocessing output does (a zero-copy slice
        # would drag the whole sample along whenever Beam pickles or sizes the element)
        table = sample.take(np.arange(start, start + n)).combine_chunks().to_batches()[0]
        ids = np.array([f"t{i}-{j}" for j in range(n)], dtype=object)
        return TransformedBatch(ids=ids, origins=ids, table=table)

    def __call__(self, i: int) -> Any:
        if self._batches is None:
            with open(self._path, "rb") as fh:
                sample = pickle.load(fh)
            repeat = -(-self._batch_rows // max(1, sample.num_rows))  # a batch may exceed the sample
            sample = pa.concat_tables([sample] * repeat).combine_chunks()
            count = -(-self._rows // self._batch_rows)
            self._batches = [self._make(sample, j) for j in range(count)]
        return self._batches[i]


_STAMPS: dict[str, list[float]] = {"in": [], "out": [], "rows": []}
_WARM_UP = 10


def _stamp_in(element: Any) -> Any:
    _STAMPS["in"].append(time.perf_counter())
    return element


def _stamp_out(element: Any) -> int:
    _STAMPS["out"].append(time.perf_counter())
    _STAMPS["rows"].append(len(element))
    return len(element)  # a small element: Beam samples (encodes) elements to size PCollections


def run_raw(model_dir: str, batches: list[Any], max_rows: int) -> tuple[float, float]:
    """Rows/s of the raw batched call: (with feature conversion, model call only)."""
    import tensorflow as tf

    from transforms.features.embed import features_to_numpy

    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = dict(fn.structured_input_signature[1])
    rows = sum(len(b) for b in batches)
    key = next(iter(fn.structured_outputs))
    fn(**{k: tf.constant(v) for k, v in features_to_numpy(batches[0].table, specs).items()})  # warm up
    t0 = time.perf_counter()
    for b in batches:
        for s in range(0, len(b), max_rows):
            feed = features_to_numpy(b.table.slice(s, max_rows), specs)
            fn(**{k: tf.constant(v) for k, v in feed.items()})[key].numpy()
    with_conversion = rows / (time.perf_counter() - t0)
    feeds = [features_to_numpy(b.table.slice(s, max_rows), specs) for b in batches
             for s in range(0, len(b), max_rows)]
    t0 = time.perf_counter()
    for feed in feeds:
        fn(**{k: tf.constant(v) for k, v in feed.items()})[key].numpy()
    model_only = rows / (time.perf_counter() - t0)
    return with_conversion, model_only


def run_pipeline(model_dir: str, tiles: _Tiles, num_batches: int, args: argparse.Namespace
                 ) -> tuple[float, float, int]:
    """Rows/s through EmbedRecords: (end to end, steady state) and rows embedded."""
    from bench import embed as this  # by module name, so the DirectRunner's copies share _STAMPS
    from transforms.features.embed import EmbedRecords
    from transforms.features.preprocess import TransformedBatch

    for stamps in this._STAMPS.values():
        stamps.clear()
    t0 = time.perf_counter()
    with beam.Pipeline() as p:
        result = (p | "Indexes" >> beam.Create(list(range(num_batches)))
                  | "MakeBatches" >> beam.Map(tiles).with_output_types(TransformedBatch)
                  | "StampIn" >> beam.Map(this._stamp_in).with_output_types(TransformedBatch)
                  | "Embed" >> EmbedRecords(model_dir=model_dir, min_batch_size=args.min_batch_size,
                                            max_batch_size=args.max_batch_size))
        _ = result.vectors | "StampOut" >> beam.Map(this._stamp_out)
    wall = time.perf_counter() - t0
    stamps = this._STAMPS
    rows = sum(stamps["rows"])
    # Steady state leaves out the first _WARM_UP elements: model load, Beam sizing every one of its
    # first 10 elements per PCollection, and BatchElements' first batches.
    steady = float("nan")
    if len(stamps["in"]) > 2 * _WARM_UP:
        first = sorted(stamps["in"])[_WARM_UP]
        late = sum(r for t, r in zip(stamps["out"], stamps["rows"], strict=True) if t > first)
        steady = late / (max(stamps["out"]) - first)
    return rows / wall, steady, rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="Rows embedded by each path. Default 200000.")
    ap.add_argument("--records", type=int, default=20_000,
                    help="Distinct records preprocessed (then tiled to --rows). Default 20000.")
    ap.add_argument("--batch_rows", type=int, default=4096, help="Rows per batch element. Default 4096.")
    ap.add_argument("--min_batch_size", type=int, default=64, help="EmbedRecords min rows. Default 64.")
    ap.add_argument("--max_batch_size", type=int, default=4096,
                    help="Rows per model call (both paths). Default 4096.")
    ap.add_argument("--model_dir", default=None, help="SavedModel to bench; default: the built-in embedder.")
    ap.add_argument("--seed", type=int, default=0, help="Generator seed. Default 0.")
    ap.add_argument("--repeats", type=int, default=2, help="Measurements of each path (best kept). "
                    "Default 2.")
    ap.add_argument("--work_dir", default=None, help="Scratch directory. Default: a new temp dir.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_embed_")
    os.makedirs(work_dir, exist_ok=True)

    t0 = time.perf_counter()
    records = make_records(args.records, args.seed)
    sample = preprocess(records, work_dir, args.batch_rows)
    sample_path = os.path.join(work_dir, "sample.pkl")
    with open(sample_path, "wb") as fh:
        pickle.dump(sample, fh)
    model_dir = args.model_dir
    if model_dir is None:
        from transforms.features.default_embedder import export_default_model

        model_dir = export_default_model(os.path.join(work_dir, "default_model"), FIELDS)
    prep_s = time.perf_counter() - t0

    num_batches = -(-args.rows // args.batch_rows)
    tiles = _Tiles(sample_path, args.batch_rows, args.rows)
    batches = [tiles(i) for i in range(num_batches)]
    raw_conv = raw_model = e2e = steady = 0.0
    rows = 0
    for _ in range(args.repeats):  # alternate the paths; keep each one's best (the machine is shared)
        conv, model_only = run_raw(model_dir, batches, args.max_batch_size)
        raw_conv, raw_model = max(raw_conv, conv), max(raw_model, model_only)
        end_to_end, steady_state, rows = run_pipeline(model_dir, tiles, num_batches, args)
        e2e, steady = max(e2e, end_to_end), max(steady, steady_state)
    print(f"bench.embed: {rows} rows ({args.records} distinct records preprocessed in {prep_s:.1f} s), "
          f"batches of {args.batch_rows} rows, model calls of <= {args.max_batch_size} rows, best of "
          f"{args.repeats}, model {model_dir}")
    print(f"  raw batched call (conversion + model): {raw_conv:>10,.0f} rows/s")
    print(f"  raw batched call (model only):         {raw_model:>10,.0f} rows/s")
    print(f"  RunInference steady state:             {steady:>10,.0f} rows/s   ratio vs raw "
          f"{steady / raw_conv:.2f}x (target >= 0.8), vs model only {steady / raw_model:.2f}x")
    print(f"  RunInference end to end (start-up in): {e2e:>10,.0f} rows/s   ratio vs raw "
          f"{e2e / raw_conv:.2f}x")


if __name__ == "__main__":
    main()
