"""Tests of the synthetic organisation generator (transforms/testing/organisations.py)."""

from __future__ import annotations

import collections
import re

import pandas as pd
import pytest

from transforms.testing import organisations as orgs


def _records_by_entity(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        groups[r["entity_id"]].append(r)
    return groups


def test_corpora_are_deterministic_for_a_seed():
    first = orgs.make_dedup_corpus(200, seed=3)
    assert orgs.make_dedup_corpus(200, seed=3) == first
    assert orgs.make_dedup_corpus(200, seed=4) != first
    link = orgs.make_link_corpora(150, overlap=0.7, seed=1)
    assert orgs.make_link_corpora(150, overlap=0.7, seed=1) == link
    assert orgs.make_link_corpora(150, overlap=0.7, seed=2) != link
    assert orgs.make_organisations(100, seed=5) == orgs.make_organisations(100, seed=5)


def test_dedup_truth_is_all_within_entity_pairs_and_sizes_are_bounded():
    records, pairs = orgs.make_dedup_corpus(1000, seed=0)
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(re.fullmatch(r"r-\d{6}", i) for i in ids)
    assert set(records[0]) == {"id", "name", "city", "country", "entity_id"}
    groups = _records_by_entity(records)
    assert len(groups) == 1000
    expected = sorted((x["id"], y["id"]) for g in groups.values() for x in g for y in g
                      if x["id"] < y["id"])
    assert pairs == expected
    sizes = collections.Counter(len(g) for g in groups.values())
    assert set(sizes) <= set(range(1, 7))
    assert sizes[1] > sizes[2] > sizes[3] > sizes[5]
    assert 1.7 < len(records) / 1000 < 2.1  # about 1.9 records per organisation
    # Ids say nothing about the entity: members of one cluster are spread over the id range.
    spans = [int(g[-1]["id"][2:]) - int(g[0]["id"][2:]) for g in groups.values() if len(g) > 2]
    assert sum(spans) / len(spans) > 200
    records2, _ = orgs.make_dedup_corpus(100, seed=0, min_size=2, max_size=3, cluster_decay=1.0)
    sizes2 = collections.Counter(len(g) for g in _records_by_entity(records2).values())
    assert set(sizes2) == {2, 3} and sum(sizes2.values()) == 100


def test_link_corpora_sizes_ids_and_one_to_one_truth():
    a, b, links = orgs.make_link_corpora(400, overlap=0.5, seed=1)
    assert len(a) == len(b) == 400 and len(links) == 200
    a_ids, b_ids = [r["id"] for r in a], [r["id"] for r in b]
    assert all(re.fullmatch(r"a-\d{6}", i) for i in a_ids) and a_ids == sorted(a_ids)
    assert all(re.fullmatch(r"b-\d{6}", i) for i in b_ids) and b_ids == sorted(b_ids)
    assert len({x for x, _ in links}) == 200 and len({y for _, y in links}) == 200
    assert {x for x, _ in links} <= set(a_ids) and {y for _, y in links} <= set(b_ids)
    assert set(a[0]) == {"id", "name", "city", "country"}
    _, _, full = orgs.make_link_corpora(100, seed=0)
    assert len(full) == 100  # overlap 1.0: every record has exactly one partner


def test_linked_records_share_words_and_unlinked_do_not():
    a, b, links = orgs.make_link_corpora(600, seed=2)
    by_a, by_b = {r["id"]: r for r in a}, {r["id"]: r for r in b}

    def jaccard(x: str, y: str) -> float:
        wx, wy = set(re.findall(r"\w+", x.lower())), set(re.findall(r"\w+", y.lower()))
        return len(wx & wy) / max(len(wx | wy), 1)

    true = [jaccard(by_a[x]["name"], by_b[y]["name"]) for x, y in links]
    false = [jaccard(by_a[x]["name"], by_b[y]["name"])
             for (x, _), (_, y) in zip(links, links[1:], strict=False)]
    assert sum(true) / len(true) > 0.55
    assert sum(false) / len(false) < 0.2


def test_duplicates_are_corrupted_with_every_kind():
    organisations = orgs.make_organisations(3000, seed=1)
    records, kinds = orgs.corrupt(organisations, seed=2)
    counts = collections.Counter(len(k) for k in kinds)
    assert counts[0] / len(kinds) < 0.03  # a drawn kind may rarely change nothing
    assert max(counts) <= 5
    mean = sum(c * v for c, v in counts.items()) / len(kinds)
    assert 1.8 < mean < 3.2
    seen = collections.Counter(k for ks in kinds for k in ks)
    assert set(seen) == set(orgs.KINDS)
    changed = sum(r["name"] != o.text() or r["city"] != o.city for r, o in zip(records, organisations,
                                                                                strict=True))
    assert changed / len(records) > 0.95


@pytest.mark.parametrize("kind", orgs.KINDS)
def test_each_kind_changes_records_as_documented(kind):
    organisations = orgs.make_organisations(1500, seed=4)
    records, kinds = orgs.corrupt(organisations, seed=5, corruption=orgs.Corruption.only(kind))
    hits = [(o, r) for o, r, k in zip(organisations, records, kinds, strict=True) if k]
    assert len(hits) > 100, kind
    assert all(k in ((), (kind,)) for k in kinds)
    for org, rec in hits:
        before, after = org.text(), rec["name"]
        words_before, words_after = before.split(), after.split()
        if kind == "case":
            assert after.lower() == before.lower() and after != before
        elif kind == "ampersand":
            assert ("&" in before) != ("&" in after) or ("and" in before.split()) != ("and" in after.split())
        elif kind == "reorder":  # same words in another order; a company gains its location first
            assert after != before
            if org.kind == "affiliation":  # "Department of Physics" -> "Physics Department"
                def words(text: str) -> list[str]:
                    return sorted(w for w in re.findall(r"\w+", text) if w not in ("of", "for", "in"))
                assert words(after) == words(before)
            else:
                assert after.endswith(before)
        elif kind == "drop_part":
            assert len(after) < len(before)
        elif kind == "extra_part":
            assert len(after) > len(before)
        elif kind == "typo":
            assert (after != before) or (rec["city"] != org.city)
            if after != before:
                assert abs(len(after) - len(before)) <= 1
        elif kind == "legal_suffix":
            assert org.kind == "company" and after != before
        elif kind == "abbreviation":
            assert words_after != words_before
        elif kind == "location":
            assert (after, rec["city"], rec["country"]) != (before, org.city, orgs._COUNTRIES[org.country][0])
        elif kind == "punctuation":
            assert re.sub(r"[^\w]", "", after) == re.sub(r"[^\w]", "", before) and after != before


def test_reorder_and_abbreviation_give_the_documented_forms():
    organisations = [o for o in orgs.make_organisations(2000, seed=6) if o.kind == "affiliation"]
    records, _ = orgs.corrupt(organisations, seed=7, corruption=orgs.Corruption.only("reorder"))
    univ_first = sum(r["name"].startswith(o.parts[1][1][0]) for o, r in zip(organisations, records,
                                                                            strict=True))
    assert univ_first / len(records) > 0.3
    records, _ = orgs.corrupt(organisations, seed=8, corruption=orgs.Corruption.only("abbreviation"))
    text = " ".join(r["name"] for r in records)
    for short in ("Univ.", "Dept.", "Inst."):
        assert short in text


def test_hard_negatives_share_most_of_their_text():
    organisations = orgs.make_organisations(3000, seed=0)
    affiliations = [o for o in organisations if o.kind == "affiliation"]
    companies = [o for o in organisations if o.kind == "company"]
    assert 0.4 < len(affiliations) / len(organisations) < 0.6
    # Many units per university: most affiliations share their university with another one.
    per_univ = collections.Counter(o.parts[1][1] for o in affiliations)
    assert sum(n for n in per_univ.values() if n > 1) / len(affiliations) > 0.8
    # Company families: a core name shared by several distinct companies.
    per_core = collections.Counter(o.core for o in companies)
    assert sum(n for n in per_core.values() if n > 1) / len(companies) > 0.2
    texts = [o.text().lower() for o in organisations]
    assert len(set(texts)) == len(texts)


def test_name_only_corpora_and_bad_settings():
    records, _ = orgs.make_dedup_corpus(50, seed=0, location_fields=False)
    assert set(records[0]) == {"id", "name", "entity_id"}
    with pytest.raises(ValueError):
        orgs.make_dedup_corpus(10, min_size=3, max_size=2)
    with pytest.raises(ValueError):
        orgs.make_link_corpora(10, overlap=1.5)
    with pytest.raises(ValueError):
        orgs.Corruption(typo=2.0)
    with pytest.raises(ValueError):
        orgs.Corruption.only("nickname")


def test_cli_writes_corpora_and_truth(tmp_path, capsys):
    assert orgs.main(["--mode", "link", "--entities", "40", "--out", str(tmp_path / "l"),
                      "--seed", "0", "--overlap", "0.8"]) == 0
    assert {p.name for p in (tmp_path / "l").iterdir()} == {"a.csv", "b.csv", "true_pairs.csv"}
    truth = pd.read_csv(tmp_path / "l" / "true_pairs.csv", dtype=str)
    assert list(truth.columns) == ["query_id", "candidate_id"] and len(truth) == 32
    b = pd.read_csv(tmp_path / "l" / "b.csv", dtype=str, keep_default_na=False)
    assert set(truth["candidate_id"]) <= set(b["id"])
    assert orgs.main(["--mode", "dedup", "--entities", "30", "--out", str(tmp_path / "d"),
                      "--format", "parquet", "--name_only"]) == 0
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"organisations.parquet", "true_pairs.csv"}
    frame = pd.read_parquet(tmp_path / "d" / "organisations.parquet")
    assert list(frame.columns) == ["id", "name", "entity_id"]
    assert "true pairs" in capsys.readouterr().out
