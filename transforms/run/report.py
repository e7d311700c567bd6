"""The run report: ``DIR/report.html`` (one self-contained page) and the CLI's one-screen text summary.

:func:`write_report` reads ``DIR/manifest.json`` and the match files and writes one HTML page that
opens offline: no script, no external stylesheet, font or image; every plot is an inline SVG drawn
by ``transforms.run.plots`` (no plotting dependency) inside ``<figure id="...">`` with a
``<figcaption>``, so a parser or a test can find it. Plots: ``distance-histogram`` (emitted pairs),
``shard-sizes``, ``stage-times``, ``recall-audit`` (per shard, with the overall recall as a line) and
``cluster-sizes`` (dedup). Tables:
the counts, dead letters by stage, index parameters per shard, audit and cluster summaries, the flags.
Sections whose data the manifest does not hold (no audit, no clusters, no timings of a remote run)
are replaced by a ``<p class="absent" data-section="...">`` note saying why.

Bounded reading: when the run wrote at most ``max_sample_rows`` pairs (the manifest's
``pairs_written``) the histogram uses every pair, read with :func:`transforms.io.results.read_matches`;
otherwise match files are streamed in name order, kept whole while they fit, and the first file that
does not fit is sampled uniformly (seeded), so memory stays at ``max_sample_rows`` distances and at
most one file is read beyond them. Match files are routed by a stable hash of query_id, so whole
files are an unbiased sample of queries (all of a query's pairs live in one file); within a file rows
are sorted by query_id, hence the uniform sample rather than its first rows. The caption says which
rows the histogram shows.

:func:`summary_text` renders the manifest as the short text block printed at the end of a CLI run.

This module only reads a finished (or failed) run's output (a run still ``running`` is refused, see
:func:`write_report`); it computes no metric the pipeline did not record, except the distance
histogram.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from transforms.common.artifacts import join_path, write_text
from transforms.run.plots import (
    absent,
    audit_figure,
    cluster_figure,
    distance_figure,
    format_number,
    shard_figure,
    stage_figure,
)

__all__ = ["write_report", "render_report", "summary_text", "report_path", "DEFAULT_MAX_SAMPLE_ROWS"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_SAMPLE_ROWS = 1_000_000
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1000px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:16px 0}figcaption{color:#555;font-size:13px;margin-top:4px}
.absent{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:6px 10px}
.state-failed{color:#a94442;font-weight:bold}.state-succeeded{color:#3c763d;font-weight:bold}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#333}
"""


def report_path(output_dir: str) -> str:
    """``DIR/report.html``."""
    return join_path(output_dir, "report.html")


def write_report(output_dir: str, *, max_sample_rows: int = DEFAULT_MAX_SAMPLE_ROWS,
                 allow_incomplete: bool = False) -> str:
    """Builds ``DIR/report.html`` from the run's manifest and match files.

    A run whose manifest still says ``running`` without ``_SUCCESS`` (in progress, or killed) is
    refused unless ``allow_incomplete``; a failed run gets its page, with the histogram only when
    its match files are the whole shard set.

    Args:
        output_dir: the run's output directory (any Beam filesystem).
        max_sample_rows: most pair distances read for the histogram (see the module docstring).
        allow_incomplete: write a page for a run that has not finished too.

    Returns:
        The path of the written report.

    Raises:
        IncompleteRunError: the run has not finished (see transforms.common.run_dir).
        BeamIOError, OSError: the report could not be written.
    """
    from apache_beam.io.filesystems import FileSystems

    from transforms.common.artifacts import SUCCESS_MARKER
    from transforms.common.run_dir import IncompleteRunError
    from transforms.io.results import read_manifest

    try:
        manifest = read_manifest(output_dir)
    except (OSError, ValueError) as e:  # a run that died before writing it still gets a page
        _LOGGER.warning("no readable manifest.json under %s: %s", output_dir, e)
        manifest = {"_missing": f"no readable manifest.json: {e}"}
    if (not allow_incomplete and manifest.get("exit_state") == "running"
            and not FileSystems.exists(join_path(output_dir, SUCCESS_MARKER))):
        raise IncompleteRunError(f"{output_dir}: the run has not finished (exit_state running: still "
                                 "running, or killed); no report written")
    distances, note = _sample_distances(output_dir, manifest, max_sample_rows)
    path = report_path(output_dir)
    write_text(path, render_report(manifest, distances, distance_note=note, output_dir=output_dir))
    _LOGGER.info("wrote %s", path)
    return path


