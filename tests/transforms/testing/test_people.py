"""Tests of the synthetic person generator (transforms/testing/people.py)."""

from __future__ import annotations

import collections
import json
import math
import pathlib
import re

import pandas as pd
import pytest

from transforms.testing import people

_DATE_FORMS = (r"\d{1,2}/\d{1,2}/\d{4}", r"\d{4}-\d{2}-\d{2}", r"\d{2} [A-Z][a-z]{2} \d{4}")
_PUNCT = re.compile(r"[\s'.,-]")


def _entities(n: int, seed: int = 7) -> list[dict]:
    return [dict(zip(people.FIELDS, row, strict=True)) for row in people.make_entities(n, seed=seed)]


def test_link_corpora_are_deterministic_for_a_seed():
    first = people.make_link_corpora(150, seed=3)
    assert people.make_link_corpora(150, seed=3) == first
    assert people.make_link_corpora(150, seed=4) != first


def test_link_corpora_ids_and_truth():
    a, b, links = people.make_link_corpora(400, overlap=0.5, seed=1)
    a_ids, b_ids = [r["rec_id"] for r in a], [r["rec_id"] for r in b]
    assert len(a) == len(b) == 400
    assert len(set(a_ids)) == 400 and len(set(b_ids)) == 400
    assert all(re.fullmatch(r"a-\d{6}", i) for i in a_ids)
    assert all(re.fullmatch(r"b-\d{6}", i) for i in b_ids)
    assert a_ids == sorted(a_ids) and b_ids == sorted(b_ids)
    assert len(links) == 200
    assert {x for x, _ in links} <= set(a_ids) and {y for _, y in links} <= set(b_ids)
    assert len({x for x, _ in links}) == 200 and len({y for _, y in links}) == 200  # one-to-one
    # Ids are shuffled: the numbers of linked records do not line up.
    assert sum(x[2:] == y[2:] for x, y in links) < 10
    assert set(a[0]) == set(people.FIELDS[:-1])


def test_linked_records_mostly_agree_and_unlinked_do_not():
    a, b, links = people.make_link_corpora(300, seed=2)
    by_a, by_b = {r["rec_id"]: r for r in a}, {r["rec_id"]: r for r in b}

    def agree(x, y):
        return sum(x[f] == y[f] and x[f] != "" for f in people.MATCH_FIELDS)

    true = [agree(by_a[x], by_b[y]) for x, y in links]
    false = [agree(by_a[x], by_b[y]) for (x, _), (_, y) in zip(links, links[1:], strict=False)]
    assert sum(true) / len(true) > 5.0
    assert sum(false) / len(false) < 2.0


def test_default_corruption_has_febrl_like_modification_counts():
    _, kinds = people.corrupt_records(_entities(3000), seed=0)
    counts = collections.Counter(len(k) for k in kinds)
    n = len(kinds)
    assert max(counts) <= 5
    assert counts[0] / n < 0.02  # a kind may rarely fail to change anything
    assert sum(counts[c] for c in (1, 2, 3)) / n > 0.85
    mean = sum(c * v for c, v in counts.items()) / n
    assert 1.6 < mean < 2.4


def test_each_kind_occurs_at_its_configured_rate():
    records = _entities(4000)
    corruption = people.Corruption(min_per_record=0, max_per_record=len(people.KINDS))
    _, kinds = people.corrupt_records(records, seed=5, corruption=corruption)
    for kind in people.KINDS:
        # Records the kind can apply to: those it changes when it is the only kind, with certainty.
        _, alone = people.corrupt_records(records, seed=6, corruption=people.Corruption.only(kind))
        eligible = [i for i, k in enumerate(alone) if k]
        assert len(eligible) > 1000, kind
        rate = sum(kind in kinds[i] for i in eligible) / len(eligible)
        p = getattr(corruption, kind)
        sigma = math.sqrt(p * (1 - p) / len(eligible))
        # Kinds applied earlier may leave nothing for a later one to change: allow a small shortfall.
        assert p - 4 * sigma - 0.02 <= rate <= p + 4 * sigma, (kind, rate, p)


