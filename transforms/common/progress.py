"""Live progress of a local run: per-stage counters in this process, and a reporter that shows them.

The local runners (DirectRunner, FnApiRunner in-process) run every DoFn in the launcher's process, in
threads, so a module-level registry sees what they count. The stages' DoFns call :func:`add` once per
batch, next to their Beam metric counters (a lock and an int add: nothing measurable), and
:func:`set_total` where the job knows a total (shards planned, queries to search). On Dataflow the
counters are written and never read (the Dataflow UI shows the Beam metrics); with a runner whose
workers are separate processes the launcher's registry stays empty and nothing is shown.

:class:`ProgressReporter` (started by ``beam_jobs.summary.finish_local_run``) redraws one status line
about twice a second when stderr is a terminal, and otherwise logs one line whenever a stage starts
and every ``CORPUS_MATCH_PROGRESS_SECONDS`` seconds (10; ``0`` turns progress off). It shows nothing
for the first two seconds (or that many seconds, if fewer), and clears its line (or logs the final
counts) when the run ends, before the summary is printed. It does not replace the Beam metrics or
the manifest: those are the record.

Standard library only: the launcher and the DoFns import it without TensorFlow or Beam.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import IO, NamedTuple

__all__ = ["STAGES", "LABELS", "StageProgress", "ProgressRegistry", "REGISTRY", "add", "set_total",
           "ProgressReporter", "PROGRESS_SECONDS_ENV", "log_interval", "format_stages"]

_LOGGER = logging.getLogger(__name__)

# In the order the data reaches them.
STAGES = ("read", "embedded", "built", "searched", "scored", "written")
LABELS = {"read": "records read", "embedded": "embedded", "built": "shards built",
          "searched": "queries searched", "scored": "pairs scored", "written": "pairs written"}
PROGRESS_SECONDS_ENV = "CORPUS_MATCH_PROGRESS_SECONDS"
_DEFAULT_LOG_SECONDS = 10.0
_QUIET_START_SECONDS = 2.0  # a run this short shows no progress at all
# A stage with no count for this long shows no ETA (it waits on another stage, or is done).
_IDLE_SECONDS = 5.0


class StageProgress(NamedTuple):
    count: int
    total: int | None  # None while the job does not know it
    first: float  # clock time of the first count
    last: float  # clock time of the latest count
    first_count: int = 0  # the first update's count (work done before ``first``: not in the rate)
    bound: bool = False  # total is an upper bound (from file metadata at launch), not an exact count

    def rate(self) -> float | None:
        """Items per second between the first and the latest update (None before two updates)."""
        if self.last - self.first < 1e-6 or self.count <= self.first_count:
            return None
        return (self.count - self.first_count) / (self.last - self.first)


class ProgressRegistry:
    """Thread-safe counters per stage, with the clock time of their first and latest update."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._bounds: set[str] = set()
        self._times: dict[str, tuple[float, float, int]] = {}

    def add(self, stage: str, n: int = 1) -> None:
        """Counts ``n`` more items of ``stage`` (call once per batch, not per element)."""
        now = self._clock()
        with self._lock:
            self._counts[stage] = self._counts.get(stage, 0) + int(n)
            times = self._times.get(stage)
            self._times[stage] = (now, now, int(n)) if times is None else (times[0], now, times[2])

    def set_total(self, stage: str, total: int, *, bound: bool = False) -> None:
        """The number of items ``stage`` will count in all (once the job knows it); ``bound``: at
        most that many (an exact total set later replaces a bound)."""
        with self._lock:
            self._totals[stage] = int(total)
            if bound:
                self._bounds.add(stage)
            else:
                self._bounds.discard(stage)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._totals.clear()
            self._bounds.clear()
            self._times.clear()

    def snapshot(self) -> dict[str, StageProgress]:
        """The stages counted so far, in :data:`STAGES` order (others after them)."""
        with self._lock:
            names = [s for s in STAGES if s in self._counts]
            names += sorted(s for s in self._counts if s not in STAGES)
            return {s: StageProgress(self._counts[s], self._totals.get(s), *self._times[s],
                                     bound=s in self._bounds) for s in names}


REGISTRY = ProgressRegistry()


def add(stage: str, n: int = 1) -> None:
    """Counts ``n`` items of ``stage`` in this process's registry."""
    REGISTRY.add(stage, n)


def set_total(stage: str, total: int, *, bound: bool = False) -> None:
    REGISTRY.set_total(stage, total, bound=bound)


