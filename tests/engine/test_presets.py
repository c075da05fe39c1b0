"""Saving a config into its preset's text: changed values are rewritten where they stand, comments and the keys
left at their defaults stay, and whatever cannot be edited in place is written whole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.config import RunConfig, from_dict, load_config, parse_yaml, validate_field
from engine.presets import edit_config_text, save_preset

REPO = Path(__file__).resolve().parents[2]

PRESET = """\
# A preset with comments.
task: classification
model:
  name_or_path: minilm  # the bundled encoder
data:
  source: reviews-sample
  eval_split:
train:
  learning_rate: 1.0e-4   # a tenth of BERT's

  num_train_epochs: 3
"""


def edited(text: str, *changes: tuple[str, object]) -> tuple[RunConfig, str | None]:
    cfg = from_dict(parse_yaml(text))
    for path, value in changes:
        cfg = validate_field(cfg, path, value)
    return cfg, edit_config_text(text, cfg)


def test_a_changed_value_is_rewritten_in_its_line_keeping_the_comment_after_it() -> None:
    _, out = edited(PRESET, ("train.learning_rate", 2e-4), ("model.name_or_path", "./my model"))
    assert out == PRESET.replace("1.0e-4", "0.0002").replace("minilm", "./my model")


def test_a_key_the_file_lacks_goes_at_the_end_of_its_section_and_a_section_at_the_end() -> None:
    cfg, out = edited(
        PRESET, ("train.weight_decay", 0.01), ("data.eval_split", "test"), ("launch.gpu_ids", "0,1"), ("train.seed", 7)
    )
    assert out == (
        PRESET.replace("  eval_split:\n", "  eval_split: test\n").replace(
            "  num_train_epochs: 3\n", "  num_train_epochs: 3\n  weight_decay: 0.01\n  seed: 7\n"
        )
        + "launch:\n  gpu_ids: 0,1\n"
    )
    assert out is not None and from_dict(parse_yaml(out)) == cfg


def test_lora_turned_on_is_one_line_and_a_block_of_lora_keys_is_edited_key_by_key() -> None:
    cfg, out = edited(PRESET, ("model.lora", {"r": 4}))
    assert out is not None and "  lora: {r: 4, " in out and from_dict(parse_yaml(out)) == cfg
    block = PRESET.replace("minilm  # the bundled encoder\n", "minilm\n  lora:\n    r: 4\n")
    cfg, out = edited(block, ("model.lora.r", 16))
    assert out == block.replace("    r: 4\n", "    r: 16\n")


@pytest.mark.parametrize(
    "text",
    [
        "task: classification\ntrain: {learning_rate: 0.001}\n",  # a flow-style section
        "task: classification\ntrain:\n  learning_rate: >-\n    0.001\n",  # a value over two lines
    ],
    ids=["flow-section", "folded-value"],
)
def test_what_cannot_be_edited_in_place_is_left_to_the_whole_write(text: str, tmp_path: Path) -> None:
    cfg, out = edited(text, ("train.learning_rate", 0.002))
    assert out is None
    path = tmp_path / "p.yaml"
    save_preset(cfg, path, like=text)
    assert load_config(path) == cfg and "per_device_train_batch_size" in path.read_text()


def test_a_list_value_and_a_null_are_written_as_yaml_reads_them_back() -> None:
    text = "task: masked-lm\nengine: sft\nmodel:\n  lora:\n    r: 8\n    target_modules: [query]\n"
    text += "data:\n  train_size: 9\n"
    cfg, out = edited(text, ("model.lora.target_modules", ["query", "value"]), ("data.train_size", None))
    assert out is not None and from_dict(parse_yaml(out)) == cfg
    assert "    target_modules: [query, value]\n" in out and out.endswith("data:\n  train_size: null\n")


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "sample_configs").glob("*.yaml")))
def test_every_bundled_preset_keeps_each_of_its_lines_but_the_changed_ones(preset: str) -> None:
    text = (REPO / "sample_configs" / preset).read_text(encoding="utf-8")
    cfg = from_dict(parse_yaml(text))
    train = dataclasses.replace(cfg.train, learning_rate=cfg.train.learning_rate * 2, seed=cfg.train.seed + 1)
    out = edit_config_text(text, dataclasses.replace(cfg, train=train))
    assert out is not None
    kept = [line for line in text.splitlines() if "learning_rate" not in line and " seed:" not in line]
    assert [line for line in out.splitlines() if "learning_rate" not in line and " seed:" not in line] == kept


def test_a_key_added_to_a_section_goes_above_the_next_sections_heading_comment() -> None:
    text = (
        "task: classification\nmodel:\n  lora:\n    target_modules:\n    - query\n    - value\n\n"
        "# ---- training ----\ntrain:\n  seed: 1\n"
    )
    _, out = edited(text, ("model.trust_remote_code", True))
    assert out == text.replace("    - value\n", "    - value\n  trust_remote_code: true\n")


def test_an_empty_section_a_block_turned_off_and_a_block_list_are_edited_in_place() -> None:
    text = "# keep me\ntask: classification\nmodel:\n  lora:\n    r: 4\n    target_modules:\n    - query\ntrain:\n"
    _, out = edited(text, ("train.seed", 7))
    assert out == text + "  seed: 7\n"
    _, out = edited(text, ("model.lora.target_modules", ["query", "key"]))
    assert out == text.replace("    target_modules:\n    - query\n", "    target_modules: [query, key]\n")
    _, out = edited(text, ("model.lora", None))
    assert out == "# keep me\ntask: classification\nmodel:\n  lora: null\ntrain:\n"


def test_a_preset_with_windows_line_ends_keeps_them_in_the_lines_added() -> None:
    text = PRESET.replace("\n", "\r\n")
    _, out = edited(text, ("train.weight_decay", 0.01), ("launch.gpu_ids", "0"))
    assert out is not None and out.count("\r\n") == out.count("\n") and "# A preset with comments." in out