@pytest.mark.parametrize("kind", people.KINDS)
def test_each_kind_changes_records_as_documented(kind):
    records = _entities(300, seed=11)
    out, kinds = people.corrupt_records(records, seed=1, corruption=people.Corruption.only(kind))
    changed = 0
    for before, after, applied in zip(records, out, kinds, strict=True):
        if not applied:
            assert after == before
            continue
        assert applied == (kind,)
        diff = [f for f in people.FIELDS if before[f] != after[f]]
        assert diff, (kind, before)
        changed += 1
        v0, v1 = before[diff[0]], after[diff[0]]
        if kind == "date_format":
            assert diff == ["date_of_birth"]
            assert any(re.fullmatch(form, v1) for form in _DATE_FORMS), v1
        elif kind == "nickname":
            assert diff == ["given_name"] and v1.isalpha() and v1 != v0
        elif kind == "name_swap":
            assert (after["given_name"], after["surname"]) == (before["surname"], before["given_name"])
        elif kind == "missing":
            assert len(diff) == 1 and v1 == ""
        elif kind == "keyboard_typo":
            assert len(diff) == 1 and len(v1) == len(v0)
            assert sum(x != y for x, y in zip(v0, v1, strict=True)) == 1
        elif kind == "insert_char":
            assert len(diff) == 1 and len(v1) == len(v0) + 1
        elif kind == "delete_char":
            assert len(diff) == 1 and len(v1) == len(v0) - 1
        elif kind == "transpose_chars":
            assert len(diff) == 1 and sorted(v0.lower()) == sorted(v1.lower())
        elif kind == "digit_transpose":
            assert diff[0] in ("postcode", "street_number") and sorted(v0) == sorted(v1)
        elif kind == "formatting":
            assert len(diff) == 1
            assert _PUNCT.sub("", v0.lower()) == _PUNCT.sub("", v1.lower()), (v0, v1)
        elif kind == "abbreviation":
            assert diff in (["address_1"], ["state"])
            if diff == ["address_1"]:
                assert v1.rstrip(".").split()[-1] in {"St", "Rd", "Ave", "Dr", "Pl", "Ct", "Cres", "Cl",
                                                      "Pde", "Ln", "Tce", "Cct", "Hwy", "Gr", "Bvd",
                                                      "Esp", "Sq", "Wy"}
        elif kind == "phonetic":
            assert diff[0] in ("given_name", "surname") and len(diff) == 1
        elif kind == "moved":
            assert set(diff) <= {"street_number", "address_1", "suburb", "postcode", "state"}
        elif kind == "ocr":
            assert len(diff) == 1 and abs(len(v1) - len(v0)) <= 1
    assert changed > 100


def test_corruption_rejects_bad_settings():
    with pytest.raises(ValueError, match="typo"):
        people.Corruption(keyboard_typo=1.5)
    with pytest.raises(ValueError, match="min_per_record"):
        people.Corruption(min_per_record=3, max_per_record=2)
    with pytest.raises(ValueError, match="unknown"):
        people.Corruption.only("smudge")


def test_common_names_collide_and_households_share_addresses():
    records = _entities(5000)
    surnames = collections.Counter(r["surname"] for r in records)
    assert surnames.most_common(1)[0][1] > 60  # Zipf head: the commonest surname is frequent
    address = collections.Counter((r["surname"], r["street_number"], r["address_1"], r["suburb"])
                                  for r in records if r["address_1"] and r["street_number"])
    shared = sum(v for v in address.values() if v > 1)
    assert 0.25 < shared / len(records) < 0.6


def test_dedup_cluster_sizes_are_bounded_and_skewed():
    records, pairs = people.make_dedup_corpus(1000, seed=0)
    sizes = collections.Counter(collections.Counter(r["entity_id"] for r in records).values())
    assert set(sizes) <= set(range(1, 7))
    assert (sizes[1] + sizes[2]) / 1000 > 0.65
    assert sizes[1] > sizes[2] > sizes[3] > sizes[5]
    records2, _ = people.make_dedup_corpus(200, seed=0, min_size=2, max_size=3)
    sizes2 = collections.Counter(collections.Counter(r["entity_id"] for r in records2).values())
    assert set(sizes2) <= {2, 3} and sum(sizes2.values()) == 200


