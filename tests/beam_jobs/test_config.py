"""Configuration errors fail before any pipeline exists, naming the flag."""

from __future__ import annotations

import pytest

from beam_jobs.config import EMBEDDED_TARGET_RECALL, ConfigError, config_from_flags, scann_params_for


def _flags(**kw):
    base = {"queries": "q/*.parquet", "candidates": "c/*.parquet", "output": "out"}
    base.update(kw)
    return base


def test_link_and_dedup_modes():
    assert config_from_flags(_flags()).mode == "link"
    cfg = config_from_flags({"input": "x/*.jsonl", "output": "o/"})
    assert cfg.mode == "dedup" and cfg.output == "o"


@pytest.mark.parametrize("flags, named", [
    ({"output": "o"}, "--input"),
    ({"queries": "q", "output": "o"}, "--candidates"),
    ({"candidates": "c", "output": "o"}, "--queries"),
    ({"input": "i", "queries": "q", "candidates": "c", "output": "o"}, "--input"),
    ({"input": "i"}, "--output"),
    (_flags(top_k="0"), "--top_k"),
    (_flags(top_k="ten"), "--top_k"),
    (_flags(distance="manhattan"), "--distance"),
    (_flags(max_bad_record_ratio="1.5"), "--max_bad_record_ratio"),
    (_flags(max_distance="nan"), "--max_distance"),
    (_flags(index="faiss"), "--index"),
    (_flags(output_format="xml"), "--output_format"),
    (_flags(model_dir="m/"), "--model_dir"),
    (_flags(text_fields="a,b", numeric_fields="b"), "--text_fields"),
    (_flags(text_fields="id,name"), "--id_field"),
    (_flags(scann_num_leaves="10", scann_leaves_to_search="20"), "--scann_leaves_to_search"),
    (_flags(spill_min_mb="-1"), "--spill_min_mb"),
])
def test_config_errors_name_the_flag(flags, named):
    with pytest.raises(ConfigError, match=named):
        config_from_flags(flags)


def test_strings_from_templates_are_parsed():
    cfg = config_from_flags(_flags(top_k="5", max_distance="0.25", num_shards="4",
                                   text_fields="given_name, surname", distance="DOT"))
    assert (cfg.top_k, cfg.max_distance, cfg.num_shards, cfg.distance) == (5, 0.25, 4, "dot")
    assert cfg.text_fields == ("given_name", "surname") and cfg.embeds


def test_scann_params_follow_measured_operating_points():
    cfg = config_from_flags(_flags())
    big = scann_params_for(cfg, 1_000_000)
    assert big["num_leaves"] == 2000 and big["training_sample_size"] == 250_000
    small = scann_params_for(cfg, 100_000)
    assert 600 <= small["num_leaves"] <= 650
    assert small["num_leaves_to_search"] <= small["num_leaves"]
    assert scann_params_for(cfg, 50)["num_leaves"] <= 50
    explicit = scann_params_for(config_from_flags(_flags(scann_num_leaves="100",
                                                         scann_leaves_to_search="7")), 10_000)
    assert (explicit["num_leaves"], explicit["num_leaves_to_search"]) == (100, 7)


