"""transforms.common.run_dir: an output directory's states, --overwrite, _SUCCESS, and the readers' checks."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests.memfs  # noqa: F401  (registers mem://)
from beam_jobs.config import ConfigError
from transforms.clusters.cluster_pairs import read_clusters
from transforms.common.artifacts import join_path, read_text, write_bytes, write_text
from transforms.common.run_dir import (
    IncompleteRunError,
    check_complete_shards,
    check_output_dir,
    claim_output_dir,
    inspect_output_dir,
    list_files,
    mark_finished,
    require_finished,
)
from transforms.common.schema import PairBatch
from transforms.io.results import read_matches
from transforms.io.write_matches import match_shard_path, write_match_shard
from transforms.run.report import write_report

NO_INPUTS: dict[str, str | None] = {}


def _pairs(n: int, prefix: str = "q") -> PairBatch:
    return PairBatch(np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
                     np.array([f"c{i}" for i in range(n)], dtype=object),
                     np.ones(n, dtype=np.int64), np.linspace(0, 0.5, n))


def _finished_run(out: str, num_shards: int = 3, rows: int = 4, *, state: str = "succeeded") -> str:
    """A run directory as the job leaves it: matches, a manifest, _SUCCESS last."""
    for shard in range(num_shards):
        write_match_shard(match_shard_path(out, "parquet", shard, num_shards),
                          _pairs(rows, prefix=f"s{shard}-"), "parquet")
    write_text(join_path(out, "indexes", "index_manifest.json"), "{}")
    write_text(join_path(out, "manifest.json"),
               json.dumps({"mode": "link", "exit_state": state, "num_output_shards": num_shards,
                           "counts": {"pairs_written": num_shards * rows}}))
    if state in ("succeeded", "pipeline_completed"):  # the job writes _SUCCESS for these only
        mark_finished(out)
    return out


@pytest.fixture(params=["local", "mem"])
def where(request, tmp_path):
    """An output directory on local disk, and one on an object-store-like filesystem."""
    if request.param == "local":
        return str(tmp_path / "out")
    return f"mem://run-dir-test/{uuid.uuid4().hex}/out"


def test_an_empty_or_missing_directory_is_taken(where):
    assert check_output_dir(where, overwrite=False, inputs=NO_INPUTS).empty
    claim_output_dir(where, {"mode": "link", "flags": {}}, overwrite=False)
    assert json.loads(read_text(join_path(where, "manifest.json")))["exit_state"] == "running"
    assert list_files(where) == ["manifest.json"]


def test_a_finished_run_is_refused_in_one_line_naming_overwrite(where):
    _finished_run(where)
    before = list_files(where)
    with pytest.raises(ConfigError) as err:
        check_output_dir(where, overwrite=False, inputs=NO_INPUTS)
    message = str(err.value)
    assert "\n" not in message and "--overwrite" in message and where in message
    assert "a finished run (exit_state succeeded)" in message
    assert list_files(where) == before


def test_overwrite_deletes_every_file_of_the_old_run_and_starts_a_running_manifest(where):
    _finished_run(where, num_shards=5)
    write_text(join_path(where, "evaluation.json"), "{}")  # evaluate's report of the old matches
    write_bytes(join_path(where, "manifest.json.tmp-0123"), b"half")  # a killed write
    check_output_dir(where, overwrite=True, inputs=NO_INPUTS)
    deleted = claim_output_dir(where, {"mode": "link", "flags": {"overwrite": True}}, overwrite=True)
    assert "_SUCCESS" in deleted and "matches/matches-00004-of-00005.parquet" in deleted
    assert list_files(where) == ["manifest.json"]
    assert inspect_output_dir(where).exit_state == "running"
    if not where.startswith("mem://"):
        assert sorted(os.listdir(where)) == ["manifest.json"]  # no empty directories left either


def test_a_launch_that_lost_the_race_for_an_empty_directory_stops_without_overwrite(where):
    check_output_dir(where, overwrite=False, inputs=NO_INPUTS)  # both launches find it empty
    check_output_dir(where, overwrite=False, inputs=NO_INPUTS)
    claim_output_dir(where, {"mode": "link", "flags": {"first": True}}, overwrite=False)
    write_text(join_path(where, "matches", "matches-00000-of-00001.parquet"), "being written")
    with pytest.raises(ConfigError, match=r"was empty at launch and now holds .*--overwrite"):
        claim_output_dir(where, {"mode": "link", "flags": {}}, overwrite=False)
    assert "matches/matches-00000-of-00001.parquet" in list_files(where)  # the first's files stay
    assert json.loads(read_text(join_path(where, "manifest.json")))["flags"] == {"first": True}


def test_a_default_model_export_cut_short_is_a_run_entry_and_not_listed_as_finished(where):
    _finished_run(where)
    write_bytes(join_path(where, "default_model.tmp-0123", "saved_model.pb"), b"half")
    assert not inspect_output_dir(where).foreign  # --overwrite may delete it
    mark_finished(where)
    listed = json.loads(read_text(join_path(where, "_SUCCESS")))["files"]
    assert listed and not any(".tmp-" in f for f in listed)


def test_an_unreadable_success_marker_is_not_a_finished_run(where):
    _finished_run(where)
    write_text(join_path(where, "_SUCCESS"), '{"files": {"matches/m')  # cut short
    with pytest.raises(IncompleteRunError, match="_SUCCESS is unreadable"):
        require_finished(where)


def test_a_directory_holding_other_files_is_refused_even_with_overwrite(where):
    _finished_run(where)
    write_text(join_path(where, "notes.txt"), "mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"not a corpus-match run's outputs \(notes.txt\).*--overwrite"):
            check_output_dir(where, overwrite=overwrite, inputs=NO_INPUTS)
    assert "notes.txt" in list_files(where) and "_SUCCESS" in list_files(where)


def test_files_without_a_manifest_are_not_deleted_by_name_alone(where):
    write_text(join_path(where, "data", "part-0.csv"), "id\n1\n")
    with pytest.raises(ConfigError, match="not a corpus-match run's outputs"):
        check_output_dir(where, overwrite=True, inputs=NO_INPUTS)


@pytest.mark.parametrize("flag,rel", [("index_dir", ""), ("index_dir", "indexes"),
                                      ("scoring_model", "scoring/model.json"),
                                      ("transform_fn_dir", "transform_fn"),
                                      ("queries", "matches/*.parquet")])
def test_overwrite_refuses_to_delete_an_input_of_the_run(where, flag, rel):
    _finished_run(where)
    path = join_path(where, rel) if rel else where
    with pytest.raises(ConfigError, match=f"--{flag} .* lies inside --output .*--overwrite would delete"):
        check_output_dir(where, overwrite=True, inputs={flag: path, "model_dir": None})
    # An input elsewhere is fine.
    check_output_dir(where, overwrite=True, inputs={flag: where + "-elsewhere"})


def test_overwrite_refuses_a_glob_whose_matches_lie_inside_the_output(where):
    _finished_run(where)
    parent, name = where.rsplit("/", 1)
    glob = f"{parent}/*/matches/*.parquet"  # the fixed part is the parent; the matches are inside
    with pytest.raises(ConfigError, match="--queries .* lies inside --output"):
        check_output_dir(where, overwrite=True, inputs={"queries": glob})
    check_output_dir(where, overwrite=True, inputs={"queries": f"{parent}/*/nothing/*.csv"})


def test_an_unfinished_run_needs_overwrite_too(where):
    _finished_run(where, state="running")
    with pytest.raises(ConfigError, match=r"an unfinished run \(exit_state running: still running, or "
                                          r"killed\): pass --overwrite"):
        check_output_dir(where, overwrite=False, inputs=NO_INPUTS)


def test_success_lists_the_outputs_but_not_the_manifest_or_scratch(where):
    _finished_run(where, num_shards=2)
    write_text(join_path(where, "tmp", "tft", "x"), "scratch")
    mark_finished(where)
    listing = json.loads(read_text(join_path(where, "_SUCCESS")))["files"]
    assert set(listing) == {"matches/matches-00000-of-00002.parquet",
                            "matches/matches-00001-of-00002.parquet", "indexes/index_manifest.json"}
    assert require_finished(where) == listing


def test_readers_refuse_a_run_that_did_not_finish(where):
    _finished_run(where, state="running")
    for read in (read_matches, read_clusters):
        with pytest.raises(IncompleteRunError, match=f"{where}: the run did not finish .exit_state running"):
            read(where)
    with pytest.raises(IncompleteRunError, match="has not finished"):
        write_report(where)
    assert len(read_matches(where, allow_incomplete=True)) == 12  # the documented escape hatch


def test_readers_refuse_a_failed_run_and_a_manifest_without_success(where):
    _finished_run(where, state="failed")
    with pytest.raises(IncompleteRunError, match="exit_state failed"):
        read_matches(where)
    _finished_run(where)  # finished ...
    from apache_beam.io.filesystems import FileSystems

    FileSystems.delete([join_path(where, "_SUCCESS")])  # ... but its marker is gone
    with pytest.raises(IncompleteRunError, match="no _SUCCESS"):
        read_matches(where)


def test_read_matches_refuses_a_missing_shard(where):
    _finished_run(where, num_shards=4)
    from apache_beam.io.filesystems import FileSystems

    FileSystems.delete([match_shard_path(where, "parquet", 2, 4)])
    with pytest.raises(IncompleteRunError, match=r"1 of 4 shard files missing \(matches-00002-of-00004"):
        read_matches(where)
    assert len(read_matches(where, allow_incomplete=True)) == 12


def test_read_matches_refuses_files_the_finished_run_did_not_write(where):
    _finished_run(where, num_shards=2)
    # A leftover of a run with another shard count, and one written after the marker.
    write_match_shard(match_shard_path(where, "parquet", 0, 3), _pairs(2, "old"), "parquet")
    with pytest.raises(IncompleteRunError, match="mixes shard sets"):
        read_matches(where)


def test_shard_set_checks_without_a_run():
    check_complete_shards(["d/m-00000-of-00002.x", "d/m-00001-of-00002.x"], where="d")
    with pytest.raises(IncompleteRunError, match="2 of 3 shard files missing"):
        check_complete_shards(["d/m-00001-of-00003.x"], where="d")
    with pytest.raises(IncompleteRunError, match="manifest says 3"):
        check_complete_shards(["d/m-00000-of-00001.x"], where="d", expected=3)
    with pytest.raises(IncompleteRunError, match="listed in _SUCCESS but missing"):
        check_complete_shards(["/r/d/m-00000-of-00001.x"], where="/r/d", root="/r",
                              listing={"d/m-00000-of-00001.x": 1, "d/m-00000-of-00001.y": 1})


def test_a_bare_directory_of_match_files_is_read_with_the_shard_check_only(tmp_path):
    out = str(tmp_path)
    assert require_finished(out) is None
    write_match_shard(match_shard_path(out, "jsonl", 1, 2), _pairs(3), "jsonl")
    with pytest.raises(IncompleteRunError, match="matches-00000-of-00002.jsonl"):
        read_matches(out)
    write_match_shard(match_shard_path(out, "jsonl", 0, 2), _pairs(2, "p"), "jsonl")
    assert len(read_matches(out)) == 5


def test_read_clusters_refuses_a_missing_shard(tmp_path):
    out = str(tmp_path)
    for shard in (0, 2):
        table = pa.table({"record_id": [f"r{shard}"], "cluster_id": [f"r{shard}"], "cluster_size": [1]})
        os.makedirs(tmp_path / "clusters", exist_ok=True)
        pq.write_table(table, tmp_path / "clusters" / f"clusters-{shard:05d}-of-00003.parquet")
    with pytest.raises(IncompleteRunError, match=r"1 of 3 shard files missing \(clusters-00001-of-00003"):
        read_clusters(out)
    assert list(read_clusters(out, allow_incomplete=True)["record_id"]) == ["r0", "r2"]


def test_a_failed_run_still_gets_a_report_page(tmp_path):
    out = _finished_run(str(tmp_path / "run"), state="failed")
    text = open(write_report(out), encoding="utf-8").read()
    assert "failed" in text


def test_a_kept_index_of_a_run_that_is_still_running_is_refused(tmp_path):
    from beam_jobs.match_corpora import prepare

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "embedding": [1, 2]}\n')
    kept = str(tmp_path / "kept")
    write_text(join_path(kept, "indexes", "index_manifest.json"), json.dumps(
        {"shards": [], "distance": "cosine", "id_field": "id", "text_fields": [], "numeric_fields": [],
         "dims": 2, "candidates_indexed": 0}))
    argv = ["--queries", str(queries), "--index_dir", kept, "--output", str(tmp_path / "out")]
    write_text(join_path(kept, "manifest.json"), json.dumps({"exit_state": "running"}))
    with pytest.raises(ConfigError, match=f"--index_dir {kept}: the run that wrote it has not finished"):
        prepare(argv)
    # A failed run's index is whole once its index manifest exists (e.g. --min_recall failed).
    write_text(join_path(kept, "manifest.json"), json.dumps({"exit_state": "failed"}))
    assert prepare(argv)[1].index_dir == kept