# --------------------------------------------------------------------------------------------------
# Reading the pairs (bounded)


def _sample_distances(output_dir: str, manifest: dict[str, Any], max_rows: int
                      ) -> tuple[np.ndarray | None, str]:
    """Distances of the emitted pairs (all, or a bounded sample) and a caption note; None if unreadable."""
    from transforms.io.results import check_match_set, read_matches, stream_distances

    written = manifest.get("counts", {}).get("pairs_written")
    try:
        if isinstance(written, int) and written <= max_rows:
            check_match_set(output_dir, manifest)
            distances = read_matches(output_dir, allow_incomplete=True)["distance"].to_numpy(
                dtype=np.float64)
            return distances, f"all {len(distances):,} emitted pairs"
        distances, whole, rest, total_files = stream_distances(output_dir, max_rows)
    except FileNotFoundError as e:
        return None, str(e)
    if rest == "none":
        return distances, f"all {len(distances):,} emitted pairs ({total_files} match files)"
    of_total = f" of {written:,}" if isinstance(written, int) else ""
    which = f"every row of the first {whole} of {total_files} match files in name order"
    if rest == "sampled":
        which += f" and a uniform sample of file {whole + 1}"
    return distances, (f"a sample of {len(distances):,}{of_total} pairs: {which} (a file holds whole "
                       f"queries, routed by a hash of query_id)")


# --------------------------------------------------------------------------------------------------
# Tables


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int | float):
        text = format_number(value) if isinstance(value, float) else f"{value:,}"
        return f'<td class="num">{html.escape(text)}</td>'
    if isinstance(value, dict | list):
        return f"<td><code>{html.escape(json.dumps(value, sort_keys=True, default=str))}</code></td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_section(m: dict[str, Any]) -> str:
    counts = m.get("counts") or {}
    if not counts:
        return "<h2>Counts</h2>" + absent("counts", "No counts: the manifest has no counts section.")
    names = [k for k in ("queries_read", "candidates_read", "input_read", "candidates_indexed",
                         "pairs_written", "dead_letters_total") if k in counts]
    names += sorted(k for k in counts if k not in names and k != "dead_letters")
    parts = ["<h2>Counts</h2>", _table(["count", "value"], [(k, counts[k]) for k in names], "counts")]
    dead = counts.get("dead_letters") or {}
    parts.append("<h2>Dead letters by stage</h2>")
    parts.append(_table(["stage", "records"], sorted(dead.items()), "dead-letters") if dead
                 else "<p>No record was rejected.</p>")
    return "".join(parts)


def _shards_section(shards: list[dict[str, Any]]) -> str:
    if not shards:
        return ""
    keys = sorted({k for s in shards for k in (s.get("params") or {})})
    rows = [[s.get("shard"), s.get("kind"), s.get("size"), *[(s.get("params") or {}).get(k) for k in keys]]
            for s in shards]
    return "<h2>Index parameters</h2>" + _table(["shard", "kind", "size", *keys], rows, "index-params")


def _audit_section(audit: dict[str, Any] | None) -> str:
    if not audit:
        return ""
    rows = [(k, audit[k]) for k in ("recall_relevant", "target", "relevance_cutoff", "relevant_pairs",
                                    "found_relevant_pairs", "recall_at_k", "sample_size", "true_pairs",
                                    "found_pairs") if k in audit]
    return _table(["audit", "value"], rows, "audit")


