"""The progress registry and reporter (transforms/common/progress.py): counts from several threads, and the
terminal and log-line renderings under a fake clock."""

from __future__ import annotations

import io
import threading

import pytest

from transforms.common import progress
from transforms.common.progress import ProgressRegistry, ProgressReporter, format_stages


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_registry_counts_from_several_threads():
    registry = ProgressRegistry()
    barrier = threading.Barrier(8)

    def work(stage: str) -> None:
        barrier.wait()
        for _ in range(2_000):
            registry.add(stage, 3)

    threads = [threading.Thread(target=work, args=("read" if i % 2 else "embedded",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = registry.snapshot()
    assert list(snap) == ["read", "embedded"]  # pipeline order, not arrival order
    assert snap["read"].count == snap["embedded"].count == 4 * 2_000 * 3


def test_registry_totals_reset_and_unknown_stages_last():
    registry = ProgressRegistry(FakeClock())
    registry.add("zzz", 1)
    registry.add("searched", 5)
    registry.set_total("searched", 10)
    snap = registry.snapshot()
    assert list(snap) == ["searched", "zzz"]
    assert (snap["searched"].count, snap["searched"].total) == (5, 10)
    registry.reset()
    assert registry.snapshot() == {}


def test_rate_leaves_out_the_first_batch_and_eta_uses_the_total():
    clock = FakeClock(0.0)
    registry = ProgressRegistry(clock)
    registry.add("searched", 1_000)  # work done before the first update: not timed
    clock.now = 10.0
    registry.add("searched", 2_000)
    registry.set_total("searched", 7_000)
    snap = registry.snapshot()
    assert snap["searched"].rate() == pytest.approx(200.0)
    assert format_stages(snap, 10.0) == "queries searched 3,000/7,000 (200/s, ETA 20 s)"
    # Waiting on another stage: the rate while it ran, no ETA.
    assert format_stages(snap, 60.0) == "queries searched 3,000/7,000 (200/s)"
    registry.add("searched", 4_000)
    assert format_stages(registry.snapshot(), 60.0) == "queries searched 7,000/7,000"  # done


def test_a_bound_shows_as_about_and_an_exact_total_replaces_it():
    clock = FakeClock(0.0)
    registry = ProgressRegistry(clock)
    registry.set_total("read", 10_002, bound=True)  # set before any count: shown once counting starts
    assert registry.snapshot() == {}
    registry.add("read", 1_000)
    clock.now = 2.0
    registry.add("read", 1_000)
    snap = registry.snapshot()
    assert snap["read"].bound
    assert format_stages(snap, 2.0) == "records read 2,000/~10,002 (500/s, ETA 16 s)"
    registry.add("read", 8_000)  # all read, short of the bound (a header line per file)
    assert format_stages(registry.snapshot(), 60.0) == "records read 10,000/~10,002 (4,500/s)"
    registry.set_total("read", 10_000)
    assert format_stages(registry.snapshot(), 60.0) == "records read 10,000/10,000"


def _running(clock_start: float = 0.0):
    clock = FakeClock(clock_start)
    registry = ProgressRegistry(clock)
    return clock, registry


def test_terminal_rendering_redraws_one_line_and_clears_it():
    clock, registry = _running()
    term = io.StringIO()
    reporter = ProgressReporter(registry, terminal=term, clock=clock, width=80)
    registry.add("read", 500)
    reporter.tick()
    assert term.getvalue() == ""  # nothing in the first two seconds
    clock.now = 3.0
    registry.add("read", 500)
    registry.set_total("built", 4)
    registry.add("built", 1)
    reporter.tick()
    first = term.getvalue()
    assert first == "\rrecords read 1,000 (167/s) | shards built 1/4\x1b[K"
    clock.now = 3.5
    reporter.tick()
    assert term.getvalue() == first  # unchanged: not redrawn
    registry.add("built", 1)
    reporter.tick()
    out = term.getvalue()
    assert out.count("\r") == 2 and "\n" not in out  # redrawn in place
    assert out.endswith("\rrecords read 1,000 (167/s) | shards built 2/4\x1b[K")
    reporter.stop()
    assert term.getvalue().endswith("\r\x1b[K")  # cleared before the summary


def test_terminal_line_is_cut_to_the_width():
    clock, registry = _running(5.0)
    term = io.StringIO()
    reporter = ProgressReporter(registry, terminal=term, clock=clock, width=30)
    reporter._start = 0.0  # noqa: SLF001 - started five seconds ago
    registry.add("read", 123_456)
    registry.add("embedded", 123_456)
    reporter.tick()
    line = term.getvalue().removeprefix("\r").removesuffix("\x1b[K")
    assert len(line) == 29 and line.endswith("…")


def test_log_rendering_one_line_per_stage_start_and_every_interval():
    clock, registry = _running()
    lines: list[str] = []
    reporter = ProgressReporter(registry, log=lines.append, clock=clock, log_seconds=10)
    clock.now = 2.5
    registry.add("read", 100)
    reporter.tick()
    assert lines == ["records read 100"]
    clock.now = 3.0
    registry.add("read", 100)
    reporter.tick()  # no new stage, not yet due
    assert len(lines) == 1
    clock.now = 4.0
    registry.add("embedded", 50)
    reporter.tick()  # a stage started
    assert lines[-1] == "records read 200; embedded 50"
    clock.now = 14.5
    registry.add("read", 800)
    reporter.tick()  # due
    assert lines[-1] == "records read 1,000 (75/s); embedded 50"  # 900 rows in 12 s
    clock.now = 30.0
    reporter.tick()  # due, but nothing changed
    assert len(lines) == 3
    registry.add("embedded", 950)
    reporter.stop()  # the final counts, once
    assert lines[-1] == "records read 1,000 (75/s); embedded 1,000 (37/s)"
    assert len(lines) == 4


def test_a_short_run_shows_nothing():
    clock, registry = _running()
    lines: list[str] = []
    term = io.StringIO()
    for kind in ({"log": lines.append}, {"terminal": term}):
        reporter = ProgressReporter(registry, clock=clock, **kind)
        registry.add("read", 10)
        clock.now += 1.0
        reporter.tick()
        reporter.stop()
    assert lines == [] and term.getvalue() == ""


def test_log_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_SECONDS_ENV, raising=False)
    assert progress.log_interval() == 10.0
    monkeypatch.setenv(progress.PROGRESS_SECONDS_ENV, "2.5")
    assert progress.log_interval() == 2.5
    monkeypatch.setenv(progress.PROGRESS_SECONDS_ENV, "0")
    assert progress.log_interval() == 0.0
    monkeypatch.setenv(progress.PROGRESS_SECONDS_ENV, "soon")
    assert progress.log_interval() == 10.0


def test_reporter_thread_starts_and_stops():
    registry = ProgressRegistry()
    lines: list[str] = []
    reporter = ProgressReporter(registry, log=lines.append, redraw_seconds=0.01, log_seconds=0.01)
    registry.add("read", 3)
    reporter.start()
    for _ in range(500):
        if lines:
            break
        threading.Event().wait(0.01)
    reporter.stop()
    assert lines and lines[0].startswith("records read 3")


def test_console_terminal_writes_log_lines_above_the_status_line():
    import os

    from beam_jobs.console import _StatusTerminal

    read_end, write_end = os.pipe()
    term = _StatusTerminal(write_end)
    term.write_line(b"before\n")  # no status line yet: as it came
    term.write("\rread 10\x1b[K")
    term.write_line(b"a log line\n")  # clears the status line, writes the line, redraws the status
    term.write("\r\x1b[K")  # cleared
    term.write_line(b"after\n")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    assert data == (b"before\n\rread 10\x1b[K\r\x1b[Ka log line\nread 10\r\x1b[Kafter\n")
