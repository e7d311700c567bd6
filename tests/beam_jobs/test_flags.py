"""The typed flag table (transforms/common/flags.py): help texts state no default of their own, every default
parses under its own spec, and the places that keep a default for library use keep the spec's."""

from __future__ import annotations

import dataclasses
import re

import pytest

from beam_jobs.commands.train import TRAIN_FLAGS, train_parser
from beam_jobs.config import ConfigError, MatchConfig
from transforms.common.flags import DEFAULTS, FLAGS, GROUPS, JOB_FLAGS, TEMPLATE_KINDS, TYPES, Derived, Flag

ALL_SPECS = [*JOB_FLAGS, *TRAIN_FLAGS]
_VALUED = [f for f in ALL_SPECS if not f.derived and f.default not in (None, ())]


@pytest.mark.parametrize("flag", ALL_SPECS, ids=lambda f: f.name)
def test_help_states_no_default_of_its_own(flag):
    # "Default X." is generated from the spec (Flag.default_text); a hand-written one could disagree.
    assert not re.search(r"\bdefaults?\b", flag.help, re.I), f"--{flag.name}: drop the default from help"
    assert not re.search(r"\brequired\b", flag.help, re.I), f"--{flag.name}: set required=True instead"
    assert flag.full_help.count("Default") + flag.full_help.count("Required.") == 1, flag.name


@pytest.mark.parametrize("flag", _VALUED, ids=lambda f: f.name)
def test_every_default_parses_under_its_own_spec(flag):
    assert flag.parse(flag.default) == flag.default
    as_template = (",".join(flag.default) if flag.type == "list"
                   else ("true" if flag.default else "false") if flag.type == "bool" else str(flag.default))
    assert flag.parse(as_template) == flag.default, "a Flex Template passes the default as this string"
    assert flag.parse(None) == flag.parse("") == flag.default
    if flag.values:
        assert flag.format_value(flag.default) in flag.values


@pytest.mark.parametrize("flag", [f for f in _VALUED if f.shown is None], ids=lambda f: f.name)
def test_the_default_the_help_states_is_the_spec_default(flag):
    found = re.fullmatch(r"Default (.+?)" + re.escape(flag.note) + r"\.", flag.default_text)
    assert found, flag.default_text
    stated = found.group(1)
    if flag.type == "str":
        stated = stated.strip("'")
    assert flag.parse(stated) == flag.default


def test_every_job_flag_is_well_formed():
    for flag in JOB_FLAGS:
        assert flag.type in TYPES and flag.template_kind in TEMPLATE_KINDS, flag.name
        assert flag.group in GROUPS, f"--{flag.name}: give it a --help group"
        if flag.derived:
            assert flag.default.what and "Default" not in flag.default.what, flag.name
        if flag.template_kind in ("number", "none_or_number"):
            assert flag.type in ("int", "float"), flag.name
    assert [f.name for f in JOB_FLAGS if f.required] == ["output"]


def test_match_config_defaults_are_the_specs():
    # Fields the config resolves itself: None means 'not given' (pooling, separator) or 'no scorer'.
    resolved = {"text_pooling", "text_separator", "scorer", "min_probability"}
    for field in dataclasses.fields(MatchConfig):
        if field.name not in FLAGS or field.name in resolved or field.default is dataclasses.MISSING:
            continue
        want = DEFAULTS.get(field.name)  # None: unset or derived
        assert field.default == want, field.name


def test_train_shares_the_job_specs():
    parser = train_parser()
    for name in ("queries", "candidates", "input", "text_fields", "numeric_fields", "id_field",
                 "input_format", "transform_fn_dir", "top_k"):
        assert parser.get_default(name) == (None if FLAGS[name].derived else FLAGS[name].default), name
    args = parser.parse_args(["--input", "x", "--truth", "t", "--model_dir", "m", "--text_fields", "a, b",
                              "--input_format", "CSV", "--top_k", "3", "--epochs", "2"])
    assert (args.text_fields, args.input_format, args.top_k, args.epochs) == (("a", "b"), "csv", 3, 2)
    assert (args.id_field, args.learning_rate, args.negatives) == ("id", 0.05, "all")


def test_train_flag_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--input", "x", "--truth", "t", "--model_dir", "m", "--top_k", "0"])
    assert "argument --top_k: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("raw, want", [
    ("10", 10), (10, 10), (10.0, 10), (" 7 ", 7), (None, 10), ("", 10)])
def test_int_values_from_templates_and_python(raw, want):
    assert FLAGS["top_k"].parse(raw) == want


@pytest.mark.parametrize("raw, message", [
    ("ten", "--top_k must be an integer, got 'ten'"),
    ("1.5", "--top_k must be an integer, got '1.5'"),
    (2.5, "--top_k must be an integer, got 2.5"),
    ("0", "--top_k must be >= 1, got 0"),
])
def test_int_errors_name_the_flag(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FLAGS["top_k"].parse(raw)


def test_other_types_parse_strings_and_values():
    assert FLAGS["overwrite"].parse("false") is False and FLAGS["overwrite"].parse("TRUE") is True
    collapse = FLAGS["collapse_duplicates"]
    assert collapse.parse(False) is False and collapse.parse("") is True
    assert FLAGS["distance"].parse(" DOT ") == "dot"
    assert FLAGS["text_fields"].parse("a, b,,c") == ("a", "b", "c")
    assert FLAGS["text_separator"].parse(" | ") == " | " and FLAGS["text_separator"].parse("") == " "
    assert FLAGS["target_recall"].parse("none") is None and FLAGS["target_recall"].parse("1") == 1.0
    assert FLAGS["scann_num_leaves"].parse(None) is None  # derived: the config works it out
    with pytest.raises(ConfigError, match=r"--target_recall must be a finite number in \(0, 1\], got '0'"):
        FLAGS["target_recall"].parse("0")
    with pytest.raises(ConfigError, match="--overwrite must be true or false, got 'maybe'"):
        FLAGS["overwrite"].parse("maybe")
    with pytest.raises(ConfigError, match="--max_distance must be a finite number, got 'nan'"):
        FLAGS["max_distance"].parse("nan")
    with pytest.raises(ConfigError, match="--text_fields lists a field twice"):
        FLAGS["text_fields"].parse("a,a")


def test_help_text_is_generated_from_the_spec():
    assert Flag("x", "int", 3, "Things.", note="; 0 disables").full_help == "Things. Default 3; 0 disables."
    assert Flag("x", "float", None, "Cap.", unset="no limit").full_help == "Cap. Default: no limit."
    assert Flag("x", "int", Derived("2*n"), "Leaves.").full_help == "Leaves. Default: 2*n."
    assert Flag("x", "str", "id", "Field.").full_help == "Field. Default 'id'."
    assert Flag("x", "bool", False, "Do it.").full_help == "Do it. Default false."
    assert FLAGS["output"].full_help.endswith(" Required.")
    with pytest.raises(TypeError):
        Flag("x", "choice", "a", "No choices.")