def log_interval() -> float:
    """Seconds between progress log lines (``CORPUS_MATCH_PROGRESS_SECONDS``); 0: no progress."""
    raw = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not raw:
        return _DEFAULT_LOG_SECONDS
    try:
        value = float(raw)
    except ValueError:
        _LOGGER.warning("%s=%r is not a number of seconds; using %g", PROGRESS_SECONDS_ENV, raw,
                        _DEFAULT_LOG_SECONDS)
        return _DEFAULT_LOG_SECONDS
    return max(0.0, value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _stage_text(stage: str, p: StageProgress, now: float) -> str:
    done = p.total is not None and p.count >= p.total
    total = "" if p.total is None else f"/~{p.total:,}" if p.bound else f"/{p.total:,}"
    text = f"{LABELS.get(stage, stage)} {p.count:,}{total}"
    rate = p.rate()
    if done or rate is None or p.last - p.first < 1.0:
        return text
    extra = f"{rate:,.0f}/s"
    if p.total is not None and now - p.last <= _IDLE_SECONDS:  # idle: waiting on another stage
        extra += f", ETA {_duration(max(0.0, (p.total - p.count) / rate - (now - p.last)))}"
    return f"{text} ({extra})"


def format_stages(snapshot: dict[str, StageProgress], now: float, separator: str = "; ") -> str:
    """``records read 10,000 (5,000/s); shards built 2/4; queries searched 3,000/10,000 (...)``."""
    return separator.join(_stage_text(s, p, now) for s, p in snapshot.items())


class ProgressReporter:
    """Shows a registry's counts while a run goes on, on a terminal or as log lines.

    Args:
        registry: what to show (:data:`REGISTRY`).
        terminal: a text stream on a terminal: one status line redrawn in place (``\\r``), cleared by
            :meth:`stop`. ``None``: log lines through ``log`` instead.
        log: writes one progress line (the module's logger at INFO by default).
        clock: monotonic seconds (the registry's clock, for rates).
        redraw_seconds: how often the thread redraws the terminal line.
        log_seconds: at most this long between log lines while counts change.
        width: the terminal's columns (the line is cut to fit).
    """

    def __init__(self, registry: ProgressRegistry = REGISTRY, *, terminal: IO[str] | None = None,
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 redraw_seconds: float = 0.5, log_seconds: float = _DEFAULT_LOG_SECONDS,
                 width: int = 100):
        self._registry = registry
        self._terminal = terminal
        self._log = log or (lambda line: _LOGGER.info("%s", line))
        self._clock = clock
        self._redraw = redraw_seconds
        self._log_seconds = log_seconds
        self._width = max(20, width)
        self._start = clock()
        self._stages: tuple[str, ...] = ()
        self._logged: str | None = None
        self._logged_at = self._start
        self._drawn = ""  # the terminal line as last drawn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """One step: redraw the terminal line, or log a line if a stage started or it is time."""
        now = self._clock()
        if now - self._start < min(_QUIET_START_SECONDS, self._log_seconds):
            return
        snap = self._registry.snapshot()
        if not snap:
            return
        if self._terminal is not None:
            line = format_stages(snap, now, " | ")
            if len(line) > self._width - 1:
                line = line[:self._width - 2] + "…"
            if line != self._drawn:
                self._terminal.write(f"\r{line}\x1b[K")
                self._terminal.flush()
                self._drawn = line
            return
        started = tuple(snap) != self._stages
        line = format_stages(snap, now)
        due = now - self._logged_at >= self._log_seconds and line != self._logged
        if started or due:
            self._stages = tuple(snap)
            self._emit(line, now)

    def _emit(self, line: str, now: float) -> None:
        self._log(line)
        self._logged, self._logged_at = line, now

    def start(self) -> ProgressReporter:
        """Ticks in a daemon thread until :meth:`stop`."""
        period = self._redraw if self._terminal is not None else min(self._redraw, self._log_seconds)

        def loop() -> None:
            while not self._stop.wait(period):
                self.tick()

        self._thread = threading.Thread(target=loop, name="corpus-match-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, final: bool = True) -> None:
        """Stops the thread; clears the terminal line, or (``final``) logs the last counts when
        progress lines were logged and they have changed since."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._terminal is not None:
            if self._drawn:
                self._terminal.write("\r\x1b[K")
                self._terminal.flush()
            return
        if final and self._logged is not None:
            now = self._clock()
            line = format_stages(self._registry.snapshot(), now)
            if line != self._logged:
                self._emit(line, now)
