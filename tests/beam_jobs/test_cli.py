"""The console: --help, exit codes with one line naming the flag or file, unknown flags, quiet stderr."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

from beam_jobs import cli
from beam_jobs.config import ConfigError
from beam_jobs.console import NATIVE_NOISE
from beam_jobs.options import FLAG_GROUPS, JOB_FLAGS, check_known_flags, suggest_flag
from transforms.testing.clustered import make_link_vectors, write_vector_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("tensorflow", "tensorflow_transform", "apache_beam", "scann")


@pytest.fixture(autouse=True)
def _console_logging_restored():
    """cli.main installs the console's log handler on the root logger: take it off again."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_corpus_match", False)]:
        root.removeHandler(handler)
    logging.captureWarnings(False)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cands, queries = make_link_vectors(60, 12, 8, seed=5)
    write_vector_corpus(str(root / "c"), [f"c{i}" for i in range(60)], cands, fmt="jsonl")
    write_vector_corpus(str(root / "q"), [f"q{i}" for i in range(12)], queries, fmt="jsonl")
    return root


def _link(root, out, *extra):
    return ["--queries", str(root / "q" / "*"), "--candidates", str(root / "c" / "*"),
            "--output", str(out), "--runner", "FnApiRunner", *extra]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    for name in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "GLOG_minloglevel"):
        env.pop(name, None)  # the console sets them; a value from the test's own env would hide that
    return env


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "beam_jobs.cli", *args], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=timeout)


def _one_error_line(err: str) -> str:
    """The failure's line; there must be exactly one and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if re.match(r"corpus-match( \w+)?: ", line)]
    assert len(lines) == 1, err
    return lines[0]


# --- help


def test_every_flag_is_in_exactly_one_help_group():
    grouped = [name for names in FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in JOB_FLAGS), "add the flag to FLAG_GROUPS"
    assert len(grouped) == len(set(grouped))


def test_job_help_lists_flags_by_group_with_choices_and_defaults():
    text = cli.job_help(width=100)
    positions = [text.index(f"\n{group}:\n") for group in FLAG_GROUPS]
    assert positions == sorted(positions)
    for flag in JOB_FLAGS:
        head = f"  --{flag.name}" + (f" {{{','.join(flag.values)}}}" if flag.values else "")
        found = re.search(rf"^{re.escape(head)}$", text, re.M)
        assert found, flag.name
        # the section the flag is listed in is its own group's
        before = [g for g, at in zip(FLAG_GROUPS, positions, strict=True) if at < found.start()]
        assert before[-1] == flag.group, flag.name
    assert "--distance {cosine,dot,squared_l2}\n      Distance: cosine" in text
    assert "Default cosine." in text and "Required." in text and "Default: unset." in text
    for name in cli.SUBCOMMANDS:
        assert re.search(rf"^  {name} +\S", text, re.M), name
    assert "--help_beam" in text and "--verbose" in text and "corpus-match --queries" in text


@pytest.mark.parametrize("module", ["beam_jobs.cli", "beam_jobs.match_corpora"])
def test_help_prints_the_job_flags(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: corpus-match") and "\nIndex and routing:\n" in done.stdout
    assert "--top_k" in done.stdout and "--temp_location TEMP_LOCATION" not in done.stdout


def test_help_beam_lists_beam_flags_not_job_flags():
    text = cli.beam_help()
    assert "--runner" in text and "--temp_location" in text and "--direct_num_workers" in text
    assert "--top_k" not in text


_PROBE = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from beam_jobs.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                      "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
""").replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS))
def test_subcommand_help_is_light(command):
    done = subprocess.run([sys.executable, "-c", _PROBE, command, "--help"], capture_output=True,
                          text=True, env=_env(), cwd=ROOT, timeout=120)
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    assert probe["code"] == 0 and f"corpus-match {command}" in done.stdout
    assert probe["heavy"] == [], f"{command} --help imported {probe['heavy']}"
    # How fast it returns (the bound: under 2 s) is bench.startup --help_screens's to say.


# --- flags Beam would only warn about


