"""What a ``corpus-match`` run shows on stderr: the job's own log lines and its summary, nothing else.

TensorFlow, absl, gRPC and Beam write lines a user cannot act on (TF's C++ start-up notes, CUDA
probes on CPU machines, "All log messages before absl::InitializeLog()", Beam's Prism download attempt
and fallback, type-hint conversions). :func:`quiet_environment` sets their environment switches before
any of them is imported, :func:`configure_logging` keeps other libraries' Python log records at WARNING
and above (minus a few known unactionable ones) without tracebacks, and :func:`filter_native_stderr`
drops the native log lines that no switch turns off (absl's pre-initialisation lines are written before
TF reads ``TF_CPP_MIN_LOG_LEVEL``). ``--verbose`` keeps everything, tracebacks included.

Standard library only: the console entry imports this before anything heavy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

__all__ = ["quiet_environment", "configure_logging", "filter_native_stderr", "NATIVE_NOISE",
           "LOG_FORMAT", "status_terminal"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment switches read when TF / gRPC start; set only where the user has not set them.
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TF's C++ INFO/WARNING/ERROR lines (cpu_feature_guard, cuInit, ...)
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}
# Loggers whose records are the job's own: shown from INFO up.
_OWN_LOGGERS = ("beam_jobs", "transforms", "templates", "bench", "__main__")
# Other libraries' Python loggers shown only from ERROR up: their warnings are about our code's use of
# them (retracing, deprecations), nothing a user of the job can change.
_LIBRARY_ERROR_ONLY = ("tensorflow", "tensorflow_transform", "tfx_bsl", "absl", "h5py", "py.warnings")
# Beam / library WARNING lines that say nothing a user can act on.
_UNACTIONABLE = re.compile(
    r"Resource module is not available for current platform"
    r"|Discarding unparseable args"  # the job checks its flags itself (beam_jobs.options)
    r"|Unparseable argument")
# Lines that native libraries write straight to fd 2: absl/glog-prefixed INFO, WARNING and ERROR lines
# (I1203 12:00:00.000 123 file.cc:45] or I0000 00:00:... before absl is initialised), absl's notice
# about them, and the continuation line of TF's cpu_feature_guard note. FATAL (F...) lines stay.
NATIVE_NOISE = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags)")


def quiet_environment(verbose: bool) -> None:
    """Sets the native libraries' log switches (unless ``verbose`` or already set by the user).

    Must run before TensorFlow or gRPC start (they read them once); worker processes inherit them.
    """
    if verbose:
        return
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "root" and "apache_beam" in (record.pathname or ""):
            name = "apache_beam"  # Beam logs some lines through the root logger
        if name.split(".")[0] in _OWN_LOGGERS:
            return True
        if name.startswith("apache_beam.runners.dataflow") and record.levelno >= logging.INFO:
            return True  # the submitted job's id and console URL
        if name.split(".")[0] in _LIBRARY_ERROR_ONLY:
            return record.levelno >= logging.ERROR and not record.exc_info
        if record.levelno < logging.WARNING or record.exc_info:
            # A library's logged exception is the run's failure, which the job reports in one line.
            return False
        return not _UNACTIONABLE.search(record.getMessage())


def configure_logging(verbose: bool) -> None:
    """Root logging for the console: INFO lines of the job; other libraries' lines as above, or every
    line (with tracebacks) when ``verbose``. Replaces handlers an earlier call installed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_corpus_match", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._corpus_match = True  # noqa: SLF001 - marks the handler this module owns
    if not verbose:
        handler.addFilter(_QuietFilter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(not verbose)  # library warnings become py.warnings records (dropped)


@contextlib.contextmanager
def filter_native_stderr(enabled: bool = True) -> Iterator[None]:
    """While the block runs, lines written to file descriptor 2 that match :data:`NATIVE_NOISE` are
    dropped and every other line is passed on unchanged.

    Only when ``sys.stderr`` is the process's own stderr (not when a test harness captures it) and
    ``enabled``. Native libraries write to the descriptor directly, below Python's ``sys.stderr``, so
    the descriptor is pointed at a pipe read by a thread; it is restored when the block ends.
    """
    if not enabled or sys.stderr is not sys.__stderr__:
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    terminal = _StatusTerminal(saved) if os.isatty(saved) else None

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_NOISE.match(line.decode("utf-8", "replace")):
                    try:
                        if terminal is not None:
                            terminal.write_line(line)
                        else:
                            os.write(saved, line)
                    except OSError:  # the block ended while a child process still wrote
                        return

    global _terminal
    thread = threading.Thread(target=pump, name="corpus-match-stderr", daemon=True)
    thread.start()
    _terminal = terminal
    try:
        yield
    finally:
        _terminal = None
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last writer (unless a child still holds it)
        thread.join(timeout=5)
        if not thread.is_alive():
            os.close(saved)


class _StatusTerminal:
    """The real stderr (a terminal) while :func:`filter_native_stderr` holds file descriptor 2: one
    status line (``\r...``) written straight to it, and the filtered lines written above it (the
    status line is cleared, the line written, the status line drawn again)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._lock = threading.Lock()
        self._status = b""

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        with self._lock:
            os.write(self._fd, data)
            # What is on the line now: the text after the last carriage return.
            self._status = data.rsplit(b"\r", 1)[-1].replace(b"\x1b[K", b"")
        return len(text)

    def write_line(self, line: bytes) -> None:
        with self._lock:
            if self._status:
                os.write(self._fd, b"\r\x1b[K" + line + self._status)
            else:
                os.write(self._fd, line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


_terminal: _StatusTerminal | None = None


def status_terminal() -> _StatusTerminal | None:
    """A stream for one redrawn status line on the real stderr, when it is a terminal and the
    console filters it (not with ``--verbose``, nor when a harness captures stderr); else None
    (show progress as log lines)."""
    return _terminal