def _cluster_section(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    keys = ("num_records", "num_clusters", "num_singletons", "max_cluster_size", "num_giant_clusters",
            "rounds", "max_rounds", "converged", "finished_in_one_place", "unconverged_edges")
    parts = [_table(["clusters", "value"], [(k, stats[k]) for k in keys if k in stats], "cluster-stats")]
    largest = stats.get("largest_clusters") or []
    if largest:
        parts.append("<h3>Largest clusters</h3>" + _table(
            ["cluster_id", "size"], [(c.get("cluster_id"), c.get("size")) for c in largest],
            "largest-clusters"))
    giants = stats.get("giant_clusters") or []
    if giants:
        parts.append(f"<h3>Giant clusters (larger than {stats.get('max_cluster_size')})</h3>" + _table(
            ["cluster_id", "size"], [(c.get("cluster_id"), c.get("size")) for c in giants],
            "giant-clusters"))
    return "".join(parts)


def render_report(manifest: dict[str, Any], distances: np.ndarray | None, *, distance_note: str = "",
                  output_dir: str = "") -> str:
    """The report page as a string (see :func:`write_report`, which reads its inputs).

    Args:
        manifest: the run manifest (any subset of its keys).
        distances: distances of the emitted pairs (all or a sample), or None when unreadable.
        distance_note: what ``distances`` holds, for the caption (or why it is None).
        output_dir: shown in the header.

    Returns:
        A complete, self-contained HTML document.
    """
    state = str(manifest.get("exit_state", "unknown"))
    mode = manifest.get("mode", "?")
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>corpus-matcher report: {html.escape(str(mode))} run</title>"
            f"<style>{_CSS}</style></head><body>")
    parts = [head, f"<h1>corpus-matcher {html.escape(str(mode))} run</h1>",
             f'<p>Exit state: <span class="state-{html.escape(state)}">{html.escape(state)}</span>']
    if isinstance(manifest.get("wall_seconds"), int | float):
        parts.append(f" &middot; wall time {float(manifest['wall_seconds']):.1f} s")
    if output_dir:
        parts.append(f" &middot; output <code>{html.escape(output_dir)}</code>")
    parts.append("</p>")
    if manifest.get("_missing"):
        parts.append(absent("manifest", str(manifest["_missing"])))
    if manifest.get("error"):
        parts.append(f'<p class="state-failed">Error: {html.escape(str(manifest["error"]))}</p>')
    shards = list(manifest.get("shards") or [])
    audit = manifest.get("audit")
    parts += [_summary_section(manifest),
              "<h2>Emitted pairs</h2>", distance_figure(distances, distance_note),
              "<h2>Index shards</h2>", shard_figure(shards), _shards_section(shards),
              "<h2>Stage times</h2>", stage_figure(manifest),
              "<h2>Recall audit</h2>", audit_figure(audit), _audit_section(audit)]
    parts += ["<h2>Clusters</h2>", cluster_figure(manifest), _cluster_section(manifest.get("clusters"))]
    flags = manifest.get("flags")
    if flags:
        parts.append("<h2>Flags</h2><details><summary>all flags</summary>"
                     + _table(["flag", "value"], sorted(flags.items()), "flags") + "</details>")
    versions = manifest.get("versions")
    if versions:
        parts.append("<details><summary>stack versions</summary>"
                     + _table(["package", "version"], sorted(versions.items()), "versions") + "</details>")
    parts.append("</body></html>\n")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# Text summary


