"""Fuzzing the config loader: whatever YAML a user writes, the answer is a valid RunConfig or one ConfigError line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import (
    SECTIONS,
    RunConfig,
    apply_overrides,
    field_docs,
    from_dict,
    load_config,
    parse_yaml,
    validate_field,
)
from engine.errors import ConfigError

KNOWN_KEYS = sorted(
    {f.name for f in dataclasses.fields(RunConfig)}
    | {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0", "+-5", "١٢", "²", "5e-5", "1e999", "nan", "-inf", "yes", "null", "~", "cuda:x", " "]),
    st.sampled_from(["classification", "masked-lm", "causal-lm", "loop", "sft", "epoch", "steps", "no", "auto"]),
    st.dates(),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers(), st.booleans(), st.none())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=20,
)


def _section(cls: type) -> st.SearchStrategy[Any]:
    names = [f.name for f in dataclasses.fields(cls)]
    values = st.one_of(scalars, scalars, documents)
    return st.one_of(scalars, st.dictionaries(st.sampled_from(names), values, max_size=len(names)))


# Well-formed configs with wrong values in them: that is where the checks are.
sections = st.fixed_dictionaries(
    {},
    # Sections first: the loader stops at the first bad value, and a random task would nearly always be one.
    optional={**{name: _section(cls) for name, cls in SECTIONS.items()}, "task": scalars, "engine": scalars},
)


def _assert_clean(raw: Any) -> None:
    try:
        cfg = from_dict(raw)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(cfg, RunConfig)
        assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg, "a valid config survives a save and a load"


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_yaml_document_gives_a_config_or_a_config_error(raw: Any) -> None:
    _assert_clean(raw)


@settings(max_examples=600, deadline=None)
@given(sections)
def test_config_shaped_documents_with_bad_values_give_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    _assert_clean(raw)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(field_docs())), st.one_of(scalars, documents))
def test_any_value_for_any_field_gives_a_config_or_an_error_naming_that_field(path: str, value: Any) -> None:
    """What the TUI's form does on every keystroke."""
    try:
        cfg = validate_field(RunConfig(), path, value)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert exc.path.split(".")[0] in (path.split(".")[0], "engine", "data")  # the field, or a cross-field rule
    else:
        assert isinstance(cfg, RunConfig)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_gives_a_config_error(text: str) -> None:
    try:
        raw = parse_yaml(text)
    except ConfigError as exc:
        assert "YAML syntax error" in str(exc)
        return
    _assert_clean(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_set_overrides_give_a_config_or_a_config_error(overrides: list[str]) -> None:
    try:
        raw = apply_overrides({}, overrides)
    except ConfigError:
        return
    _assert_clean(raw)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_config_files_on_disk_load_or_give_a_config_error(tmp_path: Path, raw: Any) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg, RunConfig)
