"""corpus-match evaluate's command line: match files of every format, the manifest's mode, exit codes."""

from __future__ import annotations

import json

import pytest

from beam_jobs.commands import evaluate as ev
from tests.transforms.learn.evaluation_cases import LINK_MATCHES, LINK_TRUTH, _matches
from transforms.common.run_dir import mark_finished
from transforms.testing import people


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_evaluate_main_reads_match_files_and_manifest(tmp_path, capsys, fmt):
    out = tmp_path / "run"
    (out / "matches").mkdir(parents=True)
    halves = [LINK_MATCHES.iloc[:2], LINK_MATCHES.iloc[2:]]
    for i, part in enumerate(halves):
        path = out / "matches" / f"matches-{i:05d}-of-00002.{fmt}"
        if fmt == "parquet":
            part.to_parquet(path)
        elif fmt == "jsonl":
            part.to_json(path, orient="records", lines=True)
        else:
            part.to_csv(path, index=False)
    (out / "matches" / "_SUCCESS").write_text("")
    (out / "manifest.json").write_text(json.dumps({"mode": "link", "exit_state": "succeeded"}))
    mark_finished(str(out))
    truth = tmp_path / "true_pairs.csv"
    people.write_truth(sorted(LINK_TRUTH), str(truth))
    assert ev.evaluate_main(["--matches", str(out), "--truth", str(truth)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["mode"] == "link"
    assert report["pairs"]["f1"] == pytest.approx(0.5)
    assert "top-1 pairs" in capsys.readouterr().out


def test_evaluate_main_mode_from_manifest_and_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "matches").mkdir(parents=True)
    _matches([("a", "b", 1, 0.1), ("b", "a", 1, 0.1)]).to_parquet(
        out / "matches" / "matches-00000-of-00001.parquet")
    (out / "manifest.json").write_text(json.dumps({"mode": "dedup", "exit_state": "running"}))
    truth = tmp_path / "t.csv"
    truth.write_text("id,cluster_id\na,1\nb,1\n")
    target = tmp_path / "eval.json"
    # A run that did not finish is refused, naming its directory, unless --allow_incomplete.
    assert ev.evaluate_main(["--matches", str(out), "--truth", str(truth), "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: the run did not finish (exit_state running" in err and "--allow_incomplete" in err
    assert not target.exists()
    assert ev.evaluate_main(["--matches", str(out), "--truth", str(truth), "--json", str(target),
                             "--allow_incomplete"]) == 0
    report = json.loads(target.read_text())
    assert report["mode"] == "dedup" and report["pairs"]["f1"] == 1.0
    empty = tmp_path / "empty"
    (empty / "matches").mkdir(parents=True)
    assert ev.evaluate_main(["--matches", str(empty), "--truth", str(truth), "--mode", "dedup"]) == 2
    assert "no match files" in capsys.readouterr().err
