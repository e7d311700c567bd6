"""End of a local run: wait, fold Beam metrics into the manifest, print a short summary.

Only used when the launcher waits (local runners); a Dataflow launch returns at once and its manifest
is the one the pipeline itself wrote.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from beam_jobs.config import MatchConfig
from transforms.common import metrics, progress
from transforms.common.run_dir import mark_finished
from transforms.io.results import read_manifest
from transforms.run.manifest import update_manifest

__all__ = ["finish_local_run", "print_summary", "collect_metrics", "start_progress"]

_LOGGER = logging.getLogger(__name__)


def collect_metrics(result) -> dict[str, Any]:
    """Counters (committed values) and distributions (sum, count) of the job's namespace."""
    out: dict[str, Any] = {"counters": {}, "distributions": {}}
    try:
        queried = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    except (AttributeError, NotImplementedError):
        return out
    for c in queried["counters"]:
        name = c.key.metric.name
        out["counters"][name] = out["counters"].get(name, 0) + (c.committed or 0)
    for d in queried["distributions"]:
        name = d.key.metric.name
        value = d.committed
        if value is None:
            continue
        prev = out["distributions"].get(name, {"sum": 0, "count": 0, "max": None})
        out["distributions"][name] = {"sum": prev["sum"] + value.sum,
                                      "count": prev["count"] + value.count,
                                      "max": value.max if prev["max"] is None
                                      else max(prev["max"], value.max)}
    return out


def finish_local_run(run, cfg: MatchConfig, start: float, *, totals: dict[str, int] | None = None):
    """Runs the pipeline (``run`` is ``Pipeline.run``) and waits; records wall time, busy time per
    stage and the exit state in the manifest, then writes ``DIR/_SUCCESS``. Returns the
    PipelineResult; re-raises a failure (no ``_SUCCESS`` then).

    While it waits, progress per stage is shown on stderr (transforms.common.progress): a redrawn line on a
    terminal, else periodic log lines; it stops (and clears its line) before this returns.
    ``totals``: at most how many items a stage will count (``{"read": n}``), known at launch.
    """
    reporter = start_progress(totals)
    try:
        result = run()
        result.wait_until_finish()
    except Exception as e:  # the runner's own error types vary; record it, then re-raise
        if reporter is not None:
            reporter.stop(final=False)
        update_manifest(cfg.output, exit_state="failed", error=f"{type(e).__name__}: {e}"[:2000],
                        wall_seconds=round(time.time() - start, 3))
        raise
    if reporter is not None:
        reporter.stop()
    found = collect_metrics(result)
    busy = {name.removesuffix("_ms"): round(v["sum"] / 1000, 3)
            for name, v in found["distributions"].items() if name.endswith("_ms")}
    extra = {}
    heap = {name.removesuffix(metrics.HEAP_SUFFIX): v["max"]
            for name, v in found["distributions"].items() if name.endswith(metrics.HEAP_SUFFIX)}
    if heap:  # only when the workers ran under tracemalloc (PYTHONTRACEMALLOC=1)
        extra["python_heap_peak_mib"] = heap
    update_manifest(cfg.output, exit_state="succeeded", wall_seconds=round(time.time() - start, 3),
                    stage_busy_seconds=busy, metrics=found["counters"], **extra)
    mark_finished(cfg.output)  # last: every output is complete
    return result


def start_progress(totals: dict[str, int] | None = None) -> progress.ProgressReporter | None:
    """Resets this process's progress registry and starts its reporter on stderr: one redrawn line
    when the console owns a terminal, else log lines every ``CORPUS_MATCH_PROGRESS_SECONDS`` (and
    when a stage starts). ``totals``: upper bounds of stages' counts (shown as ``~N``, with an ETA).
    None when that variable is 0."""
    import shutil

    from beam_jobs.console import status_terminal

    progress.REGISTRY.reset()
    for stage, total in (totals or {}).items():
        progress.set_total(stage, total, bound=True)
    seconds = progress.log_interval()
    if seconds <= 0:
        return None
    terminal = status_terminal()
    width = shutil.get_terminal_size((100, 24)).columns
    return progress.ProgressReporter(progress.REGISTRY, terminal=terminal, log_seconds=seconds,
                                     width=width).start()


def print_summary(result, cfg: MatchConfig, waited: bool) -> int:
    """Prints the one-screen summary of a finished local run (or the launch of a remote one)."""
    output = cfg.output
    if not waited:
        print(f"corpus-match: launched ({getattr(result, 'state', 'UNKNOWN')}); results will be "
              f"under {output}/")
        return 0
    from transforms.run.report import summary_text, write_report

    m = read_manifest(output)
    try:
        report = write_report(output)
    except (OSError, ValueError) as e:
        _LOGGER.warning("no report written: %s", e)
        report = "not written"
    print(summary_text(m) + f"\n  report:      {report}")
    return 0 if m.get("exit_state") == "succeeded" else 1
