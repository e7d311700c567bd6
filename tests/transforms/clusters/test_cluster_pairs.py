"""Tests for transforms.clusters.cluster_pairs: connected components in Beam against a union-find oracle.

One mixed graph (chains, stars, a random sparse graph, a giant cluster, duplicate / reversed / self
pairs, singletons) runs through ``ClusterPairs`` twice: with enough rounds to converge, and with too
few rounds so the leftover components are finished on one worker; both must equal the oracle and
write identical cluster files. The DoFns are also driven directly, without a runner, on more random
graphs. Pipelines run on ``BundleBasedDirectRunner`` (as in test_io.py: the default DirectRunner
first tries to download the Prism binary).
"""

from __future__ import annotations

import collections
import math
import os
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from transforms.clusters import cluster_pairs as C
from transforms.clusters.cluster_pairs import (
    ClusterPairs,
    ClustersDidNotConvergeError,
    WriteClusters,
    read_clusters,
)
from transforms.common.schema import PairBatch

RUNNER = "BundleBasedDirectRunner"
CHAIN = 300
GIANT = 60
MAX_CLUSTER_SIZE = 50


def _pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=RUNNER)


# ------------------------------------------------------------------------------------------------
# The oracle and the test graph


def connected_components(pairs, ids=()) -> dict[str, str]:
    """Union-find: every id (of pairs or ``ids``) -> the smallest id of its component."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x in ids:
        find(x)
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def _expected_rows(pairs, ids) -> list[tuple[str, str, int]]:
    label = connected_components(pairs, ids)
    sizes = collections.Counter(label.values())
    return sorted((x, c, sizes[c]) for x, c in label.items())


def _mixed_graph(seed: int = 0):
    """(pairs as (a, b) tuples, record ids) of a graph with every shape the algorithm must handle."""
    rng = np.random.default_rng(seed)
    pairs = []
    chain = [f"c{i:04d}" for i in range(CHAIN)]  # ids sorted along the chain
    pairs += list(zip(chain[:-1], chain[1:], strict=True))
    shuffled = [f"d{i:04d}" for i in rng.permutation(CHAIN // 2)]
    pairs += list(zip(shuffled[:-1], shuffled[1:], strict=True))
    for k, n_leaves in enumerate((1, 2, 5, 20)):  # stars whose centre is the largest id
        pairs += [(f"s{k}-z", f"s{k}-{j:02d}") for j in range(n_leaves)]
    random_nodes = [f"g{i:03d}" for i in range(120)]
    for _ in range(90):
        a, b = rng.choice(len(random_nodes), size=2, replace=False)
        pairs.append((random_nodes[a], random_nodes[b]))
    giant = [f"h{i:03d}" for i in range(GIANT)]
    pairs += [(giant[i], giant[j]) for i in range(GIANT) for j in rng.choice(GIANT, size=3) if i != j]
    pairs += [(b, a) for a, b in pairs[:40]]  # reversed duplicates
    pairs += pairs[:10]  # exact duplicates
    pairs.append(("x-self", "x-self"))  # a self pair still gets a (singleton) cluster
    pairs.append(("only-in-pairs-b", "only-in-pairs-a"))
    ids = sorted({x for p in pairs for x in p} - {"only-in-pairs-a", "only-in-pairs-b"})
    ids += [f"single{i:02d}" for i in range(30)] + random_nodes  # random_nodes: some repeat
    return pairs, ids


def _pair_batches(pairs, n_batches: int = 4) -> list[PairBatch]:
    out = []
    for chunk in np.array_split(np.arange(len(pairs)), n_batches):
        q = np.array([pairs[i][0] for i in chunk], dtype=object)
        c = np.array([pairs[i][1] for i in chunk], dtype=object)
        out.append(PairBatch(q, c, np.ones(len(chunk), np.int64), np.full(len(chunk), 0.1)))
    return out


def _id_batches(ids, n_batches: int = 3) -> list[np.ndarray]:
    return [np.array(part, dtype=object) for part in np.array_split(np.array(ids, dtype=object), n_batches)]


def _rows(batch):
    return [(str(i), str(c), int(s)) for i, c, s in zip(*batch, strict=True)]


def _dump(value, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(value, f)


def _run_clusters(pairs, ids, out_dir, **kwargs):
    """Runs ClusterPairs + WriteClusters; returns the stats dict (checked inside the pipeline)."""
    expected = _expected_rows(pairs, ids)
    with _pipeline() as p:
        pair_pc = p | "Pairs" >> beam.Create(_pair_batches(pairs), reshuffle=False)
        id_pc = p | "Ids" >> beam.Create(_id_batches(ids), reshuffle=False)
        result = (pair_pc, id_pc) | "Cluster" >> ClusterPairs(**kwargs)
        rows = result.assignments | "Rows" >> beam.FlatMap(_rows)
        assert_that(rows, equal_to(expected), label="MatchesOracle")
        _ = result.assignments | "Write" >> WriteClusters(output_dir=str(out_dir), num_shards=3)
        _ = result.stats | "KeepStats" >> beam.Map(_dump, str(out_dir / "stats.pickle"))
    with open(out_dir / "stats.pickle", "rb") as f:
        return pickle.load(f)


# ------------------------------------------------------------------------------------------------
# Under a runner


def _check_stats(stats, pairs, ids):
    label = connected_components(pairs, ids)
    sizes = collections.Counter(label.values())
    assert stats["num_records"] == len(label)
    assert stats["num_clusters"] == len(sizes)
    assert stats["cluster_size_histogram"] == dict(sorted(collections.Counter(sizes.values()).items()))
    assert stats["num_singletons"] == sum(1 for s in sizes.values() if s == 1)
    top = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert stats["largest_clusters"] == [{"cluster_id": c, "size": s} for c, s in top]
    assert stats["largest_clusters"][0] == {"cluster_id": "c0000", "size": CHAIN}
    giants = [g["cluster_id"] for g in stats["giant_clusters"]]
    assert giants == [c for c, s in top if s > MAX_CLUSTER_SIZE]
    assert "h000" in giants and stats["num_giant_clusters"] == len(giants)
    assert stats["max_cluster_size"] == MAX_CLUSTER_SIZE


def test_cluster_pairs_matches_oracle_converged_and_finished_in_one_place(tmp_path):
    pairs, ids = _mixed_graph()
    converged = _run_clusters(pairs, ids, tmp_path / "a", max_cluster_size=MAX_CLUSTER_SIZE,
                              max_rounds=20, num_buckets=4)
    _check_stats(converged, pairs, ids)
    assert converged["converged"] and not converged["finished_in_one_place"]
    assert converged["unconverged_edges"] == 0
    # A chain of N nodes in a pseudo-random order needs about 1.7 * log2(N) rounds.
    assert converged["rounds"] <= 2 * math.ceil(math.log2(CHAIN)) + 2
    assert len(converged["edges_per_round"]) == converged["rounds"]

    cut_short = _run_clusters(pairs, ids, tmp_path / "b", max_cluster_size=MAX_CLUSTER_SIZE,
                              max_rounds=3, num_buckets=3)
    _check_stats(cut_short, pairs, ids)
    assert not cut_short["converged"] and cut_short["finished_in_one_place"]
    assert cut_short["rounds"] == 3 and cut_short["unconverged_edges"] > 0

    # Same clusters -> same bytes, whatever the rounds, buckets or path taken.
    names = sorted(os.listdir(tmp_path / "a" / "clusters"))
    assert names == [f"clusters-{s:05d}-of-00003.parquet" for s in range(3)]
    assert names == sorted(os.listdir(tmp_path / "b" / "clusters"))
    for name in names:
        assert (tmp_path / "a" / "clusters" / name).read_bytes() == \
            (tmp_path / "b" / "clusters" / name).read_bytes()
    frame = read_clusters(str(tmp_path / "a"))
    assert list(frame.columns) == list(C.CLUSTER_COLUMNS)
    assert list(frame.itertuples(index=False, name=None)) == _expected_rows(pairs, ids)


def test_cluster_pairs_fails_clearly_when_too_much_is_left(tmp_path):
    pairs = [(f"c{i:04d}", f"c{i + 1:04d}") for i in range(100)]
    with pytest.raises(Exception, match="did not converge within max_rounds=2") as info:
        _run_clusters(pairs, [], tmp_path, max_rounds=2, num_buckets=2, max_final_edges=10)
    assert isinstance(info.value, ClustersDidNotConvergeError) or \
        "ClustersDidNotConvergeError" in str(info.value)


def test_no_pairs_gives_singletons_and_empty_shard_files(tmp_path):
    ids = ["b", "a", "c", "a"]
    with _pipeline() as p:
        pairs = p | "NoPairs" >> beam.Create([PairBatch(*(np.empty(0, t) for t in (object, object,
                                                                                   np.int64, float)))])
        id_pc = p | "Ids" >> beam.Create([np.array(ids, dtype=object)], reshuffle=False)
        result = (pairs, id_pc) | ClusterPairs(max_rounds=2, num_buckets=2)
        assert_that(result.assignments | beam.FlatMap(_rows),
                    equal_to([("a", "a", 1), ("b", "b", 1), ("c", "c", 1)]), label="Rows")

        def check(stats):
            (s,) = stats
            if not (s["num_clusters"] == 3 and s["cluster_size_histogram"] == {1: 3}
                    and s["converged"] and s["rounds"] == 1 and s["giant_clusters"] == []):
                raise BeamAssertException(f"unexpected stats {s}")

        assert_that(result.stats, check, label="Stats")
        _ = result.assignments | WriteClusters(output_dir=str(tmp_path), num_shards=4)
    assert len(os.listdir(tmp_path / "clusters")) == 4
    assert list(read_clusters(str(tmp_path))["record_id"]) == ["a", "b", "c"]


def test_pairs_alone_cluster_the_paired_ids(tmp_path):
    pairs = [("b", "a"), ("c", "d"), ("e", "e")]
    with _pipeline() as p:
        result = (p | beam.Create(_pair_batches(pairs, 2), reshuffle=False)
                  | ClusterPairs(max_rounds=4, num_buckets=2))
        assert_that(result.assignments | beam.FlatMap(_rows), equal_to(_expected_rows(pairs, [])))


# ------------------------------------------------------------------------------------------------
# DoFns driven directly (no runner): many random graphs, round counts, star test


def _group(items):
    groups = collections.defaultdict(list)
    for k, v in items:
        groups[k].append(v)
    return sorted(groups.items())


def _split_outputs(outputs, tag):
    main, tagged = [], []
    for x in outputs:
        (tagged.append(x.value) if isinstance(x, TaggedOutput) and x.tag == tag else main.append(x))
    return main, tagged


def _drive(pairs, num_buckets: int, max_rounds: int = 60):
    """The round loop of ClusterPairs, in memory. Returns (rounds or None, active keyed edges)."""
    (batch,) = _pair_batches(pairs, 1)
    active, _ = _split_outputs(C._PairsToEdgesFn(num_buckets).process(batch), C._IDS_TAG)
    for step in range(max_rounds):
        large = step % 2 == 0
        fn = C._StarStepFn(large, num_buckets)
        out, progress = _split_outputs(
            [x for group in _group(active) for x in fn.process(group)], C._PROGRESS_TAG)
        active = out
        if large and C._sum_progress(progress)[0] == 0:
            return step + 1, active
    return None, active


def _labels_from_stars(star_edges) -> dict[str, str]:
    labelled = []
    fn = C._LabelClustersFn(1)
    for group in _group(x for e in star_edges for x in C._KeyByCentreFn(1).process(e)):
        labelled += [b for _, (_, b) in fn.process(group)]
    return {str(i): str(c) for b in labelled for i, c in zip(b.ids, b.cluster_ids, strict=True)}


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_converge_to_the_oracle_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    edges = rng.integers(0, n, size=(int(rng.integers(1, 2 * n)), 2))
    pairs = [(f"n{a}", f"n{b}") for a, b in edges if a != b]
    rounds, active = _drive(pairs, num_buckets=int(rng.integers(1, 6)))
    assert rounds is not None
    assert _labels_from_stars(e for _, e in active) == connected_components(pairs)


@pytest.mark.parametrize("n", [2, 10, 100, 1000])
def test_chain_needs_logarithmic_rounds(n):
    pairs = [(f"r{i:05d}", f"r{i + 1:05d}") for i in range(n - 1)]
    rounds, active = _drive(pairs, num_buckets=3)
    assert rounds <= 2 * math.ceil(math.log2(n)) + 2
    assert set(_labels_from_stars(e for _, e in active).values()) == {"r00000"}


def test_star_check_separates_finished_stars_from_the_rest():
    pairs = [("a", "b"), ("a", "c"), ("p", "q"), ("q", "r"), ("r", "s")]  # no rounds run: unfinished
    (batch,) = _pair_batches(pairs, 1)
    keyed, _ = _split_outputs(C._PairsToEdgesFn(2).process(batch), C._IDS_TAG)
    nb = [x for _, e in keyed for x in C._NeighborhoodsFn(2).process((0, e))]
    checked = [x for g in _group(nb) for x in C._StarCheckFn(2).process(g)]
    stars, unfinished = _split_outputs(
        [x for g in _group(checked) for x in C._SplitFinishedFn().process(g)], C._UNFINISHED_TAG)
    star_nodes = {str(x) for e in stars for x in (*e.src, *e.dst)}
    left_nodes = {str(x) for e in unfinished for x in (*e.src, *e.dst)}
    # {a, b, c} is a star only if its smallest node in (hash, id) order is the centre.
    order = {x: (int(C._hashes(np.array([x], dtype=object))[0]), x) for x in "abcpqrs"}
    abc_is_star = min("abc", key=order.get) == "a"
    assert star_nodes == (set("abc") if abc_is_star else set())
    assert left_nodes == set("pqrs") | (set() if abc_is_star else set("abc"))
    (finished,) = C._FinishComponentsFn().process((0, unfinished))
    assert _labels_from_stars([*stars, finished]) == connected_components(pairs)


def test_index_nodes_orders_by_hash_then_id_even_on_collisions():
    ids = np.array(["b", "a", "c", "b"], dtype=object)
    node_ids, node_hashes, rank = C._index_nodes(ids, np.array([5, 5, 1, 5], dtype=np.uint64))
    assert list(node_ids) == ["c", "a", "b"] and list(node_hashes) == [1, 5, 5]
    assert list(rank) == [2, 1, 0, 2]


@pytest.mark.parametrize("kwargs", [{"max_rounds": 0}, {"max_cluster_size": -1}, {"num_buckets": 1.5},
                                    {"max_final_edges": -1}, {"max_rounds": True}])
def test_cluster_pairs_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ClusterPairs(**kwargs)


def test_write_clusters_rejects_bad_arguments():
    with pytest.raises(ValueError):
        WriteClusters(output_dir="", num_shards=1)
    with pytest.raises(ValueError):
        WriteClusters(output_dir="x", num_shards=0)
