"""End to end on the local runner against a numpy oracle, with deliberately bad rows."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from beam_jobs.config import ConfigError
from beam_jobs.match_corpora import run_job
from transforms.index.shard_files import read_shard_ids
from transforms.io.results import read_manifest, read_matches
from transforms.testing.clustered import make_link_vectors, write_vector_corpus

pytestmark = pytest.mark.slow
DIMS = 24


def oracle_topk(queries: np.ndarray, cands: np.ndarray, cand_ids: np.ndarray, k: int,
                distance: str = "cosine", exclude: np.ndarray | None = None):
    """Independent brute force in float64: (ids [n,k], distances [n,k]), ties broken by id."""
    q = queries.astype(np.float64)
    c = cands.astype(np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        d = 1.0 - q @ c.T
    elif distance == "dot":
        d = -(q @ c.T)
    else:
        d = (q * q).sum(1)[:, None] - 2 * q @ c.T + (c * c).sum(1)[None, :]
    if exclude is not None:
        d[exclude] = np.inf
    order = np.lexsort((np.broadcast_to(cand_ids.astype(str), d.shape), d), axis=-1)[:, :k]
    return cand_ids[order], np.take_along_axis(d, order, axis=1)


@pytest.fixture(scope="module")
def link_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("link")
    cands, queries = make_link_vectors(12_000, 300, DIMS, clusters=40, seed=3)
    cand_ids = np.array([f"c{i:06d}" for i in range(len(cands))], dtype=object)
    query_ids = np.array([f"q{i:05d}" for i in range(len(queries))], dtype=object)
    write_vector_corpus(str(root / "cands"), cand_ids, cands, fmt="parquet", files=3)
    write_vector_corpus(str(root / "queries"), query_ids, queries, fmt="jsonl", files=2)
    bad = [
        "{not json",
        json.dumps({"id": "bad-nan", "embedding": [float("nan")] * DIMS}),
        json.dumps({"id": "bad-len", "embedding": [0.1] * (DIMS - 1)}),
        json.dumps({"embedding": [0.1] * DIMS}),
        json.dumps({"id": "bad-str", "embedding": ["x"] * DIMS}),
        json.dumps({"id": "q00000", "embedding": [0.5] * DIMS}),  # duplicate id, later file
    ]
    with open(root / "queries" / "part-00009.jsonl", "w") as fh:
        fh.write("\n".join(bad) + "\n")
    return root, cands, cand_ids, queries, query_ids


def _run(args: list[str]):
    result, cfg, waited = run_job(args + ["--runner", "FnApiRunner"])
    assert waited
    return cfg


def _link_args(root, out, *extra):
    return ["--queries", str(root / "queries" / "*.jsonl"), "--candidates",
            str(root / "cands" / "*.parquet"), "--output", str(out), "--top_k", "10", *extra]


def _spy_on_spill(monkeypatch) -> list:
    """Records every SpilledRows placement writes (run with _SPILL_ALL: the test pieces are small)."""
    import transforms.placement.spill

    spilled = []
    real_spill_rows = transforms.placement.spill.spill_rows

    def spill_rows(*args, **kwargs):
        spilled.append(real_spill_rows(*args, **kwargs))
        return spilled[-1]

    monkeypatch.setattr(transforms.placement.spill, "spill_rows", spill_rows)
    return spilled


_SPILL_ALL = ("--spill_min_mb", "1e-6")  # one byte: every piece of the test data spills


def test_exact_index_equals_oracle_and_bad_rows_are_dead_letters(link_data, tmp_path, monkeypatch):
    spilled = _spy_on_spill(monkeypatch)
    root, cands, cand_ids, queries, query_ids = link_data
    out = tmp_path / "exact"
    _run(_link_args(root, out, "--index", "exact", "--num_shards", "3",
                    "--temp_location", str(tmp_path / "temp"), *_SPILL_ALL))
    assert sum(len(s) for s in spilled) == len(cand_ids)
    assert all(s.path.startswith(str(tmp_path / "temp")) for s in spilled)
    assert not any(os.path.exists(s.path) for s in spilled)  # deleted once the shards were built
    assert sorted(os.listdir(out)) == ["_SUCCESS", "dead_letters", "indexes", "manifest.json", "matches"]
    got = read_matches(str(out))
    want_ids, want_d = oracle_topk(queries, cands, cand_ids, 10)
    got = got.sort_values(["query_id", "rank"])
    assert got.query_id.nunique() == len(query_ids)
    g_ids = got.candidate_id.to_numpy().reshape(len(query_ids), 10)
    g_d = got.distance.to_numpy().reshape(len(query_ids), 10)
    order = np.argsort(query_ids.astype(str))
    np.testing.assert_array_equal(g_ids, want_ids[order])
    np.testing.assert_allclose(g_d, want_d[order], rtol=1e-6, atol=1e-6)
    assert all(r == list(range(1, 11)) for r in got.groupby("query_id")["rank"].apply(list))

    letters = [json.loads(line) for f in glob.glob(str(out / "dead_letters" / "*.jsonl"))
               for line in open(f)]
    by_id = {(d["record_id"], d["stage"]) for d in letters}
    assert {("bad-nan", "validate"), ("bad-len", "validate"), ("bad-str", "validate"),
            ("q00000", "validate"), ("", "validate"), ("", "read")} <= by_id
    assert all({"stage", "record_id", "error", "payload", "source"} <= d.keys() for d in letters)
    assert len(letters) == 6
    dup = next(d for d in letters if d["record_id"] == "q00000")
    assert "duplicate" in dup["error"] and "part-00009" in dup["source"]

    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "succeeded"
    assert manifest["counts"]["queries_read"] == len(query_ids) + 6
    assert manifest["counts"]["candidates_read"] == len(cand_ids)
    assert manifest["counts"]["pairs_written"] == len(query_ids) * 10
    assert manifest["counts"]["dead_letters_total"] == 6
    assert len(manifest["shards"]) == 3 and sum(s["size"] for s in manifest["shards"]) == len(cands)
    assert len(glob.glob(str(out / "indexes" / "shard-*-of-00003"))) == 3


def test_the_graph_deletes_its_spill_dir_once_the_shards_are_built(link_data, tmp_path, monkeypatch):
    # The graph's own DeleteSpillDir step, without run_job (whose cleanup covers local runs only).
    import apache_beam as beam

    from beam_jobs.match_corpora import build_pipeline, prepare

    spilled = _spy_on_spill(monkeypatch)
    root, _, cand_ids, _, _ = link_data
    options, cfg, static, num_output_shards, _, _ = prepare(
        _link_args(root, tmp_path / "out", "--index", "exact", "--num_shards", "2",
                   "--runner", "FnApiRunner", *_SPILL_ALL))
    spill_dir = str(tmp_path / "spill")
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, cfg, num_output_shards=num_output_shards, static_manifest=static,
                       spill_dir=spill_dir)
    assert sum(len(s) for s in spilled) == len(cand_ids)
    assert all(s.path.startswith(spill_dir) for s in spilled)
    assert not os.path.exists(spill_dir)


def test_scann_recall_and_identical_output_twice(link_data, tmp_path, monkeypatch):
    root, cands, cand_ids, queries, query_ids = link_data
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        _run(_link_args(root, out, "--num_shards", "2", "--num_output_shards", "3", "--index", "scann"))
        runs.append(out)
    want_ids, _ = oracle_topk(queries, cands, cand_ids, 10)
    got = read_matches(str(runs[0]))
    found = set(zip(got.query_id, got.candidate_id, strict=True))
    truth = {(q, c) for q, row in zip(query_ids, want_ids, strict=True) for c in row}
    recall = len(found & truth) / len(truth)
    assert recall >= 0.95, recall
    manifest = read_manifest(str(runs[0]))
    assert {s["kind"] for s in manifest["shards"]} == {"scann"}
    # The audit sample (1000 by default) covers all 300 queries here: it must agree exactly.
    assert manifest["audit"]["sample_size"] == len(query_ids)
    assert manifest["audit"]["recall_at_k"] == pytest.approx(recall, abs=1e-12)
    assert ".spill" not in os.listdir(runs[0])  # the spill directory under the output is gone
    # Vectors through spill files or all through the shuffle: the same bytes.
    spilled = _spy_on_spill(monkeypatch)
    for name, spill in (("spill-all", _SPILL_ALL), ("spill-none", ("--spill_min_mb", "0"))):
        spilled.clear()
        _run(_link_args(root, tmp_path / name, "--num_shards", "2", "--num_output_shards", "3",
                        "--index", "scann", *spill))
        assert bool(spilled) == (name == "spill-all")
        for f in os.listdir(runs[0] / "matches"):
            assert (tmp_path / name / "matches" / f).read_bytes() == (runs[0] / "matches" / f).read_bytes()
    files = sorted(os.listdir(runs[0] / "matches"))
    assert files == [f"matches-{i:05d}-of-00003.parquet" for i in range(3)]
    for f in files:
        assert (runs[0] / "matches" / f).read_bytes() == (runs[1] / "matches" / f).read_bytes()
    # Exact rescoring: reported distances are the true cosine distances of the pairs.
    idx = {c: i for i, c in enumerate(cand_ids)}
    qdx = {q: i for i, q in enumerate(query_ids)}
    d = 1 - np.einsum("ij,ij->i", queries[[qdx[q] for q in got.query_id]].astype(np.float64),
                      cands[[idx[c] for c in got.candidate_id]].astype(np.float64))
    np.testing.assert_allclose(got.distance, d, atol=1e-6)


def test_dedup_pairs_once_no_self_pairs(tmp_path):
    vecs, _ = make_link_vectors(3000, 1, 16, clusters=30, seed=5)
    ids = np.array([f"r{i:05d}" for i in range(len(vecs))], dtype=object)
    write_vector_corpus(str(tmp_path / "in"), ids, vecs, fmt="csv", files=2)
    out = tmp_path / "out"
    _run(["--input", str(tmp_path / "in" / "*.csv"), "--output", str(out), "--top_k", "5",
          "--index", "exact", "--max_distance", "0.2", "--output_format", "jsonl"])
    got = read_matches(str(out))
    assert (got.query_id < got.candidate_id).all()
    assert not got.duplicated(["query_id", "candidate_id"]).any()
    want_ids, want_d = oracle_topk(vecs, vecs, ids, 5, exclude=np.eye(len(vecs), dtype=bool))
    truth = {tuple(sorted((q, c))) for q, row, drow in zip(ids, want_ids, want_d, strict=True)
             for c, d in zip(row, drow, strict=True) if d <= 0.2}
    assert set(zip(got.query_id, got.candidate_id, strict=True)) == truth
    assert (got.distance <= 0.2).all()
    # Clusters: connected components of the emitted pairs, cluster id = smallest member.
    from transforms.clusters.cluster_pairs import read_clusters

    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in truth:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    clusters = read_clusters(str(out)).set_index("record_id")["cluster_id"]
    assert len(clusters) == len(ids)
    members: dict[str, list[str]] = {}
    for i in ids:
        members.setdefault(find(i), []).append(i)
    assert all(clusters[i] == min(members[find(i)]) for i in ids)
    assert read_manifest(str(out))["clusters"]["num_clusters"] == len(members)


@pytest.mark.parametrize("fmt", ["tfrecord", "csv"])
def test_other_formats_round_trip(tmp_path, fmt):
    from transforms.io.tfrecord import encode_example, frame_tfrecord

    cands, queries = make_link_vectors(400, 20, 8, clusters=5, seed=7)
    cand_ids = np.array([f"c{i}" for i in range(len(cands))], dtype=object)
    qids = np.array([f"q{i}" for i in range(len(queries))], dtype=object)
    if fmt == "tfrecord":
        for name, ids, vecs in (("c", cand_ids, cands), ("q", qids, queries)):
            os.makedirs(tmp_path / name)
            with open(tmp_path / name / "part.tfrecord", "wb") as fh:
                for i, v in zip(ids, vecs, strict=True):
                    fh.write(frame_tfrecord(encode_example({"id": [i], "embedding": v.tolist()})))
    else:
        write_vector_corpus(str(tmp_path / "c"), cand_ids, cands, fmt=fmt)
        write_vector_corpus(str(tmp_path / "q"), qids, queries, fmt=fmt)
    out = tmp_path / "out"
    _run(["--queries", str(tmp_path / "q" / "*"), "--candidates", str(tmp_path / "c" / "*"),
          "--output", str(out), "--top_k", "3", "--index", "exact", "--output_format", fmt])
    got = read_matches(str(out)).sort_values(["query_id", "rank"])
    want_ids, _ = oracle_topk(queries, cands, cand_ids, 3)
    order = np.argsort(qids.astype(str))
    np.testing.assert_array_equal(got.candidate_id.to_numpy().reshape(-1, 3), want_ids[order])


def test_too_many_bad_records_fail_clearly(tmp_path):
    cands, _ = make_link_vectors(200, 1, 8, seed=1)
    ids = [f"c{i}" for i in range(200)]
    write_vector_corpus(str(tmp_path / "c"), ids, cands, fmt="jsonl")
    with open(tmp_path / "q.jsonl", "w") as fh:
        fh.write('{"id": "q1", "embedding": [1,2,3,4,5,6,7,8]}\n' + "garbage\n" * 5)
    out = tmp_path / "out"
    with pytest.raises(Exception, match="max_bad_record_ratio"):
        _run(["--queries", str(tmp_path / "q.jsonl"), "--candidates", str(tmp_path / "c" / "*"),
              "--output", str(out), "--index", "exact"])
    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "failed" and "max_bad_record_ratio" in manifest["error"]


def test_glob_matching_nothing_names_the_flag(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "embedding": [1, 2]}\n')
    with pytest.raises((ConfigError, FileNotFoundError, ValueError), match="--candidates"):
        run_job(["--queries", str(tmp_path / "q.jsonl"), "--candidates", str(tmp_path / "none*.parquet"),
                 "--output", str(tmp_path / "o")])


def test_summary_cli(link_data, tmp_path, capsys):
    from beam_jobs.cli import main

    root = link_data[0]
    code = main(_link_args(root, tmp_path / "o", "--index", "exact", "--runner", "DirectRunner"))
    text = capsys.readouterr().out
    assert code == 0
    assert "pairs:      3,000 written" in text and "rejected:   6 (read 1, validate 5)" in text
    assert "report:" in text and os.path.exists(tmp_path / "o" / "report.html")
    os.remove(tmp_path / "o" / "report.html")
    assert main(["report", str(tmp_path / "o")]) == 0
    assert os.path.exists(tmp_path / "o" / "report.html")
    assert pd.notna(read_manifest(str(tmp_path / "o"))["wall_seconds"])


def test_centroid_routing_searches_fewer_shards_at_equal_recall(tmp_path):
    cands, queries = make_link_vectors(16_000, 400, DIMS, clusters=64, seed=11)
    cand_ids = np.array([f"c{i:06d}" for i in range(len(cands))], dtype=object)
    query_ids = np.array([f"q{i:05d}" for i in range(len(queries))], dtype=object)
    write_vector_corpus(str(tmp_path / "c"), cand_ids, cands, files=2)
    write_vector_corpus(str(tmp_path / "q"), query_ids, queries, files=1)
    want_ids, _ = oracle_topk(queries, cands, cand_ids, 10)
    truth = {(q, c) for q, row in zip(query_ids, want_ids, strict=True) for c in row}
    results = {}
    for routing in ("all", "centroids"):
        out = tmp_path / routing
        _run(["--queries", str(tmp_path / "q" / "*"), "--candidates", str(tmp_path / "c" / "*"),
              "--output", str(out), "--index", "exact", "--num_shards", "8", "--routing", routing,
              "--probe_shards", "3"])
        got = read_matches(str(out))
        found = set(zip(got.query_id, got.candidate_id, strict=True))
        routed = read_manifest(str(out))["metrics"]["query_shard_pairs_routed"]
        results[routing] = (len(found & truth) / len(truth), routed / len(query_ids))
    (recall_all, per_query_all), (recall_routed, per_query_routed) = results["all"], results["centroids"]
    assert recall_all == 1.0 and per_query_all == 8
    assert recall_routed >= 0.97, results
    assert per_query_routed <= 3, results

    # --target_recall tunes the probe on a sample: from 1 partition up to what reaches the target.
    out = tmp_path / "tuned"
    _run(["--queries", str(tmp_path / "q" / "*"), "--candidates", str(tmp_path / "c" / "*"),
          "--output", str(out), "--index", "exact", "--num_shards", "8", "--routing", "centroids",
          "--probe_shards", "1", "--target_recall", "0.99", "--audit_sample", "200"])
    manifest = read_manifest(str(out))
    tuning = manifest["routing"]["probe_tuning"]
    assert tuning["routing_recall"] >= tuning["target"], tuning
    # the fewest partitions that reach it: every smaller probe tried fell short
    assert all(r < tuning["target"] for p, r in tuning["tried"].items() if int(p) < tuning["probe"])
    assert min(int(p) for p in tuning["tried"]) == 1
    got = read_matches(str(out))
    recall_tuned = len(set(zip(got.query_id, got.candidate_id, strict=True)) & truth) / len(truth)
    assert recall_tuned >= 0.98, (recall_tuned, tuning)
    assert manifest["metrics"]["query_shard_pairs_routed"] / len(query_ids) < 8


def test_low_recall_fails_min_recall_and_tuning_restores_it(link_data, tmp_path):
    root, cands, cand_ids, queries, query_ids = link_data
    weak = ["--index", "scann", "--num_shards", "1", "--scann_num_leaves", "100",
            "--scann_leaves_to_search", "1",
            "--scann_reorder", "10"]
    out = tmp_path / "weak"
    with pytest.raises(Exception, match="min_recall"):
        _run(_link_args(root, out, *weak, "--min_recall", "0.9"))
    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "failed" and manifest["audit"]["recall_at_k"] < 0.9

    tuned = tmp_path / "tuned"
    _run(_link_args(root, tuned, *weak, "--target_recall", "0.97", "--audit_sample", "150"))
    manifest = read_manifest(str(tuned))
    (shard_tuning,) = manifest["search_tuning"].values()
    assert shard_tuning["leaves_to_search"] > 1 and shard_tuning["reached"]
    # The tuner aims at the relevant neighbours (audit "target"), so that is the recall it restores.
    assert manifest["audit"]["recall_relevant"] >= 0.95


def test_index_reuse_and_append_equal_fresh_runs(tmp_path):
    cands, queries = make_link_vectors(6_000, 200, 16, clusters=20, seed=21)
    ids = np.array([f"c{i:05d}" for i in range(len(cands))], dtype=object)
    qids = np.array([f"q{i:04d}" for i in range(len(queries))], dtype=object)
    write_vector_corpus(str(tmp_path / "c1"), ids[:4000], cands[:4000])
    write_vector_corpus(str(tmp_path / "c2"), ids[4000:], cands[4000:])
    write_vector_corpus(str(tmp_path / "q"), qids, queries)
    common = ["--queries", str(tmp_path / "q" / "*"), "--index", "exact", "--num_shards", "3"]

    _run(common + ["--candidates", str(tmp_path / "c1" / "*"), "--output", str(tmp_path / "base")])
    _run(common + ["--index_dir", str(tmp_path / "base"), "--output", str(tmp_path / "reused")])
    base = read_matches(str(tmp_path / "base"))
    pd.testing.assert_frame_equal(read_matches(str(tmp_path / "reused")), base)
    reused = read_manifest(str(tmp_path / "reused"))
    assert "candidates_read" not in reused["counts"]
    assert {s["path"] for s in reused["shards"]} == {
        s["path"] for s in read_manifest(str(tmp_path / "base"))["shards"]}

    _run(common + ["--candidates", str(tmp_path / "c*" / "*"), "--output", str(tmp_path / "fresh")])
    _run(common + ["--index_dir", str(tmp_path / "base"), "--append", "true",
                   "--candidates", str(tmp_path / "c2" / "*"), "--output", str(tmp_path / "appended")])
    pd.testing.assert_frame_equal(read_matches(str(tmp_path / "appended")),
                                  read_matches(str(tmp_path / "fresh")))
    appended = read_manifest(str(tmp_path / "appended"))
    assert appended["counts"]["candidates_indexed"] == len(cands)

    # Appending ids the kept index already holds (with other vectors, so mostly other shards):
    # each goes to dead letters, whichever shard it would land in; the new ids are added.
    clash = ids[[3, 1000, 2500, 3999]]
    extra = np.concatenate([clash, np.array(["n0001", "n0002"], dtype=object)])
    write_vector_corpus(str(tmp_path / "c3"), extra, make_link_vectors(6, 1, 16, seed=22)[0])
    again = tmp_path / "again"
    _run(common + ["--index_dir", str(tmp_path / "base"), "--append", "true",
                   "--candidates", str(tmp_path / "c3" / "*"), "--output", str(again),
                   "--max_bad_record_ratio", "0.05"])
    letters = [json.loads(line) for f in glob.glob(str(again / "dead_letters" / "*.jsonl"))
               for line in open(f)]
    assert sorted(d["record_id"] for d in letters) == sorted(clash)
    assert all("already in the kept index" in d["error"] for d in letters)
    manifest = read_manifest(str(again))
    assert manifest["counts"]["candidates_indexed"] == 4000 + 2
    held = np.concatenate([read_shard_ids(s["path"]) for s in manifest["shards"]])
    assert len(held) == len(set(held)) == 4002


def test_kept_index_built_differently_is_a_config_error(tmp_path, link_data):
    root = link_data[0]
    out = tmp_path / "base"
    _run(_link_args(root, out, "--index", "exact", "--num_shards", "2"))
    with pytest.raises(ConfigError, match="--distance"):
        run_job(["--queries", str(root / "queries" / "*.jsonl"), "--index_dir", str(out),
                 "--distance", "dot", "--output", str(tmp_path / "x")])


@pytest.mark.parametrize("mode,shard_flags", [
    ("link", []), ("dedup", []),
    # identical vectors meet in one shard whatever their ids: hash plan and centroid plan
    ("link", ["--num_shards", "3", "--routing", "all"]),
    ("dedup", ["--num_shards", "3", "--routing", "centroids", "--probe_shards", "12"])])
def test_exact_duplicates_are_indexed_once_and_matched_through_their_representative(tmp_path, mode,
                                                                                    shard_flags):
    vecs, _ = make_link_vectors(1500, 1, 12, clusters=10, seed=31)
    copies = vecs[[5, 5, 5, 77]]  # three copies of row 5, one of row 77
    allv = np.concatenate([vecs, copies])
    ids = np.array([f"r{i:05d}" for i in range(len(allv))], dtype=object)
    write_vector_corpus(str(tmp_path / "c"), ids, allv)
    out = tmp_path / "out"
    if mode == "link":
        queries = np.concatenate([vecs[[5, 77, 300]], make_link_vectors(50, 1, 12, seed=32)[0]])
        qids = np.array([f"q{i:03d}" for i in range(len(queries))], dtype=object)
        write_vector_corpus(str(tmp_path / "q"), qids, queries)
        _run(["--queries", str(tmp_path / "q" / "*"), "--candidates", str(tmp_path / "c" / "*"),
              "--output", str(out), "--index", "exact", "--top_k", "6", *shard_flags])
        got = read_matches(str(out)).sort_values(["query_id", "rank"])
        want_ids, want_d = oracle_topk(queries, allv, ids, 6)
        order = np.argsort(qids.astype(str))
        np.testing.assert_array_equal(got.candidate_id.to_numpy().reshape(-1, 6), want_ids[order])
        np.testing.assert_allclose(got.distance.to_numpy().reshape(-1, 6), want_d[order], atol=1e-6)
        # A nightly run reusing the index matches queries to the collapsed duplicates too.
        reused = tmp_path / "reused"
        _run(["--queries", str(tmp_path / "q" / "*"), "--index_dir", str(out), "--output", str(reused),
              "--top_k", "6"])
        pd.testing.assert_frame_equal(read_matches(str(reused)), read_matches(str(out)))
    else:
        _run(["--input", str(tmp_path / "c" / "*"), "--output", str(out), "--index", "exact",
              "--top_k", "3", "--max_distance", "0.05", *shard_flags])
        got = read_matches(str(out))
        pairs = set(zip(got.query_id, got.candidate_id, strict=True))
        assert {("r00005", "r01500"), ("r00005", "r01501"), ("r00005", "r01502"),
                ("r00077", "r01503")} <= pairs
        assert (got.query_id < got.candidate_id).all()
        assert not got.duplicated(["query_id", "candidate_id"]).any()
    manifest = read_manifest(str(out))
    assert manifest["counts"]["candidates_indexed"] == 1500
    assert manifest["metrics"]["exact_duplicate_aliases"] == 4
