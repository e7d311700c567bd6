"""The default embedder's dims follow the number of text fields (wider blocks for free text)."""

from __future__ import annotations

import pytest

from transforms.features.default_embedder import build_default_model, default_dims, embedding_dim


@pytest.mark.parametrize("fields, expected", [(1, (64, 128)), (3, (64, 128)), (4, (48, 96)),
                                              (6, (32, 64)), (8, (16, 64)), (12, (16, 64))])
def test_field_blocks_share_about_192_dims(fields, expected):
    assert default_dims(fields) == expected


def test_person_records_keep_their_192_dims_and_free_text_gets_wider_blocks():
    people = tuple(f"f{i}" for i in range(8))
    assert embedding_dim(people, ()) == 8 * 16 + 64
    orgs = ("name", "city", "country")
    assert embedding_dim(orgs, ()) == 3 * 64 + 128
    assert build_default_model(orgs, ("amount",)).dim == embedding_dim(orgs, ("amount",)) == 320 + 16
    # Explicit dims still win.
    assert build_default_model(orgs, field_dim=16, pooled_dim=64).dim == 3 * 16 + 64


def test_the_trainable_tower_reads_the_default_layout_for_any_field_count():
    from transforms.learn.train import _block_sizes

    for n in (1, 3, 5, 8):
        fields = tuple(f"f{i}" for i in range(n))
        assert sum(size for _, size in _block_sizes(fields, ("x",))) == embedding_dim(fields, ("x",))
