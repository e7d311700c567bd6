"""--index_dir compatibility: an --append must not mix ScaNN tree-training schemes in one index."""

from __future__ import annotations

import pytest

from beam_jobs.config import TREE_TRAINING, ConfigError, config_from_flags
from beam_jobs.kept_index import check_kept_index
from beam_jobs.kept_index import index_static as _index_static
from transforms.common.schema import ShardIndexInfo


def _cfg(**extra):
    flags = {"queries": "q", "output": "o", "index_dir": "kept", **extra}
    if extra.get("append"):
        flags["candidates"] = "c"
    return config_from_flags(flags)


def _kept(kind: str, **extra) -> dict:
    shard = ShardIndexInfo(shard=0, path="kept/indexes/shard-00000-of-00001", size=10, kind=kind,
                           params={}, build="")
    return {"distance": "cosine", "id_field": "id", "text_fields": [], "numeric_fields": [],
            "shards": [shard], **extra}


def test_the_index_manifest_records_how_trees_are_trained():
    assert _index_static(_cfg())["tree_training"] == TREE_TRAINING == "sampled_kmeans"


def test_append_to_scann_shards_of_the_old_scheme_is_refused_and_plain_reuse_is_not():
    old = _kept("scann")  # written before the key existed: ScaNN's own k-means++
    with pytest.raises(ConfigError, match="--append.*scann_kmeans\\+\\+.*sampled_kmeans"):
        check_kept_index(_cfg(append="true"), old)
    check_kept_index(_cfg(), old)  # searched as it is: each shard keeps its own tree
    check_kept_index(_cfg(append="true"), _kept("scann", tree_training=TREE_TRAINING))
    check_kept_index(_cfg(append="true"), _kept("exact"))  # no trees to mix
