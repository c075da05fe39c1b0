"""Config loading and validation: every mistake names its key path and how to fix it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from engine.config import (
    RunConfig,
    apply_overrides,
    field_docs,
    from_dict,
    load_config,
    save_config,
    validate_field,
)
from engine.errors import ConfigError

SAMPLE_CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("sample_configs").glob("*.yaml"))


def error_of(raw: object) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    return str(info.value)


def test_empty_document_gives_the_offline_defaults() -> None:
    cfg = from_dict(None)
    assert cfg.model.name_or_path == "minilm"
    assert cfg.data.source == "reviews-sample"
    assert cfg.task == "classification" and cfg.engine == "loop"


@pytest.mark.parametrize("path", SAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_sample_config_is_valid(path: Path) -> None:
    assert isinstance(load_config(path), RunConfig)


def test_wrong_type_names_the_key_path_and_the_value() -> None:
    assert error_of({"train": {"learning_rate": "fast"}}) == (
        'train.learning_rate: expected a positive number, got "fast"'
    )


def test_out_of_range_values_are_refused_with_the_allowed_range() -> None:
    assert error_of({"train": {"learning_rate": 0}}) == "train.learning_rate: expected a positive number, got 0"
    assert error_of({"train": {"per_device_train_batch_size": 0}}).startswith(
        "train.per_device_train_batch_size: expected an integer >= 1"
    )
    assert error_of({"train": {"mlm_probability": 1.5}}) == (
        "train.mlm_probability: expected a number in (0, 1), got 1.5"
    )
    assert error_of({"train": {"num_train_epochs": -1}}).startswith("train.num_train_epochs:")
    assert error_of({"train": {"seed": 2**32}}) == (  # numpy's limit, which set_seed would hit mid-run
        "train.seed: expected an integer in [0, 4294967295], got 4294967296"
    )


def test_unknown_key_suggests_the_closest_name() -> None:
    assert error_of({"train": {"learning_rte": 1e-4}}) == (
        'train.learning_rte: unknown key (did you mean "learning_rate"?)'
    )
    assert error_of({"trian": {}}) == 'trian: unknown key (did you mean "train"?)'


def test_choice_fields_list_their_choices_and_suggest() -> None:
    assert error_of({"task": "clasification"}) == (
        'task: expected one of classification, masked-lm, causal-lm, got "clasification" '
        '(did you mean "classification"?)'
    )
    assert error_of({"task": "mlm"}).endswith('got "mlm" (did you mean "masked-lm"?)')


def test_a_file_that_is_no_config_is_named_as_such_without_quoting_it(tmp_path: Path) -> None:
    other = tmp_path / "hosts.yaml"
    other.write_text("root: x:0:0\ndaemon: y\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(other)
    assert str(raised.value).startswith(f"{other}: not a Tunebench config (none of its keys is task, engine,")
    assert "root" not in str(raised.value).removeprefix(str(other)), "no line of the file in the message"
    typo = tmp_path / "typo.yaml"
    typo.write_text("trian:\n  seed: 1\n", encoding="utf-8")  # a config with a typo still gets its hint
    with pytest.raises(ConfigError, match='did you mean "train"'):
        load_config(typo)


def test_a_null_list_says_what_turns_it_off() -> None:
    assert error_of({"output": {"report_to": None}}) == (
        "output.report_to: expected a list from tensorboard, wandb ([] for none), got null"
    )


def test_task_engine_combination_that_does_not_exist_is_refused() -> None:
    assert error_of({"task": "classification", "engine": "sft"}) == (
        'engine: engine "sft" does not train task "classification"; use engine: loop'
    )


def test_top_level_must_be_a_mapping() -> None:
    assert error_of(["task", "engine"]).startswith("the config must be a mapping of sections")
    assert error_of({"train": 3}) == "train: expected a mapping of keys, got 3"


def test_bool_is_not_accepted_as_a_number() -> None:
    assert error_of({"train": {"num_train_epochs": True}}).startswith("train.num_train_epochs: expected an integer")


def test_numbers_written_without_a_dot_are_accepted() -> None:
    # YAML 1.1 reads 5e-5 as a string; people write it anyway.
    cfg = from_dict(yaml.safe_load("train:\n  learning_rate: 5e-5\n"))
    assert cfg.train.learning_rate == pytest.approx(5e-5)


def test_a_bare_date_is_text_where_text_is_wanted_and_shown_as_written_elsewhere() -> None:
    assert from_dict(yaml.safe_load("data:\n  source: 2024-01-01\n")).data.source == "2024-01-01"
    assert error_of(yaml.safe_load("train:\n  learning_rate: 2024-01-01\n")) == (
        "train.learning_rate: expected a positive number, got 2024-01-01"
    )


def test_whole_numbers_in_exponent_form_are_integers() -> None:
    cfg = from_dict(yaml.safe_load("train:\n  per_device_train_batch_size: 1e1\n"))
    assert cfg.train.per_device_train_batch_size == 10
    assert error_of({"train": {"per_device_train_batch_size": "2.5e0"}}).startswith(
        'train.per_device_train_batch_size: expected an integer >= 1, got "2.5e0"'
    )


def test_a_named_eval_split_with_another_eval_fraction_is_an_error() -> None:
    assert error_of({"data": {"eval_split": "test", "eval_fraction": 0.25}}).startswith("data.eval_fraction: 0.25")


def test_eval_fraction_alone_needs_nothing_else() -> None:
    cfg = from_dict({"data": {"source": "rows.csv", "eval_fraction": 0.25}})
    assert (cfg.data.eval_split, cfg.data.eval_fraction) == ("auto", 0.25)


def test_a_named_eval_split_keeps_the_default_fraction_unused() -> None:
    """A saved config writes every field, the default eval_fraction beside the split: it must load again."""
    cfg = from_dict({"data": {"eval_split": "test"}})
    assert from_dict(cfg.to_dict()) == cfg


def test_bad_device_string_is_refused() -> None:
    assert error_of({"train": {"device": "gpu"}}) == (
        'train.device: expected auto, cpu, cuda, cuda:N or mps, got "gpu"'
    )


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: [1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: YAML syntax error at line")


def test_yaml_nested_deeper_than_python_recurses_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("task: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: nested too deeply to read; a config is a few levels deep"


def test_missing_config_file_is_a_user_error_that_points_at_the_examples_from_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(checkout)
    with pytest.raises(ConfigError, match="config file not found; see sample_configs/ for examples"):
        load_config(tmp_path / "nope.yaml")
    monkeypatch.chdir(tmp_path)  # elsewhere, a relative sample_configs/ would name nothing there
    examples = re.escape(f"{checkout / 'sample_configs'}/")
    with pytest.raises(ConfigError, match=f"config file not found; see {examples} for examples"):
        load_config("nope.yaml")


def test_set_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1.0e-4\n")
    cfg = load_config(path, ["train.learning_rate=3e-5", "data.train_size=100", "data.eval_split=null"])
    assert cfg.train.learning_rate == pytest.approx(3e-5)
    assert cfg.data.train_size == 100 and cfg.data.eval_split is None
    with pytest.raises(ConfigError, match=r'^train\.learning_rate: expected a positive number, got "fast"$'):
        load_config(path, ["train.learning_rate=fast"])
    with pytest.raises(ConfigError, match=r"^--set: expected key.path=value"):
        apply_overrides({}, ["train.learning_rate"])


def test_save_then_load_round_trips_exactly(tmp_path: Path) -> None:
    cfg = from_dict({"task": "masked-lm", "engine": "sft", "train": {"learning_rate": 3e-5, "torch_threads": 1}})
    path = tmp_path / "out.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file may be left behind"


def test_validate_field_returns_a_new_config_or_names_the_field() -> None:
    cfg = RunConfig()
    changed = validate_field(cfg, "train.learning_rate", "2e-5")
    assert changed.train.learning_rate == pytest.approx(2e-5) and cfg.train.learning_rate == pytest.approx(5e-5)
    with pytest.raises(ConfigError) as info:
        validate_field(cfg, "train.num_train_epochs", "many")
    assert info.value.path == "train.num_train_epochs"


def test_every_field_has_help_text() -> None:
    docs = field_docs()
    assert "train.learning_rate" in docs and "data.source" in docs
    assert all(text.strip() for text in docs.values())


def test_group_by_length_is_a_switch_named_in_its_error() -> None:
    assert from_dict({"train": {"group_by_length": True}}).train.group_by_length is True
    assert error_of({"train": {"group_by_length": "grouped"}}) == (
        'train.group_by_length: expected true or false, got "grouped"'
    )


def test_a_config_path_given_with_a_tilde_reads_and_writes_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quoted ~ reaches the program as it is (the shell leaves it), and the workbench's file field passes what
    was typed: neither may read from, or write into, a folder named ~."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    cfg = from_dict({"train": {"num_train_epochs": 2}})
    save_config(cfg, "~/my run.yaml")
    assert (tmp_path / "home" / "my run.yaml").is_file() and not (tmp_path / "~").exists()
    assert load_config("~/my run.yaml") == cfg
    with pytest.raises(ConfigError, match=r"^~nosuchuser0/x.yaml: no user 'nosuchuser0' on this machine"):
        load_config("~nosuchuser0/x.yaml")
    with pytest.raises(ConfigError, match="no user 'nosuchuser0'"):
        save_config(cfg, "~nosuchuser0/x.yaml")