def summary_text(manifest: dict[str, Any]) -> str:
    """The one-screen text summary of a run for the end of a CLI run (no trailing newline).

    Args:
        manifest: the run manifest; missing keys print as ``?`` or are left out.

    Returns:
        A few lines of plain text.
    """
    counts = manifest.get("counts") or {}
    shards = manifest.get("shards") or []
    wall = manifest.get("wall_seconds")
    took = f" in {float(wall):.1f} s" if isinstance(wall, int | float) else ""
    lines = [f"corpus-match {manifest.get('mode', '?')} run: {manifest.get('exit_state', '?')}{took}"]
    read = ", ".join(f"{k.removesuffix('_read')} {v:,}" for k, v in counts.items()
                     if k.endswith("_read") and isinstance(v, int))
    lines.append(f"  read:       {read or '?'}")
    kinds = ", ".join(sorted({str(s.get("kind")) for s in shards}))
    indexed = counts.get("candidates_indexed")
    lines.append(f"  indexed:    {_count(indexed)} candidates in {len(shards)} shard(s)"
                 + (f" ({kinds})" if kinds else ""))
    lines.append(f"  pairs:      {_count(counts.get('pairs_written'))} written")
    dead = counts.get("dead_letters") or {}
    by_stage = ", ".join(f"{k} {v:,}" for k, v in sorted(dead.items()))
    lines.append(f"  rejected:   {_count(counts.get('dead_letters_total', 0))}"
                 + (f" ({by_stage})" if by_stage else ""))
    audit = manifest.get("audit")
    if audit:
        recall = audit.get("recall_at_k")
        text = "n/a" if recall is None else f"{float(recall):.4f}"
        worst = min(((float(v), str(k)) for k, v in (audit.get("per_shard") or {}).items()), default=None)
        top_k = (manifest.get("flags") or {}).get("top_k", "k")
        lines.append(f"  recall@{top_k}:  {text} on {audit.get('sample_size', '?')} sampled queries"
                     + (f" (worst shard {worst[1]}: {worst[0]:.4f})" if worst else ""))
    if audit and "recall_relevant" in audit:
        relevant = audit["recall_relevant"]
        lines.append(f"  relevant:   {'n/a' if relevant is None else f'{float(relevant):.4f}'} of "
                     f"{_count(audit.get('relevant_pairs'))} pairs: {audit.get('target', '?')}")
    tuning = [v for v in (manifest.get("search_tuning") or {}).values() if isinstance(v, dict)]
    if tuning:
        leaves = sorted({v["leaves_to_search"] for v in tuning if v.get("leaves_to_search") is not None})
        span = "" if not leaves else (f", leaves_to_search {leaves[0]}" if len(leaves) == 1
                                      else f", leaves_to_search {leaves[0]}-{leaves[-1]}")
        targets = sorted({str(v["target"]) for v in tuning if v.get("target")})
        lines.append(f"  tuned:      {len(tuning)} shard(s){span}"
                     + (f", aimed at {targets[0]}" if len(targets) == 1 else ""))
    clusters = manifest.get("clusters")
    if clusters:
        largest = (clusters.get("largest_clusters") or [{}])[0]
        state = "converged" if clusters.get("converged") else (
            "finished on one worker" if clusters.get("finished_in_one_place") else "not converged")
        lines.append(f"  clusters:   {_count(clusters.get('num_clusters'))} "
                     f"({_count(clusters.get('num_singletons'))} singletons), largest "
                     f"{_count(largest.get('size'))} ({largest.get('cluster_id', '?')}), "
                     f"{_count(clusters.get('num_giant_clusters'))} over "
                     f"{_count(clusters.get('max_cluster_size'))}; "
                     f"{clusters.get('rounds', '?')} rounds, {state}")
    busy = manifest.get("stage_busy_seconds") or {}
    if busy:
        lines.append("  busy time:  " + ", ".join(f"{k} {float(v):.1f}s" for k, v in sorted(busy.items())))
    if manifest.get("error"):
        lines.append(f"  error:      {str(manifest['error'])[:300]}")
    output = (manifest.get("flags") or {}).get("output")
    if output:
        lines.append(f"  output:     {output}/ (matches/, dead_letters/, indexes/, manifest.json"
                     + (", clusters/" if clusters else "") + ")")
    return "\n".join(lines)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"
