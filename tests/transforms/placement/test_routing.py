"""Partition routing: plans respect shard capacity, routes cover the probed partitions."""

from __future__ import annotations

import numpy as np

from transforms.placement.routing import (
    RoutingPlan,
    nearest_centroids,
    plan_shards,
    route_rows,
    shards_of_candidates,
    train_centroids,
)
from transforms.testing.clustered import make_clustered


def test_plan_bounds_shards_and_splits_giant_partitions():
    sizes = np.array([50, 10, 300, 20, 40, 5])
    cents = np.eye(6, dtype=np.float32)
    plan = plan_shards(cents, sizes, distance="cosine", max_shard_vectors=100)
    loads = np.zeros(plan.num_shards)
    for p, pieces in enumerate(plan.pieces):
        for s in pieces:
            loads[s] += sizes[p] / len(pieces)
    assert loads.max() <= 100
    assert len(plan.pieces[2]) == 3  # 300 vectors -> three pieces of 100
    assert all(len(p) == 1 for i, p in enumerate(plan.pieces) if i != 2)
    assert plan == plan_shards(cents, sizes, distance="cosine", max_shard_vectors=100)


def test_candidates_land_in_their_nearest_partition_and_pieces_split_by_hash():
    vecs, centers = make_clustered(2000, 16, clusters=8, seed=2)
    cents = train_centroids(vecs, 8, distance="cosine", seed=0)
    part = nearest_centroids(vecs, cents, "squared_l2", 1)[:, 0]
    sizes = np.bincount(part, minlength=8)
    plan = plan_shards(cents, sizes, distance="cosine", max_shard_vectors=int(sizes.max()) // 2 + 1)
    ids = np.array([f"r{i}" for i in range(len(vecs))], dtype=object)
    shard = shards_of_candidates(ids, vecs, plan)
    for p in range(8):
        assert set(shard[part == p]) <= set(plan.pieces[p])
    counts = np.bincount(shard, minlength=plan.num_shards)
    assert counts.max() <= int(sizes.max()) // 2 + 1 + 50  # hash split is nearly even


def test_routes_cover_each_rows_probed_partitions():
    vecs, _ = make_clustered(500, 8, clusters=6, seed=4)
    cents = train_centroids(vecs, 6, distance="cosine", seed=0)
    plan = RoutingPlan(cents, "cosine", tuple((p % 3,) for p in range(6)), 3)
    routes = route_rows(vecs, plan, probe=2)
    near = nearest_centroids(vecs, cents, "cosine", 2)
    for row in range(len(vecs)):
        wanted = {plan.pieces[p][0] for p in near[row]}
        got = {s for s, rows in routes.items() if row in set(rows.tolist())}
        assert got == wanted
    hash_plan = RoutingPlan(np.zeros((0, 0), np.float32), "cosine", (), 3, kind="hash")
    assert {s: len(r) for s, r in route_rows(vecs, hash_plan, 2).items()} == {0: 500, 1: 500, 2: 500}


def test_hash_plans_place_by_id_hash_and_one_shard_takes_everything_in_any_plan():
    from transforms.common.sharding import assign_shards

    vecs, _ = make_clustered(300, 8, clusters=3, seed=5)
    ids = np.array([f"r{i}" for i in range(len(vecs))], dtype=object)
    empty = np.zeros((0, 8), dtype=np.float32)
    four = RoutingPlan(empty, "cosine", (), 4, "hash")
    np.testing.assert_array_equal(shards_of_candidates(ids, vecs, four), assign_shards(ids, 4))
    cents = train_centroids(vecs, 3, distance="cosine", seed=0)
    one_shard = (RoutingPlan(empty, "cosine", (), 1, "hash"),
                 RoutingPlan(cents, "cosine", ((0,), (0,), (0,)), 1))
    for plan in one_shard:
        for by in ("id", "content"):
            shard = shards_of_candidates(ids, vecs, plan, by=by)
            assert shard.dtype == np.int64 and shard.tolist() == [0] * len(ids)
