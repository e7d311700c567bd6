"""End to end on the local runner: file-level input faults, empty corpora, ids and strings that
cannot be carried, and their effect on the bad-record gate (issue #18's input points)."""

from __future__ import annotations

import glob
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs.match_corpora import main, run_job
from transforms.io.results import read_manifest, read_matches
from transforms.testing.clustered import make_link_vectors, write_vector_corpus

pytestmark = pytest.mark.slow
DIMS = 8
TOP_K = 3


def oracle(queries, cands, cand_ids, k):
    """Exact cosine top-k in float64, ties by id: {query row: [candidate ids]}, [distances]."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = cands / np.linalg.norm(cands, axis=1, keepdims=True)
    d = 1.0 - q.astype(np.float64) @ c.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.asarray(cand_ids, dtype=str), d.shape), d), axis=-1)[:, :k]
    return np.asarray(cand_ids, dtype=object)[order], np.take_along_axis(d, order, axis=1)


def _run(args):
    result, cfg, waited = run_job(args + ["--runner", "FnApiRunner", "--index", "exact",
                                          "--top_k", str(TOP_K)])
    return cfg


def _letters(out):
    return [json.loads(line) for f in glob.glob(str(out / "dead_letters" / "*.jsonl")) for line in open(f)]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cands, queries = make_link_vectors(60, 12, DIMS, clusters=5, seed=7)
    cand_ids = [f"c{i:03d}" for i in range(len(cands))]
    query_ids = [f"q{i:03d}" for i in range(len(queries))]
    write_vector_corpus(str(root / "cands"), cand_ids, cands, fmt="parquet")
    write_vector_corpus(str(root / "queries"), query_ids, queries, fmt="jsonl")
    return root, cands, cand_ids, queries, query_ids


def _check_against_oracle(out, queries, query_ids, cands, cand_ids):
    got = read_matches(str(out)).sort_values(["query_id", "rank"])
    want, want_d = oracle(queries, cands, cand_ids, TOP_K)
    order = np.argsort(np.asarray(query_ids, dtype=str))
    assert sorted(got.query_id.unique()) == sorted(query_ids)
    np.testing.assert_array_equal(got.candidate_id.to_numpy().reshape(-1, TOP_K), want[order])
    np.testing.assert_allclose(got.distance.to_numpy().reshape(-1, TOP_K), want_d[order], atol=1e-6)


def test_unclosed_csv_quote_costs_its_own_row_only(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    lines = ["id,embedding,note"]
    for i, qid in enumerate(query_ids):
        note = '"unclosed, so the reader must not swallow' if i == 3 else f"note {i}"
        lines.append(f'{qid},"{json.dumps(queries[i].tolist())}",{note}')
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    _run(["--queries", str(tmp_path / "q.csv"), "--candidates", str(root / "cands" / "*"),
          "--output", str(out), "--max_bad_record_ratio", "0.2"])
    keep = [i for i in range(len(query_ids)) if i != 3]
    _check_against_oracle(out, queries[keep], [query_ids[i] for i in keep], cands, cand_ids)
    letters = _letters(out)
    assert len(letters) == 1 and letters[0]["error"].startswith("line 5: a quoted field is not closed")
    manifest = read_manifest(str(out))
    assert manifest["counts"]["queries_read"] == len(query_ids)
    assert manifest["counts"]["dead_letters_total"] == 1


def _truncated_parquet(path, n=500):
    table = pa.table({"id": [f"t{i}" for i in range(n)],
                      "embedding": [[1.0] * DIMS for _ in range(n)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=100)
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data[: len(data) // 2])  # the footer (and its row count) is gone


def test_a_truncated_file_fails_the_run_naming_it_unless_max_bad_files_allows_it(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    qdir = tmp_path / "q"
    write_vector_corpus(str(qdir), query_ids, queries, fmt="jsonl")
    _truncated_parquet(qdir / "cut.parquet")
    out = tmp_path / "out"
    args = ["--queries", str(qdir / "*"), "--candidates", str(root / "cands" / "*"), "--output", str(out)]
    code = main(args + ["--runner", "FnApiRunner", "--index", "exact", "--top_k", str(TOP_K)])
    assert code == 1
    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "failed"
    assert "cut.parquet" in manifest["error"] and "--max_bad_files 0" in manifest["error"]
    assert not glob.glob(str(out / "indexes" / "shard-*" / "_SUCCESS"))  # stopped before the build
    [letter] = _letters(out)
    assert letter["rows"] == 0 and letter["source"].endswith("cut.parquet")

    allowed = tmp_path / "allowed"
    _run(args[:-1] + [str(allowed), "--max_bad_files", "1", "--max_bad_record_ratio", "0.1"])
    _check_against_oracle(allowed, queries, query_ids, cands, cand_ids)
    counts = read_manifest(str(allowed))["counts"]
    assert counts["dead_letters_total"] == 1 and counts["bad_files"] == 1


def test_a_truncated_gzip_stream_is_a_bad_file(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    text = "".join(json.dumps({"id": qid, "embedding": queries[i].tolist()}) + "\n"
                   for i, qid in enumerate(query_ids) for _ in range(40))  # compressible
    data = gzip.compress(text.encode())
    (tmp_path / "q.jsonl.gz").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(Exception, match="q.jsonl.gz"):
        _run(["--queries", str(tmp_path / "q.jsonl.gz"), "--candidates", str(root / "cands" / "*"),
              "--output", str(out)])
    letters = [d for d in _letters(out) if d["rows"] == 0]
    assert len(letters) == 1 and "truncated or corrupt gzip stream" in letters[0]["error"]


def test_a_corrupt_row_group_counts_its_rows_in_the_gate(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    n = 600
    table = pa.table({"id": [f"c{i:03d}" for i in range(n)],
                      "embedding": pa.array([cands[i % len(cands)].tolist() for i in range(n)],
                                            pa.list_(pa.float32()))})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=300, compression="snappy")
    data = bytearray(sink.getvalue().to_pybytes())
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    start = meta.row_group(0).column(1).data_page_offset
    for k in range(40):  # garble the first row group's vector pages
        data[start + 20 + k] ^= 0x5A
    (tmp_path / "c.parquet").write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(Exception, match="max_bad_record_ratio"):
        _run(["--queries", str(root / "queries" / "*"), "--candidates", str(tmp_path / "c.parquet"),
              "--output", str(out), "--max_bad_record_ratio", "0.4"])
    manifest = read_manifest(str(out))
    # 300 of the 612 rows were lost: the ratio 0.49 is over 0.4 although there is one dead letter.
    assert manifest["counts"]["candidates_read"] == n
    assert "300 of 612 records" in manifest["error"]
    [letter] = [d for d in _letters(out)]
    assert letter["rows"] == 300 and "corrupt parquet row group 0" in letter["error"]


@pytest.mark.parametrize("kind", ["empty_jsonl", "zero_row_parquet", "csv_named_parquet"])
def test_an_empty_or_unreadable_query_corpus_fails_like_empty_candidates(corpora, tmp_path, kind):
    root, cands, cand_ids, queries, query_ids = corpora
    extra = []
    if kind == "empty_jsonl":
        path = tmp_path / "q.jsonl"
        path.write_text("")
    elif kind == "zero_row_parquet":
        path = tmp_path / "q.parquet"
        pq.write_table(pa.table({"id": pa.array([], pa.string()),
                                 "embedding": pa.array([], pa.list_(pa.float32()))}), str(path))
    else:
        path = tmp_path / "q.parquet"
        path.write_text('id,embedding\nq1,"[1, 2, 3, 4, 5, 6, 7, 8]"\n')
        extra = ["--max_bad_files", "1", "--max_bad_record_ratio", "1"]
    out = tmp_path / "out"
    code = main(["--queries", str(path), "--candidates", str(root / "cands" / "*"),
                 "--output", str(out), "--runner", "FnApiRunner", "--index", "exact", *extra])
    assert code == 1
    manifest = read_manifest(str(out))
    assert manifest["exit_state"] == "failed" and "no valid query records" in manifest["error"]

    # The same corpus as the candidates fails the same way, by the existing rule.
    out2 = tmp_path / "out2"
    code = main(["--queries", str(root / "queries" / "*"), "--candidates", str(path),
                 "--output", str(out2), "--runner", "FnApiRunner", "--index", "exact", *extra])
    assert code == 1
    assert "no valid candidate records" in read_manifest(str(out2))["error"]


def test_lone_surrogates_and_bad_ids_are_dead_letters_not_crashes(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    qdir = tmp_path / "q"
    write_vector_corpus(str(qdir), query_ids, queries, fmt="jsonl")
    vec = json.dumps([0.5] * DIMS)
    (qdir / "bad.jsonl").write_text("\n".join([
        '{"id": "lone\\ud800", "embedding": ' + vec + "}",  # a valid JSON escape Python holds as is
        '{"id": NaN, "embedding": ' + vec + "}",
        '{"id": "' + "x" * 300 + '", "embedding": ' + vec + "}",
    ]) + "\n")
    # csv: the UTF-8 form of a surrogate is not valid UTF-8, so the row is rejected when read.
    (qdir / "bad.csv").write_bytes(b'id,embedding\nc\xed\xa0\x80,"' + vec.encode() + b'"\n')
    out = tmp_path / "out"
    _run(["--queries", str(qdir / "*"), "--candidates", str(root / "cands" / "*"), "--output", str(out),
          "--max_bad_record_ratio", "0.5", "--max_id_length", "200"])
    _check_against_oracle(out, queries, query_ids, cands, cand_ids)
    letters = sorted(_letters(out), key=lambda d: d["error"])
    errors = [d["error"] for d in letters]
    assert len(letters) == 4
    assert any("is not valid Unicode (a lone surrogate" in e for e in errors)
    assert any("invalid id nan" in e for e in errors)
    assert any("300 characters long (--max_id_length 200)" in e for e in errors)
    assert any(e == "line 2: invalid UTF-8" for e in errors)
    surrogate = next(d for d in letters if "lone surrogate" in d["error"])
    assert "lone\\ud800" in surrogate["payload"]  # escaped: the letter itself is valid UTF-8
    assert read_manifest(str(out))["counts"]["dead_letters_total"] == 4


def test_distances_stay_in_range_and_top_k_is_capped_by_the_candidates(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    few = tmp_path / "few"
    write_vector_corpus(str(few), ["a", "b", "c", "d", "e"], queries[:5], fmt="parquet")  # copies
    out = tmp_path / "out"
    result, cfg, waited = run_job(["--queries", str(root / "queries" / "*"), "--candidates", str(few / "*"),
                                   "--output", str(out), "--runner", "FnApiRunner", "--index", "exact",
                                   "--top_k", "1000000"])
    got = read_matches(str(out))
    assert len(got) == len(query_ids) * 5  # every candidate, no empty slot written
    assert (got.distance >= 0).all() and (got.distance <= 2).all()
    same = got[got.query_id.isin(query_ids[:5]) & (got["rank"] == 1)]
    assert sorted(same.candidate_id) == ["a", "b", "c", "d", "e"] and (same.distance < 1e-6).all()
    want, want_d = oracle(queries, queries[:5], np.array(["a", "b", "c", "d", "e"]), 5)
    order = np.argsort(np.asarray(query_ids, dtype=str))
    got = got.sort_values(["query_id", "rank"])
    np.testing.assert_array_equal(got.candidate_id.to_numpy().reshape(-1, 5), want[order])
    np.testing.assert_allclose(got.distance.to_numpy().reshape(-1, 5), np.maximum(want_d[order], 0),
                               atol=1e-6)


def test_a_long_id_within_max_id_length_is_carried_exactly(corpora, tmp_path):
    root, cands, cand_ids, queries, query_ids = corpora
    long_q, long_c = "q" + "é" * 50_000, "c" + "x" * 60_000
    qids = list(query_ids)
    qids[0] = long_q
    cids = list(cand_ids)
    cids[0] = long_c
    write_vector_corpus(str(tmp_path / "q"), qids, queries, fmt="jsonl")
    write_vector_corpus(str(tmp_path / "c"), cids, cands, fmt="csv")
    out = tmp_path / "out"
    _run(["--queries", str(tmp_path / "q" / "*"), "--candidates", str(tmp_path / "c" / "*"),
          "--output", str(out), "--max_id_length", "100000"])
    _check_against_oracle(out, queries, qids, cands, cids)
    assert long_q in set(read_matches(str(out)).query_id)
    assert _letters(out) == []


def test_lone_surrogates_in_text_fields_are_dead_letters_when_embedding(tmp_path):
    # Records embedded in the job (tf.Transform + the default embedder, exact search): a lone
    # surrogate in an embedded text field or in an id is a dead letter; the others match.
    names = ["alice smith", "bob jones", "carol white", "dave brown", "erin green", "frank black"]
    queries = [{"id": f"q{i}", "name": n} for i, n in enumerate(names[:4])]
    queries += [{"id": "q-bad-text", "name": "bad \ud800 text"}, {"id": "q\udfff", "name": "carol"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))  # \\u escapes
    rows = [f"c{i},{n}".encode() for i, n in enumerate(names)]
    rows.append(b"c-bad,caf\xed\xa0\x80")  # a surrogate's UTF-8 form: invalid UTF-8, rejected as read
    (tmp_path / "c.csv").write_bytes(b"id,name\n" + b"\n".join(rows) + b"\n")
    out = tmp_path / "out"
    run_job(["--queries", str(tmp_path / "q.jsonl"), "--candidates", str(tmp_path / "c.csv"),
             "--output", str(out), "--runner", "FnApiRunner", "--index", "exact", "--top_k", "2",
             "--text_fields", "name", "--scorer", "none", "--max_bad_record_ratio", "0.5"])
    got = read_matches(str(out))
    first = got[got["rank"] == 1].set_index("query_id").candidate_id.to_dict()
    assert first == {f"q{i}": f"c{i}" for i in range(4)}  # identical text: nearest
    assert (got.distance >= 0).all()
    letters = {(d["stage"], d["record_id"]): d["error"] for d in _letters(out)}
    assert set(letters) == {("preprocess", "q-bad-text"), ("validate", ""), ("read", "")}
    assert "field 'name': not valid Unicode" in letters[("preprocess", "q-bad-text")]
    assert "is not valid Unicode" in letters[("validate", "")]
    assert letters[("read", "")] == "line 8: invalid UTF-8"
    manifest = read_manifest(str(out))
    assert manifest["counts"]["dead_letters_total"] == 3 and manifest["exit_state"] == "succeeded"
