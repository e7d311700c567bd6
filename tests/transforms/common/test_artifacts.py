"""Tests for transforms.common.artifacts on local disk and on an in-memory ``mem://`` Beam filesystem
(``tests/memfs.py``)."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from apache_beam.io.filesystems import FileSystems

import tests.memfs  # noqa: F401  (registers mem://)
from transforms.common.artifacts import (
    SUCCESS_MARKER,
    IncompleteArtifactError,
    fetch_dir,
    join_path,
    publish_dir,
    read_bytes,
    read_text,
    write_bytes,
    write_text,
)


@pytest.fixture
def mem_dir():
    """A fresh mem:// directory per test."""
    return f"mem://artifacts-test/{uuid.uuid4().hex}"


def _make_tree(root) -> dict[str, bytes]:
    files = {
        "index/params.json": b'{"leaves": 4}',
        "index/data.bin": bytes(range(256)) * 10,
        "ids.npy": b"\x93NUMPY fake",
        "model.gz": b"\x1f\x8b not really gzip: must be copied byte for byte",
        "empty.txt": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _local_tree(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = open(full, "rb").read()
    return out


@pytest.mark.parametrize("where", ["local", "mem"])
def test_publish_fetch_round_trip(tmp_path, mem_dir, where):
    files = _make_tree(tmp_path / "src")
    dest = str(tmp_path / "published" / "shard-00000") if where == "local" else mem_dir + "/shard-00000"
    publish_dir(str(tmp_path / "src"), dest)

    marker = json.loads(read_text(join_path(dest, SUCCESS_MARKER)))
    assert marker["files"] == {rel: len(data) for rel, data in files.items()}
    assert read_bytes(join_path(dest, "model.gz")) == files["model.gz"]  # not re-compressed

    fetched = fetch_dir(dest)
    assert _local_tree(fetched) == files
    into = fetch_dir(dest, str(tmp_path / "fetched"))
    assert into == str(tmp_path / "fetched")
    assert _local_tree(into) == files


def test_fetch_refuses_unpublished_and_incomplete_dirs(tmp_path, mem_dir):
    files = _make_tree(tmp_path / "src")
    with pytest.raises(IncompleteArtifactError, match=SUCCESS_MARKER):
        fetch_dir(mem_dir + "/never")

    # Files copied but no marker yet (publisher died half way): refused.
    write_bytes(join_path(mem_dir, "half", "ids.npy"), files["ids.npy"])
    with pytest.raises(IncompleteArtifactError):
        fetch_dir(mem_dir + "/half")

    publish_dir(str(tmp_path / "src"), mem_dir + "/full")
    FileSystems.delete([join_path(mem_dir, "full", "index", "data.bin")])
    with pytest.raises(IncompleteArtifactError, match="missing"):
        fetch_dir(mem_dir + "/full")

    publish_dir(str(tmp_path / "src"), str(tmp_path / "local"))
    (tmp_path / "local" / "ids.npy").write_bytes(b"short")
    with pytest.raises(IncompleteArtifactError, match="bytes"):
        fetch_dir(str(tmp_path / "local"))


def test_republish_replaces_marker_and_ignores_stale_files(tmp_path, mem_dir):
    _make_tree(tmp_path / "v1")
    publish_dir(str(tmp_path / "v1"), mem_dir)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "only.txt").write_bytes(b"v2")
    publish_dir(str(tmp_path / "v2"), mem_dir)
    assert _local_tree(fetch_dir(mem_dir)) == {"only.txt": b"v2"}


def test_publish_empty_dir_and_bad_inputs(tmp_path, mem_dir):
    (tmp_path / "empty").mkdir()
    publish_dir(str(tmp_path / "empty"), mem_dir)
    assert _local_tree(fetch_dir(mem_dir)) == {}
    with pytest.raises(NotADirectoryError):
        publish_dir(str(tmp_path / "missing"), mem_dir)
    (tmp_path / "has_marker").mkdir()
    (tmp_path / "has_marker" / SUCCESS_MARKER).write_bytes(b"")
    with pytest.raises(ValueError, match=SUCCESS_MARKER):
        publish_dir(str(tmp_path / "has_marker"), mem_dir)


def test_fetch_rejects_unsafe_marker_paths(mem_dir):
    write_text(join_path(mem_dir, SUCCESS_MARKER), json.dumps({"files": {"../evil": 1}}))
    with pytest.raises(IncompleteArtifactError, match="unsafe"):
        fetch_dir(mem_dir)


@pytest.mark.parametrize("where", ["local", "mem"])
def test_text_helpers_round_trip_without_leftovers(tmp_path, mem_dir, where):
    base = str(tmp_path / "out") if where == "local" else mem_dir
    path = join_path(base, "manifest.json")
    write_text(path, '{"é": 1}\n')
    write_text(path, '{"é": 2}\n')  # overwrite
    assert read_text(path) == '{"é": 2}\n'
    listed = [m.path for m in FileSystems.match([join_path(base, "*")])[0].metadata_list]
    assert listed == [path]  # the temporary file was renamed, not left behind


def test_join_path_keeps_scheme():
    assert join_path("mem://bucket/dir/", "a", "b.txt") == "mem://bucket/dir/a/b.txt"
    assert join_path("gs://bucket", "x") == "gs://bucket/x"
    assert join_path("/tmp/x", "y") == os.path.join("/tmp/x", "y")


def test_read_corpus_and_write_matches_on_mem(mem_dir):
    """The corpus reader and match writer only touch Beam FileSystems, so any scheme works."""
    import gzip

    import apache_beam as beam
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.common.schema import PairBatch
    from transforms.io.read_corpus import ReadCorpus, check_glob_matches
    from transforms.io.results import read_matches
    from transforms.io.write_matches import WriteMatches

    write_bytes(join_path(mem_dir, "in", "a.jsonl.gz"), gzip.compress(b'{"id": "1"}\n{"id": "2"}\nbad\n'))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": ["3", "4", "5"]}), sink, row_group_size=2)
    write_bytes(join_path(mem_dir, "in", "b.parquet"), sink.getvalue().to_pybytes())
    assert check_glob_matches(join_path(mem_dir, "in", "*"), "input") == 2

    pairs = PairBatch(np.array(["q"], dtype=object), np.array(["c"], dtype=object), np.array([1]),
                      np.array([0.5]))
    with TestPipeline(runner="FnApiRunner") as p:
        read = p | ReadCorpus(file_pattern=join_path(mem_dir, "in", "*"), input_format="auto", role="input")
        assert_that(read.rows_read, equal_to([6]))
        _ = (p | beam.Create([pairs], reshuffle=False)
             | WriteMatches(output_dir=join_path(mem_dir, "out"), output_format="parquet", num_shards=2))
    got = read_matches(join_path(mem_dir, "out"))
    assert got.to_dict("list") == {"query_id": ["q"], "candidate_id": ["c"], "rank": [1], "distance": [0.5]}


def test_publish_with_move_renames_local_files_and_copies_elsewhere(tmp_path, mem_dir):
    from transforms.common.artifacts import staging_dir_for

    dest = tmp_path / "out" / "indexes" / "shard-00000-of-00001"
    staging = staging_dir_for(str(dest))
    assert staging == str(tmp_path / "out" / "indexes")  # beside dest: same filesystem
    _make_tree(tmp_path / "out" / "indexes" / ".tmp")
    want = _local_tree(str(tmp_path / "out" / "indexes" / ".tmp"))
    publish_dir(str(tmp_path / "out" / "indexes" / ".tmp"), str(dest), move=True)
    assert _local_tree(fetch_dir(str(dest))) == want
    assert _local_tree(str(tmp_path / "out" / "indexes" / ".tmp")) == {}  # moved, not copied
    assert staging_dir_for(mem_dir + "/x") is None
    _make_tree(tmp_path / "src")
    publish_dir(str(tmp_path / "src"), mem_dir, move=True)  # not local: copied
    assert _local_tree(fetch_dir(mem_dir)) == _local_tree(str(tmp_path / "src"))