def test_dedup_truth_is_all_within_cluster_pairs():
    records, pairs = people.make_dedup_corpus(300, seed=9)
    ids = [r["rec_id"] for r in records]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    clusters = collections.defaultdict(list)
    for r in records:
        clusters[r["entity_id"]].append(r["rec_id"])
    expected = sorted((x, y) for g in clusters.values() for x in g for y in g if x < y)
    assert pairs == expected
    assert all(x < y for x, y in pairs)
    assert people.make_dedup_corpus(300, seed=9) == (records, pairs)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_write_records_round_trips(tmp_path, fmt):
    a, _, links = people.make_link_corpora(40, seed=0)
    a[0]["postcode"] = "0800"  # leading zeros survive as text
    path = tmp_path / f"a.{fmt}"
    people.write_records(a, str(path), fmt)
    if fmt == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif fmt == "jsonl":
        frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    else:
        frame = pd.read_parquet(path)
    assert frame.to_dict("records") == a
    truth = tmp_path / "true_pairs.csv"
    people.write_truth(links, str(truth))
    assert truth.read_text().splitlines()[0] == "query_id,candidate_id"
    assert list(pd.read_csv(truth, dtype=str).itertuples(index=False, name=None)) == links


def test_cli_writes_corpora_and_truth(tmp_path, capsys):
    assert people.main(["--mode", "link", "--entities", "30", "--out", str(tmp_path / "l"),
                        "--seed", "0", "--overlap", "0.8"]) == 0
    assert {p.name for p in (tmp_path / "l").iterdir()} == {"a.csv", "b.csv", "true_pairs.csv"}
    assert people.main(["--mode", "dedup", "--entities", "30", "--out", str(tmp_path / "d"),
                        "--format", "jsonl"]) == 0
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"people.jsonl", "true_pairs.csv"}
    assert "true pairs" in capsys.readouterr().out


def test_committed_sample_matches_the_generator():
    root = pathlib.Path(__file__).resolve().parents[2] / "testdata" / "people"
    a, b, links = people.make_link_corpora(500, overlap=0.8, seed=0)
    records, pairs = people.make_dedup_corpus(300, seed=0)
    expected = {"link/a.csv": a, "link/b.csv": b, "dedup/people.csv": records}
    for name, recs in expected.items():
        frame = pd.read_csv(root / name, dtype=str, keep_default_na=False)
        assert frame.to_dict("records") == recs, f"{name} is stale: regenerate it (see its README)"
    for name, truth in (("link/true_pairs.csv", links), ("dedup/true_pairs.csv", pairs)):
        frame = pd.read_csv(root / name, dtype=str)
        assert list(frame.itertuples(index=False, name=None)) == truth, name


# ---------------------------------------------------------------------------------------------------
# The FEBRL preset.

_FEBRL_OPS = set(people.FEBRL_MODIFICATIONS)


def _febrl_entities(n: int, seed: int = 7) -> list[dict]:
    rows = people.make_entities(n, seed=seed, soc_sec_id=True, household_rate=0.0)
    return [dict(zip(people.FIELDS, row, strict=True)) for row in rows]


def _febrl_label(label: str) -> tuple[str, list[str]]:
    op, _, fields = label.partition(":")
    return op, fields.split("+")


@pytest.mark.parametrize("dataset", [4, 3])
def test_febrl_preset_has_no_moves_nicknames_swaps_or_date_formats(dataset):
    records = _febrl_entities(3000)
    out, kinds = people.corrupt_records(records, seed=0, corruption=people.Corruption.febrl(dataset))
    address = ("street_number", "address_1", "suburb", "postcode", "state")
    nicknames = moved = 0
    for before, after, labels in zip(records, out, kinds, strict=True):
        assert labels and {_febrl_label(k)[0] for k in labels} <= _FEBRL_OPS - {"name_swap"}, labels
        assert re.fullmatch(r"\d{8}|", after["date_of_birth"]), after["date_of_birth"]
        if before["given_name"] != before["surname"]:  # "Lawrence Lawrence" swaps into itself
            assert not (after["given_name"] == before["surname"] != ""
                        and after["surname"] == before["given_name"] != "")
        for f in people.FIELDS:  # no formatting noise: no case flips, no padding of unchanged text
            assert not (after[f] != before[f] and after[f].lower() == before[f].lower())
            assert after[f].strip() != before[f] or after[f] == before[f]
        # A typo can make a nickname (Peter -> Pete) and independent edits can hit every address
        # field, but neither is a kind of its own: both stay rare (the default preset: 25 %, 5 %).
        nicknames += after["given_name"] in people._NICKNAMES.get(before["given_name"], ())
        moved += all(before[f] != after[f] for f in address)
    assert nicknames / len(records) < 0.005 and moved / len(records) < 0.002