def test_unknown_and_misspelled_flags_are_config_errors_with_a_hint():
    with pytest.raises(ConfigError) as err:
        check_known_flags(["--queries", "q", "--topk", "3", "--max-distance", "0.1"])
    text = str(err.value)
    assert "unknown flag --topk (did you mean --top_k?)" in text
    assert "unknown flag --max-distance (did you mean --max_distance?)" in text
    assert "'3'" not in text  # the values of the unknown flags are not reported again
    with pytest.raises(ConfigError, match="unexpected argument 'evalute'"):
        check_known_flags(["evalute", "--matches", "x"])
    with pytest.raises(ConfigError, match="unknown flag --zzzqqq$|unknown flag --zzzqqq "):
        check_known_flags(["--zzzqqq=1"])
    assert suggest_flag("--temp-location", ["--temp_location", "--top_k"]) == "--temp_location"


def test_beam_pipeline_flags_are_still_accepted():
    check_known_flags(["--queries", "q", "--output", "o", "--top_k", "3", "--runner", "DataflowRunner",
                       "--project", "p", "--region", "r", "--temp_location", "gs://b/t",
                       "--staging_location", "gs://b/s", "--direct_num_workers", "2",
                       "--experiments", "use_runner_v2", "--save_main_session",
                       "--worker_machine_type=n2-standard-4", "--max_num_workers", "3"])


