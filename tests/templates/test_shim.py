"""templates/match_corpora/main.py: importable without side effects, returns without waiting on the job.

beam_jobs.match_corpora is replaced by a stub module in sys.modules, so these tests neither import
TensorFlow nor need the real job; they check what the shim hands to ``run(argv)`` and that it never
waits on the returned result.
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from beam_jobs.commands.template import SDK_IMAGE_ENV

SHIM = Path(__file__).resolve().parents[2] / "templates" / "match_corpora" / "main.py"
NOW = datetime.datetime(2026, 3, 14, 1, 0, tzinfo=datetime.UTC)


class _NeverWaitResult:
    """A Dataflow-like result whose waiting methods must not be called by the shim."""

    def wait_until_finish(self, duration=None):
        raise AssertionError("the shim waited on the job")

    @property
    def state(self):
        raise AssertionError("the shim polled the job state")


@pytest.fixture
def stub_job(monkeypatch):
    calls: list[list[str]] = []
    module = types.ModuleType("beam_jobs.match_corpora")

    def run(argv=None, *, wait=None):
        assert wait is False, "the shim must ask run() not to wait"
        calls.append(list(argv))
        return _NeverWaitResult()

    module.run = run
    monkeypatch.setitem(sys.modules, "beam_jobs.match_corpora", module)
    return calls


def _load_shim():
    spec = importlib.util.spec_from_file_location("_match_corpora_shim", SHIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_has_no_side_effects(stub_job, monkeypatch):
    monkeypatch.delitem(sys.modules, "beam_jobs.match_corpora")
    before = set(sys.modules)
    shim = _load_shim()
    assert stub_job == []
    assert "beam_jobs.match_corpora" not in sys.modules  # the job (and TF) load only in main()
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in {"tensorflow", "apache_beam"}}
    assert callable(shim.main)


def test_main_calls_run_once_and_returns_without_waiting(stub_job, monkeypatch):
    monkeypatch.delenv(SDK_IMAGE_ENV, raising=False)
    argv = ["--runner=DataflowRunner", "--input=gs://in/x/*.csv", "--output=gs://o/r"]
    assert _load_shim().main(argv) == 0
    assert stub_job == [argv]


def test_main_reads_sys_argv_by_default(stub_job, monkeypatch):
    monkeypatch.delenv(SDK_IMAGE_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["main.py", "--output=gs://o/r", "--input", "gs://in/x"])
    assert _load_shim().main() == 0
    assert stub_job == [["--output=gs://o/r", "--input", "gs://in/x"]]


def test_dates_are_expanded_at_launch():
    shim = _load_shim()
    args = shim.launch_argv(["--output=gs://o/runs/{date}", "--queries", "gs://in/{date:%Y%m%d}/*"],
                            environ={}, now=NOW)
    assert args == ["--output=gs://o/runs/2026-03-14", "--queries", "gs://in/20260314/*"]


def test_worker_image_defaults_to_the_baked_in_image():
    shim = _load_shim()
    env = {SDK_IMAGE_ENV: "r-docker.pkg.dev/p/repo/corpus-matcher:v1"}
    assert shim.launch_argv(["--output=gs://o/r"], environ=env) == [
        "--output=gs://o/r", "--sdk_container_image=r-docker.pkg.dev/p/repo/corpus-matcher:v1"]
    for explicit in (["--sdk_container_image=other:1"], ["--sdk_container_image", "other:1"],
                     ["--worker_harness_container_image=other:1"]):
        assert shim.launch_argv(explicit, environ=env) == explicit
    assert shim.launch_argv(["--output=gs://o/r"], environ={SDK_IMAGE_ENV: ""}) == ["--output=gs://o/r"]


def test_main_passes_the_baked_in_image(stub_job, monkeypatch):
    monkeypatch.setenv(SDK_IMAGE_ENV, "img:1")
    assert _load_shim().main(["--output=gs://o/r"]) == 0
    assert stub_job == [["--output=gs://o/r", "--sdk_container_image=img:1"]]


def test_job_errors_propagate(monkeypatch):
    module = types.ModuleType("beam_jobs.match_corpora")

    def run(argv=None, *, wait=None):
        raise ValueError("--output DIR is required")

    module.run = run
    monkeypatch.setitem(sys.modules, "beam_jobs.match_corpora", module)
    with pytest.raises(ValueError, match="--output"):
        _load_shim().main([])
