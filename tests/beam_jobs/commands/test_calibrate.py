"""corpus-match calibrate's command line: exit codes and the calibration file it writes."""

from __future__ import annotations

import json
import os

from beam_jobs.commands.calibrate import calibrate_main
from tests.transforms.learn.calibration_cases import LINK_ROWS, _matches, _write_run
from transforms.learn.calibrate import CALIBRATION_KEY


def test_cli_exit_codes_and_output(tmp_path):
    out = str(tmp_path / "run")
    _write_run(out, _matches(LINK_ROWS))
    truth = tmp_path / "truth.csv"
    truth.write_text("query_id,candidate_id\nq1,c1\nq2,c2\nq4,c4\nq3,c3\nq5,c5\n")
    assert calibrate_main(["--matches", out, "--truth", str(truth), "--mode", "link",
                           "--target_precision", "0.999", "--output", str(tmp_path / "no.json")]) == 0
    result = json.loads((tmp_path / "no.json").read_text())
    assert result[CALIBRATION_KEY] == 0.2
    assert calibrate_main(["--matches", out, "--truth", str(truth), "--mode", "link",
                           "--target_recall", "0.99"]) == 1
    assert not os.path.exists(os.path.join(out, "calibration.json"))
    assert calibrate_main(["--matches", str(tmp_path / "nothing"), "--truth", str(truth),
                           "--target_precision", "0.9"]) == 2