@pytest.mark.parametrize("argv, named", [
    (["--distance", "foo"], "argument --distance: invalid choice: 'foo'"),
    (["--direct_num_workers", "x"], "argument --direct_num_workers: invalid int value"),
    (["--top_k"], "argument --top_k: expected one argument"),
    (["--runner", "NoSuchRunner"], "--runner NoSuchRunner"),
])
def test_values_argparse_rejects_are_config_errors(argv, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_known_flags(["--queries", "q", "--output", "o", *argv])


# --- exit codes


@pytest.mark.parametrize("extra, named", [
    (["--top_k", "abc"], "--top_k must be an integer, got 'abc'"),
    (["--distance", "foo"], "--distance"),
    (["--max_distance", "-1"], "--max_distance -1 would drop every pair: cosine distance"),
    (["--topk", "3", "--max-distance", "0.1"], "unknown flag --topk (did you mean --top_k?)"),
    (["--min_recall", "1.5"], "--min_recall must be a finite number in [0, 1]"),
])
def test_bad_flag_values_exit_2_with_one_line(corpora, tmp_path, capsys, extra, named):
    code = cli.main(_link(corpora, tmp_path / "o", *extra))
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("corpus-match: configuration error:") and named in line
    assert not (tmp_path / "o").exists()  # failed before the pipeline ran


def test_corpus_paths_that_cannot_be_read_exit_2_naming_flag_and_path(corpora, tmp_path, capsys):
    cases = {}
    cases["glob"] = str(tmp_path / "nothing-*.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    cases["dir"] = str(tmp_path / "dir.jsonl")
    os.symlink(tmp_path / "gone.jsonl", tmp_path / "link.jsonl")
    cases["link"] = str(tmp_path / "link.jsonl")
    if os.geteuid() != 0:  # root reads any file: the directory and the broken link stand in for it
        (tmp_path / "locked.jsonl").write_text("{}\n")
        os.chmod(tmp_path / "locked.jsonl", 0)
        cases["locked"] = str(tmp_path / "locked.jsonl")
    wants = {"glob": "matches no files", "dir": "is a directory", "link": "is a broken symlink",
             "locked": "Permission denied"}
    for case, path in cases.items():
        code = cli.main(["--queries", str(corpora / "q" / "*"), "--candidates", path,
                         "--output", str(tmp_path / f"o-{case}"), "--runner", "FnApiRunner"])
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2, (case, line)
        assert "--candidates" in line and path in line and wants[case] in line, (case, line)


def test_output_that_is_a_file_or_under_one_exits_2_naming_output(corpora, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, want in ((tmp_path / "file", "exists and is not a directory"),
                      (tmp_path / "file" / "run", "is not a directory")):
        code = cli.main(_link(corpora, out))
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and f"--output {out}" in line and want in line, line
    assert (tmp_path / "file").read_text() == "x"


def test_verbose_adds_the_traceback(corpora, tmp_path, capsys):
    assert cli.main(_link(corpora, tmp_path / "o", "--top_k", "abc", "--verbose")) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "--top_k must be an integer" in err.splitlines()[-1]


@pytest.mark.slow
def test_too_many_bad_records_exit_1_naming_the_flag(corpora, tmp_path, capsys):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "q1", "embedding": [1,2,3,4,5,6,7,8]}\n' + "garbage\n" * 5)
    code = cli.main(["--queries", str(bad), "--candidates", str(corpora / "c" / "*"),
                     "--output", str(tmp_path / "o"), "--runner", "FnApiRunner", "--index", "exact"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1 and line.startswith("corpus-match: failed:") and "--max_bad_record_ratio" in line


@pytest.mark.slow
def test_index_built_with_another_model_exits_2(corpora, tmp_path, capsys):
    base = tmp_path / "base"
    assert cli.main(_link(corpora, base, "--index", "exact")) == 0
    capsys.readouterr()
    # The kept index as another embedding model would have left it: same fields, other fingerprint.
    path = base / "indexes" / "index_manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(text_fields=["name"], vector_field=None, model_dir="models/other",
                    model_fingerprint="sha256:" + "0" * 64)
    path.write_text(json.dumps(manifest))
    (tmp_path / "new.jsonl").write_text('{"id": "n1", "name": "anna"}\n')
    code = cli.main(["--queries", str(tmp_path / "new.jsonl"), "--index_dir", str(base),
                     "--text_fields", "name", "--output", str(tmp_path / "x"), "--runner", "FnApiRunner"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "--index_dir" in line and "models/other" in line and "fingerprint" in line


# --- quiet stderr

# Lines no user can act on: native TF/absl/gRPC logging, and Beam's runner chatter.
_NOISE = re.compile(r"absl::InitializeLog|cpu_feature_guard|cuda|grpc|oneDNN|native_type_compatibility"
                    r"|Creating state cache|Prism|Discarding|WriteImpl min_shards", re.I)
_OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING|ERROR) (beam_jobs|transforms)[\w.]*: ")


@pytest.mark.slow
def test_a_local_run_shows_only_its_own_lines_and_verbose_shows_more(corpora, tmp_path):
    quiet = _cli(*_link(corpora, tmp_path / "quiet", "--index", "exact"))
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    assert lines and all(_OWN_LINE.match(line) for line in lines), quiet.stderr
    assert "pairs:" in quiet.stdout
    loud = _cli(*_link(corpora, tmp_path / "loud", "--index", "exact", "--verbose"))
    assert loud.returncode == 0, loud.stderr
    assert any(_NOISE.search(line) for line in loud.stderr.splitlines()), loud.stderr
    assert len(loud.stderr.splitlines()) > len(lines)


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_dropped_unless_verbose(tmp_path):
    # train imports TensorFlow before it reads its input: the start-up lines come, then the error.
    args = ["train", "--input", str(tmp_path / "none.csv"), "--truth", str(tmp_path / "none.csv"),
            "--text_fields", "name", "--model_dir", str(tmp_path / "m")]
    quiet = _cli(*args)
    assert quiet.returncode == 2
    assert not [line for line in quiet.stderr.splitlines() if NATIVE_NOISE.match(line)
                or _NOISE.search(line)], quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1].startswith("corpus-match train:")
    loud = _cli(*args, "--verbose")
    assert loud.returncode == 2
    assert any(NATIVE_NOISE.match(line) for line in loud.stderr.splitlines()), loud.stderr


def test_native_noise_pattern():
    for line in ("I0000 00:00:1796292454.234190   32754 port.cc:153] oneDNN custom operations are on.",
                 "E0000 00:00:1796291793.229650   17532 cuda_platform.cc:52] failed call to cuInit",
                 "W1203 10:08:07.768000  123 tensor.cc:4] something",
                 "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"):
        assert NATIVE_NOISE.match(line), line
    for line in ("F0000 00:00:1.2 1 check.cc:1] Check failed: fatal",
                 "2026-12-03 10:08:07,768 INFO transforms.io.read_corpus: read 24 rows",
                 "corpus-match: configuration error: --top_k must be an integer, got 'abc'"):
        assert not NATIVE_NOISE.match(line), line


def test_a_subcommand_failing_on_a_missing_file_exits_2_with_one_line(tmp_path, capsys):
    assert cli.main(["explain", "--run", str(tmp_path / "none"), "--query_id", "a",
                     "--candidate_id", "b"]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith("corpus-match explain:")
    with pytest.raises(FileNotFoundError):  # --verbose: the traceback
        cli.main(["report", str(tmp_path / "none"), "--verbose"])
