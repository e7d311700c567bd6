"""``corpus-match explain``: the waterfall of one pair's match weight, field by field.

Reads a finished run's fitted model (``DIR/scoring/model.json``), its term-frequency sketch
(``DIR/scoring/term_frequencies.npz``), the pair's embedding distance from the match files when the
run emitted the pair, and the two records from the run's own inputs (the globs, format, id and
fields recorded in ``manifest.json``), then compares them exactly as the job does and prints the
prior, each field's level and weight (with its term-frequency adjustment) and the total, as
Splink's waterfall chart does.

It scans the input files for the two ids, so it suits spot checks, not bulk use; local files or
any Beam filesystem. Pure numpy + the comparison code: no pipeline runs. The command line is
``beam_jobs.commands.explain``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from transforms.scoring.comparisons import compare_fields, concat_fields, record_fields, take_rows
from transforms.scoring.fellegi_sunter import FellegiSunterModel, term_frequencies

__all__ = ["explain_pair", "format_explanation", "find_records"]


def find_records(pattern: str, flags: dict[str, Any], ids: set[str]):
    """RecordFields of the first occurrence of each wanted id in the files (or None if absent)."""
    from transforms.io.validate import DEFAULT_MAX_ID_LENGTH, validate_features

    text, numeric = tuple(flags["text_fields"]), tuple(flags["numeric_fields"])
    max_id_length = int(flags.get("max_id_length") or DEFAULT_MAX_ID_LENGTH)  # as the run validated
    found = {}
    from transforms.io.read_corpus import iter_raw_batches

    for raw in iter_raw_batches(pattern, flags["input_format"]):
        batches, _ = validate_features(raw, role="explain", id_field=flags["id_field"], text_fields=text,
                                       numeric_fields=numeric, max_id_length=max_id_length)
        for batch in batches:
            rows = [i for i, rid in enumerate(batch.ids) if rid in ids and rid not in found]
            if rows:
                sub = batch.table.take(rows)
                fields = record_fields(batch.ids[rows], batch.origins[rows], sub, text, numeric)
                for j, rid in enumerate(fields.ids):
                    found[rid] = take_rows(fields, np.array([j]))
        if len(found) == len(ids):
            break
    return found


def _emitted_distance(run_dir: str, query_id: str, candidate_id: str, mode: str,
                      allow_incomplete: bool = False) -> float | None:
    from transforms.io.results import read_matches

    matches = read_matches(run_dir, allow_incomplete=allow_incomplete)
    pairs = {(query_id, candidate_id)}
    if mode == "dedup":
        pairs.add((candidate_id, query_id))
    hit = matches[[(q, c) in pairs for q, c in zip(matches.query_id, matches.candidate_id, strict=True)]]
    return float(hit.distance.iloc[0]) if len(hit) else None


def explain_pair(run_dir: str, query_id: str, candidate_id: str, *,
                 allow_incomplete: bool = False) -> dict[str, Any]:
    """The waterfall of one pair of a finished scored run (see the module docstring).

    Raises IncompleteRunError (transforms.common.run_dir) for a run that did not finish, unless
    ``allow_incomplete``."""
    from transforms.common.artifacts import read_bytes, read_text
    from transforms.common.run_dir import require_finished
    from transforms.io.results import read_manifest
    from transforms.scoring.score_pairs import distance_levels, model_path, sketch_path

    if not allow_incomplete:
        require_finished(run_dir, what="its scoring model and matches")
    manifest = read_manifest(run_dir)
    flags = manifest["flags"]
    if flags.get("scorer", "none") == "none":
        raise ValueError(f"{run_dir} was run with --scorer none: there is no scoring model to explain")
    model = FellegiSunterModel.from_json(read_text(model_path(run_dir)))
    if flags["mode"] == "link":
        left = find_records(flags["queries"], flags, {query_id}).get(query_id)
        right = find_records(flags["candidates"], flags, {candidate_id}).get(candidate_id)
    else:
        both = find_records(flags["input"], flags, {query_id, candidate_id})
        left, right = both.get(query_id), both.get(candidate_id)
    for rid, rec, role in ((query_id, left, "query"), (candidate_id, right, "candidate")):
        if rec is None:
            raise KeyError(f"{role} id {rid!r} is not among the run's valid input records")
    pair = concat_fields([left, right])
    levels = compare_fields(take_rows(pair, np.array([0])), take_rows(pair, np.array([1])))[0]
    distance = _emitted_distance(run_dir, query_id, candidate_id, flags["mode"], allow_incomplete)
    cuts = np.array(model.fit.get("distance_cuts") or [np.inf] * 4)
    dist_level = -1 if distance is None else int(distance_levels(np.array([distance]), cuts)[0])
    levels = np.append(levels, np.int8(dist_level)).astype(np.int8)
    sketch = np.load(io.BytesIO(read_bytes(sketch_path(run_dir))))["sketch"]
    t = left.text.shape[1]
    agreed = np.where(levels[:t] == 0, left.hashes[0], np.uint64(0))[None, :]
    freq = term_frequencies(sketch, agreed)[0] if len(sketch) else None
    rows = model.explain(levels, freq)
    values = [(None, None)]
    for j in range(t):
        values.append((left.text[0, j], right.text[0, j]))
    for j in range(left.numbers.shape[1]):
        values.append((float(left.numbers[0, j]), float(right.numbers[0, j])))
    values.append((distance, None))
    for row, (a, b) in zip(rows, values + [(None, None)], strict=True):
        row["query_value"], row["candidate_value"] = a, b
    return {"query_id": query_id, "candidate_id": candidate_id, "emitted": distance is not None,
            "distance": distance, "terms": rows}


def format_explanation(explained: dict[str, Any]) -> str:
    """A text waterfall of :func:`explain_pair`'s result."""
    total = explained["terms"][-1]
    lines = [f"{explained['query_id']} -> {explained['candidate_id']}: match_weight "
             f"{total['weight']:+.3f}, match_probability {total['match_probability']:.6f}"
             + ("" if explained["emitted"] else " (not among the run's emitted pairs: distance unknown)"),
             f"{'term':22s} {'query value':24s} {'candidate value':24s} {'level':11s} {'weight':>8s} "
             f"{'tf adj':>7s}"]
    for row in explained["terms"][:-1]:
        a = "" if row.get("query_value") is None else str(row["query_value"])[:24]
        b = "" if row.get("candidate_value") is None else str(row["candidate_value"])[:24]
        level = row["level"] or ""
        lines.append(f"{row['term']:22s} {a:24s} {b:24s} {level:11s} {row['weight']:+8.3f} "
                     f"{row['tf_adjustment']:+7.3f}")
    return "\n".join(lines)
