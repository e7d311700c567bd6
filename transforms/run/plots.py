"""The run report's plots: bar charts drawn as inline SVG (no plotting dependency), one per figure.

Each figure is a ``<figure id="...">`` with a ``<figcaption>``, so a parser or a test can find it:
``distance-histogram`` (emitted pairs), ``shard-sizes``, ``stage-times``, ``recall-audit`` (per
shard, with the overall recall as a line) and ``cluster-sizes`` (dedup). A figure whose data the
manifest does not hold is replaced by an :func:`absent` note saying why.

This module draws from data it is given; reading a run's outputs and laying out the page is
``transforms.run.report``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["absent", "audit_figure", "cluster_figure", "distance_figure", "format_number", "shard_figure",
           "stage_figure", "figure_png"]

_HIST_BINS = 40


def format_number(value: float) -> str:
    """A number for a label or a table cell: thousands separated, 3 significant digits below 1000."""
    if value == 0:
        return "0"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _bar_chart(labels: Sequence[str], values: Sequence[float], *, x_label: str, y_label: str,
               line: tuple[float, str] | None = None, log_y: bool = False, y_max: float | None = None,
               width: int = 760, height: int = 280) -> str:
    """A vertical bar chart as an inline SVG string; every bar has a tooltip (``<title>``)."""
    left, right, top, bottom = 64, 16, 14, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    vals = [max(0.0, float(v)) for v in values]
    if log_y:
        scale_top = math.log10(1 + max(vals, default=1) or 1)
        ticks = [10 ** e for e in range(int(math.ceil(scale_top)) + 1)]
        ticks = [0.0] + [t for t in ticks if math.log10(1 + t) <= scale_top * 1.001 or t == 1]

        def y_of(v: float) -> float:
            return top + plot_h * (1 - (math.log10(1 + v) / scale_top if scale_top else 0))
    else:
        ticks = _nice_ticks(y_max if y_max is not None else max(vals + [line[0] if line else 0], default=1))
        span = ticks[-1] or 1

        def y_of(v: float) -> float:
            return top + plot_h * (1 - v / span)

    out = [f'<svg width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img">']
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{format_number(t)}</text>')
    n = max(1, len(vals))
    slot = plot_w / n
    every = max(1, math.ceil(n / 24))  # at most ~24 x labels
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        x = left + i * slot
        y = y_of(v)
        out.append(f'<rect x="{x + slot * 0.1:.1f}" y="{y:.1f}" width="{max(slot * 0.8, 0.5):.1f}" '
                   f'height="{top + plot_h - y:.1f}" fill="#4a7bb7"><title>{html.escape(str(label))}: '
                   f'{format_number(v)}</title></rect>')
        if i % every == 0:
            cx, cy = x + slot / 2, top + plot_h + 12
            out.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" '
                       f'transform="rotate(-35 {cx:.1f} {cy:.1f})">{html.escape(str(label))}</text>')
    if line is not None:
        y = y_of(line[0])
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c0392b" '
                   f'stroke-width="2" stroke-dasharray="6 3"/><text x="{left + plot_w - 4}" '
                   f'y="{y - 5:.1f}" text-anchor="end" style="fill:#c0392b">{html.escape(line[1])}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#888"/>'
               f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
               f'stroke="#888"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
               f'{html.escape(x_label)}</text>')
    out.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{html.escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _figure(fig_id: str, svg: str, caption: str) -> str:
    return f'<figure id="{fig_id}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def absent(section: str, message: str) -> str:
    """The note that replaces a section whose data the manifest does not hold."""
    return f'<p class="absent" data-section="{section}">{html.escape(message)}</p>'


def distance_figure(distances: np.ndarray | None, note: str) -> str:
    """``distance-histogram``: the distances of the emitted pairs (all or a sample, as ``note`` says)."""
    if distances is None:
        return absent("distance-histogram", f"No distance histogram: {note}.")
    finite = distances[np.isfinite(distances)]
    if len(finite) == 0:
        return absent("distance-histogram", "No distance histogram: the run emitted no pairs.")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-9
    counts, edges = np.histogram(finite, bins=_HIST_BINS, range=(lo, hi))
    labels = [f"{edges[i]:.4g}" for i in range(len(counts))]
    svg = _bar_chart(labels, counts, x_label="distance (bin start; smaller is closer)", y_label="pairs")
    return _figure("distance-histogram", svg,
                   f"Distance of emitted pairs: {note}; min {lo:.4g}, median {np.median(finite):.4g}, "
                   f"max {hi:.4g}.")


def shard_figure(shards: list[dict[str, Any]]) -> str:
    """``shard-sizes``: candidates per index shard."""
    if not shards:
        return absent("shard-sizes", "No shard sizes: the manifest lists no index shards.")
    labels = [str(s.get("shard")) for s in shards]
    sizes = [s.get("size", 0) or 0 for s in shards]
    kinds = sorted({str(s.get("kind")) for s in shards})
    return _figure("shard-sizes", _bar_chart(labels, sizes, x_label="shard", y_label="candidates"),
                   f"Candidates per index shard ({len(shards)} shard(s), {', '.join(kinds)}; "
                   f"total {sum(sizes):,}, largest {max(sizes):,}).")


def stage_figure(manifest: dict[str, Any]) -> str:
    """``stage-times``: busy seconds per stage (a local run records them)."""
    busy = manifest.get("stage_busy_seconds")
    if not busy:
        return absent("stage-times", "No per-stage times: the manifest has no stage_busy_seconds "
                                      "(recorded by the launcher of a local run only).")
    stages = sorted(busy.items(), key=lambda kv: -float(kv[1]))
    wall = manifest.get("wall_seconds")
    caption = "Busy seconds per stage, summed over workers"
    caption += f"; wall time {float(wall):.1f} s." if isinstance(wall, int | float) else "."
    return _figure("stage-times", _bar_chart([k for k, _ in stages], [float(v) for _, v in stages],
                                             x_label="stage", y_label="busy seconds"), caption)


def audit_figure(audit: dict[str, Any] | None) -> str:
    """``recall-audit``: recall@k per shard, with the overall recall as a line."""
    if not audit:
        return absent("recall-audit", "No recall audit: the manifest has no audit section "
                                       "(the audit was not run or is not recorded by this version).")
    per_shard = sorted(((int(k), float(v)) for k, v in (audit.get("per_shard") or {}).items()))
    overall = audit.get("recall_at_k")
    if not per_shard and overall is None:
        return absent("recall-audit", "Recall audit present but empty: no true neighbour in the sample.")
    line = (float(overall), f"overall {float(overall):.4f}") if overall is not None else None
    svg = _bar_chart([str(s) for s, _ in per_shard], [v for _, v in per_shard], x_label="shard",
                     y_label="recall@k", line=line, y_max=1.0)
    return _figure("recall-audit", svg,
                   f"Recall@k of the audit sample ({audit.get('sample_size', '?')} queries) per shard "
                   f"holding true neighbours; dashed line: overall recall "
                   f"{'n/a' if overall is None else f'{float(overall):.4f}'}.")


def _cluster_bins(hist: dict[Any, Any]) -> tuple[list[str], list[int]]:
    """Cluster-size histogram in power-of-two bins: 1, 2, 3-4, 5-8, ..."""
    sizes = {int(k): int(v) for k, v in hist.items()}
    if not sizes:
        return [], []
    top_bin = max(0, math.ceil(math.log2(max(sizes))))
    labels, counts = [], [0] * (top_bin + 1)
    for b in range(top_bin + 1):
        lo, hi = (1, 1) if b == 0 else (2 ** (b - 1) + 1, 2 ** b)
        labels.append(str(lo) if lo == hi else f"{lo}-{hi}")
    for size, count in sizes.items():
        counts[0 if size <= 1 else math.ceil(math.log2(size))] += count
    return labels, counts


def cluster_figure(manifest: dict[str, Any]) -> str:
    """``cluster-sizes``: clusters by size in power-of-two bins (dedup)."""
    stats = manifest.get("clusters")
    if not stats:
        why = ("clusters are computed in dedup mode only" if manifest.get("mode") == "link"
               else "the manifest has no clusters section")
        return absent("cluster-sizes", f"No cluster-size histogram: {why}.")
    labels, counts = _cluster_bins(stats.get("cluster_size_histogram") or {})
    if not labels:
        return absent("cluster-sizes", "No cluster-size histogram: no clusters.")
    svg = _bar_chart(labels, counts, x_label="cluster size (records)", y_label="clusters (log scale)",
                     log_y=True)
    return _figure("cluster-sizes", svg,
                   f"Clusters by size: {stats.get('num_clusters', sum(counts)):,} clusters, "
                   f"{stats.get('num_giant_clusters', 0)} larger than "
                   f"{stats.get('max_cluster_size', '?')} flagged.")


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (90 dpi, tight layout); the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