def test_calibration_file_sets_max_distance(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"max_distance": 0.31, "target_precision": 0.99}')
    assert config_from_flags(_flags(calibration=str(path))).max_distance == 0.31
    with pytest.raises(ConfigError, match="--max_distance or --calibration"):
        config_from_flags(_flags(calibration=str(path), max_distance="0.2"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="--calibration"):
        config_from_flags(_flags(calibration=str(tmp_path / "bad.json")))


def test_probability_calibration_sets_min_probability_and_the_refitted_model(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"min_probability": 0.93, "threshold": "probability"}')
    embedded = _flags(text_fields="name,city")
    cfg = config_from_flags({**embedded, "calibration": str(path)})
    assert (cfg.min_probability, cfg.scorer, cfg.max_distance) == (0.93, "fields", None)
    with pytest.raises(ConfigError, match="--min_probability or --calibration"):
        config_from_flags({**embedded, "calibration": str(path), "min_probability": "0.5"})
    path.write_text('{"min_probability": 0.93, "scoring_model": "m.json"}')
    cfg = config_from_flags({**embedded, "calibration": str(path)})
    # A relative name is beside the calibration file, wherever the job is launched from.
    assert (cfg.scorer, cfg.scoring_model) == ("model", str(tmp_path / "m.json"))
    path.write_text('{"min_probability": 0.93, "scoring_model": "gs://b/m.json"}')
    assert config_from_flags({**embedded, "calibration": str(path)}).scoring_model == "gs://b/m.json"
    path.write_text('{"min_probability": 1.5}')
    with pytest.raises(ConfigError, match="--calibration"):
        config_from_flags({**embedded, "calibration": str(path)})


def test_target_recall_defaults_to_tuning_only_when_records_are_embedded():
    assert config_from_flags(_flags()).target_recall is None  # precomputed vectors
    embedded = _flags(text_fields="name,city")
    assert config_from_flags(embedded).target_recall == EMBEDDED_TARGET_RECALL
    assert config_from_flags({**embedded, "target_recall": "none"}).target_recall is None
    assert config_from_flags({**embedded, "target_recall": "0.9"}).target_recall == 0.9
    # nothing to tune: no error, no tuning
    assert config_from_flags({**embedded, "index": "exact"}).target_recall is None
    assert config_from_flags({**embedded, "audit_sample": "0"}).target_recall is None
    with pytest.raises(ConfigError, match="--target_recall"):
        config_from_flags({**embedded, "target_recall": "high"})


def test_scorer_defaults_follow_what_the_job_compares():
    plain = config_from_flags(_flags())
    assert plain.scorer == "none" and plain.min_probability is None
    embedded = _flags(text_fields="name,city")
    cfg = config_from_flags(embedded)
    assert cfg.scorer == "fields" and cfg.min_probability == 0.5
    assert config_from_flags({**embedded, "min_probability": "0.9"}).min_probability == 0.9
    assert config_from_flags({**embedded, "min_probability": "0"}).min_probability is None  # keep all
    assert config_from_flags({**embedded, "scorer": "none"}).scorer == "none"
    assert config_from_flags({**embedded, "scoring_model": "m.json"}).scorer == "model"
    # A kept index has no candidate records to compare: scoring is off unless asked for.
    reuse = {"queries": "q", "index_dir": "idx", "output": "o", "text_fields": "name"}
    assert config_from_flags(reuse).scorer == "none"


@pytest.mark.parametrize("flags, named", [
    (_flags(scorer="fields"), "--scorer"),
    (_flags(scorer="model"), "--scorer"),
    (_flags(text_fields="a", scorer="model"), "--scoring_model"),
    (_flags(text_fields="a", scorer="fields", scoring_model="m.json"), "--scoring_model"),
    (_flags(text_fields="a", min_probability="1.5"), "--min_probability"),
    (_flags(min_probability="0.5"), "--min_probability"),
    ({"queries": "q", "index_dir": "idx", "output": "o", "text_fields": "name", "scorer": "fields"},
     "--scorer"),
])
def test_scorer_configuration_errors_name_the_flag(flags, named):
    with pytest.raises(ConfigError, match=named):
        config_from_flags(flags)


@pytest.mark.parametrize("flags, ok", [
    (_flags(max_distance="-1"), False),  # cosine distance (1 - cos) is in [0, 2]
    (_flags(max_distance="0"), True),
    (_flags(max_distance="2.5"), True),  # keeps every pair: pointless, not impossible
    (_flags(max_distance="-0.5", distance="squared_l2"), False),
    (_flags(max_distance="-3", distance="dot"), True),  # -dot can be negative
    (_flags(max_distance="-3", distance="dot", rescore="wasserstein"), False),
])
def test_max_distance_below_every_possible_distance_is_an_error(flags, ok):
    if ok:
        assert config_from_flags(flags).max_distance == float(flags["max_distance"])
    else:
        with pytest.raises(ConfigError, match="--max_distance .* would drop every pair"):
            config_from_flags(flags)


def test_range_errors_state_the_bound():
    with pytest.raises(ConfigError, match=r"--worker_memory_gb must be a finite number >= 0.01, got '0'"):
        config_from_flags(_flags(worker_memory_gb="0"))
    with pytest.raises(ConfigError, match=r"--max_bad_record_ratio must be a finite number in \[0, 1\]"):
        config_from_flags(_flags(max_bad_record_ratio="1.5"))


@pytest.mark.parametrize("flags, named", [
    (_flags(image_field="photo"), "--image_field needs --model_dir"),
    (_flags(image_field="photo", model_dir="m", text_fields="name"), "--image_field"),
    (_flags(image_field="id", model_dir="m"), "--image_field 'id' is the --id_field"),
    (_flags(image_field="photo", model_dir="m", transform_fn_dir="t"), "--transform_fn_dir"),
    (_flags(text_fields="name", text_pooling="mean"), "--text_pooling is for a --model_dir"),
    (_flags(text_fields="name", text_separator=" | "), "--text_separator is for a --model_dir"),
    (_flags(image_field="photo", model_dir="m", text_pooling="mean"), "--text_pooling"),
    (_flags(text_fields="name", model_dir="m", text_pooling="max"), "--text_pooling must be one of"),
    (_flags(image_field="photo", model_dir="m", scorer="fields"), "--scorer fields compares"),
    (_flags(text_fields="a", model_dir="m", text_pooling="mean", text_separator=";"),
     "--text_separator joins fields"),
])
def test_model_input_flag_errors_name_the_flag(flags, named):
    with pytest.raises(ConfigError, match=named):
        config_from_flags(flags)


def test_an_image_model_embeds_without_a_scorer_and_separators_keep_their_spaces():
    cfg = config_from_flags(_flags(image_field="photo", model_dir="m.keras"))
    assert cfg.embeds and cfg.scorer == "none" and cfg.min_probability is None
    assert not cfg.preprocesses and cfg.target_recall == EMBEDDED_TARGET_RECALL
    cfg = config_from_flags(_flags(text_fields="a,b", model_dir="m", text_separator=" | ",
                                   text_pooling="JOIN"))
    assert cfg.text_separator == " | " and cfg.text_pooling == "join" and cfg.scorer == "fields"
    assert cfg.preprocesses  # until launch reads the model (model_input) it is taken as a feature model
    assert config_from_flags(_flags(text_fields="a", model_dir="m", text_separator="")).text_separator is None