@pytest.mark.parametrize(("dataset", "per_field", "mean_range"), [(4, 2, (2.5, 3.0)), (3, 4, (1.7, 2.1))])
def test_febrl_preset_bounds_modifications_per_record_and_field(dataset, per_field, mean_range):
    corruption = people.Corruption.febrl(dataset)
    assert corruption.max_per_field == per_field and corruption.max_per_record == 6
    records = _febrl_entities(4000, seed=3)
    out, kinds = people.corrupt_records(records, seed=1, corruption=corruption)
    counts = collections.Counter(len(k) for k in kinds)
    assert min(counts) >= 1 and max(counts) <= corruption.max_per_record
    mean = sum(c * v for c, v in counts.items()) / len(kinds)
    assert mean_range[0] < mean < mean_range[1], mean
    for before, after, labels in zip(records, out, kinds, strict=True):
        per = collections.Counter(f for k in labels for f in _febrl_label(k)[1])
        assert max(per.values()) <= per_field, labels
        changed = {f for f in people.FIELDS if before[f] != after[f]}
        assert changed and changed <= set(per), (labels, changed)
    if dataset == 4:  # FEBRL4: mostly 2-3 changes, a fifth with a single one, rarely 5-6
        assert 0.14 < counts[1] / len(kinds) < 0.25
        assert (counts[5] + counts[6]) / len(kinds) < 0.16


def test_febrl_modifications_change_records_as_documented():
    records = _febrl_entities(3000, seed=5)
    one = people.FebrlCorruption(per_record=(1.0,))  # exactly one modification per record
    out, kinds = people.corrupt_records(records, seed=2, corruption=one)
    seen = collections.Counter()
    for before, after, labels in zip(records, out, kinds, strict=True):
        (label,) = labels
        op, (field,) = _febrl_label(label)
        seen[op] += 1
        diff = [f for f in people.FIELDS if before[f] != after[f]]
        assert diff == [field], (label, diff)
        v0, v1 = before[field], after[field]
        if op == "insert_char":
            assert len(v1) == len(v0) + 1
        elif op == "delete_char":
            assert len(v1) == len(v0) - 1
        elif op == "substitute_char":
            assert len(v1) == len(v0) and sum(x != y for x, y in zip(v0, v1, strict=True)) == 1
        elif op == "transpose_chars":
            assert sorted(v0.lower()) == sorted(v1.lower())
        elif op == "missing":
            assert v0 and v1 == ""
        elif op == "new_value":
            assert v0 == "" and v1
        elif op == "split_word":
            assert v1.replace(" ", "") == v0.replace(" ", "") and v1.count(" ") == v0.count(" ") + 1
        elif op == "merge_words":
            assert v1 == v0.replace(" ", "", 1) or v1.count(" ") == v0.count(" ") - 1
        elif op == "word_swap":
            assert sorted(v1.split(" ")) == sorted(v0.split(" "))
        elif op == "phonetic":
            assert field in ("given_name", "surname", "suburb")
        if field in ("street_number", "postcode", "date_of_birth", "soc_sec_id") and v1:
            assert v1.isdigit(), (label, v1)
    assert {"substitute_char", "transpose_chars", "insert_char", "delete_char", "value_swap",
            "missing", "phonetic", "split_word"} <= set(seen)


def test_febrl_name_swap_is_off_by_default_and_optional():
    records = _febrl_entities(2000, seed=9)
    _, kinds = people.corrupt_records(records, seed=0, corruption=people.Corruption.febrl(4))
    assert not any(k.startswith("name_swap") for ks in kinds for k in ks)
    febrl = people.Corruption.febrl(4, name_swap=0.05)
    out, kinds = people.corrupt_records(records, seed=0, corruption=febrl)
    swapped = [i for i, ks in enumerate(kinds) if "name_swap:given_name+surname" in ks]
    assert 0.03 < len(swapped) / len(records) < 0.07
    for i in swapped:
        assert (out[i]["given_name"], out[i]["surname"]) != (records[i]["given_name"], records[i]["surname"])
        assert kinds[i][0].startswith("name_swap")  # first, and worth two of the record's modifications
        assert len(kinds[i]) + 1 <= 6


def test_febrl_corpora_are_deterministic_for_a_seed():
    kwargs = {"corruption": people.Corruption.febrl(4), "household_rate": 0.0, "soc_sec_id": True}
    first = people.make_link_corpora(300, seed=3, **kwargs)
    assert people.make_link_corpora(300, seed=3, **kwargs) == first
    assert people.make_link_corpora(300, seed=4, **kwargs) != first
    dedup = {"corruption": people.FEBRL3_CORRUPTION, "cluster_weights": people.FEBRL3_CLUSTER_SIZES,
             "household_rate": 0.0}
    assert people.make_dedup_corpus(200, seed=1, **dedup) == people.make_dedup_corpus(200, seed=1, **dedup)
    records = _febrl_entities(200)
    assert (people.corrupt_records(records, seed=5, corruption=people.FEBRL4_CORRUPTION)
            == people.corrupt_records(records, seed=5, corruption=people.FEBRL4_CORRUPTION))


def test_febrl4_like_link_data_has_clean_originals_and_one_changed_duplicate_each():
    a, b, links = people.make_link_corpora(2000, seed=0, corruption=people.Corruption.febrl(4),
                                           household_rate=0.0, soc_sec_id=True)
    assert len(a) == len(b) == len(links) == 2000
    assert set(a[0]) == set(people.FIELDS)
    by_a, by_b = {r["rec_id"]: r for r in a}, {r["rec_id"]: r for r in b}
    changed = [sum(by_a[x][f] != by_b[y][f] for f in people.FIELDS[1:]) for x, y in links]
    assert min(changed) >= 1 and max(changed) <= 6
    assert 2.0 < sum(changed) / len(changed) < 2.8
    # Clean originals: the A side has no FEBRL damage (no split words, all dates 8 digits or empty).
    assert all(re.fullmatch(r"\d{8}|", r["date_of_birth"]) and re.fullmatch(r"\d{7}", r["soc_sec_id"])
               for r in a)
    assert sum(by_a[x]["soc_sec_id"] != by_b[y]["soc_sec_id"] for x, y in links) / len(links) < 0.25


def test_febrl3_like_dedup_data_has_entities_of_1_to_6_records():
    records, pairs = people.make_dedup_corpus(2000, seed=0, corruption=people.Corruption.febrl(3),
                                              cluster_weights=people.FEBRL3_CLUSTER_SIZES,
                                              household_rate=0.0, soc_sec_id=True)
    sizes = collections.Counter(collections.Counter(r["entity_id"] for r in records).values())
    assert set(sizes) <= set(range(1, 7)) and sum(sizes.values()) == 2000
    assert 4800 < len(records) < 5200  # FEBRL3: 5,000 records of 2,000 people
    assert 6200 < len(pairs) < 7200  # FEBRL3's README sizes give 6,681 pairs
    assert sizes[1] > sizes[2] > sizes[3] and sizes[6] > 100  # a long, flat tail like FEBRL3's
    assert len({r["rec_id"] for r in records}) == len(records)
    assert all(r["soc_sec_id"] for r in records if r["entity_id"])  # present (it is never blanked)
    with pytest.raises(ValueError, match="cluster_weights"):
        people.make_dedup_corpus(10, cluster_weights=(1, 2, 3))


def test_household_rate_zero_removes_shared_addresses():
    def shared(records):
        keys = collections.Counter((r["surname"], r["street_number"], r["address_1"], r["suburb"])
                                   for r in records if r["address_1"] and r["street_number"])
        return sum(v for v in keys.values() if v > 1) / len(records)

    assert shared(_entities(5000)) > 0.25
    assert shared(_febrl_entities(5000)) < 0.02
    with pytest.raises(ValueError, match="household_rate"):
        people.make_entities(10, household_rate=1.5)


def test_febrl_corruption_rejects_bad_settings():
    with pytest.raises(ValueError, match="per_record"):
        people.FebrlCorruption(per_record=())
    with pytest.raises(ValueError, match="max_per_field"):
        people.FebrlCorruption(max_per_field=0)
    with pytest.raises(ValueError, match="name_swap"):
        people.FebrlCorruption(name_swap=2.0)
    with pytest.raises(ValueError, match="dataset"):
        people.Corruption.febrl(2)


def test_cli_writes_febrl_corpora(tmp_path):
    assert people.main(["--mode", "link", "--entities", "40", "--out", str(tmp_path / "l"),
                        "--corruption", "febrl", "--soc_sec_id"]) == 0
    a = pd.read_csv(tmp_path / "l" / "a.csv", dtype=str, keep_default_na=False)
    assert "soc_sec_id" in a.columns and len(a) == 40
    assert people.main(["--mode", "dedup", "--entities", "40", "--out", str(tmp_path / "d"),
                        "--corruption", "febrl", "--cluster_weights", "febrl3"]) == 0
    with pytest.raises(SystemExit):
        people.main(["--mode", "link", "--entities", "5", "--out", str(tmp_path / "x"),
                     "--corruption", "febrl", "--corruption_scale", "2"])
