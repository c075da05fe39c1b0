"""Offline, a Hub id fails in seconds with a message naming the offline alternatives."""

from __future__ import annotations

import pytest

from engine import hub
from engine.config import DataConfig
from engine.data import load_splits
from engine.errors import DataError, ModelError
from engine.models import load_tokenizer


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_can_connect", lambda *_a: False)


def test_offline_env_means_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_reachable()


@pytest.mark.usefixtures("unreachable")
def test_hub_model_id_offline_names_minilm() -> None:
    with pytest.raises(ModelError) as info:
        load_tokenizer("some-org/some-model-that-is-not-cached")
    assert 'use the bundled "minilm"' in str(info.value) or "not a model on the Hub" in str(info.value)


@pytest.mark.usefixtures("unreachable")
def test_hub_dataset_id_offline_names_the_bundled_samples() -> None:
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(source="some_dataset_not_cached"), needs_labels=True)
    assert "reviews-sample" in str(info.value) and "movies-sample" in str(info.value)


@pytest.mark.usefixtures("unreachable")
def test_predict_with_a_hub_id_offline_asks_the_cache_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the Hub: its client retries with backoff for half a minute before it gives up."""
    from transformers import AutoConfig

    from engine.errors import PredictError
    from engine.predict import detect_task

    asked: list[object] = []
    original = AutoConfig.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, path: str, **kwargs: object) -> object:
        asked.append(kwargs.get("local_files_only"))
        return original(cls, path, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(spy))
    with pytest.raises(PredictError) as info:
        detect_task("some-org/some-model-that-is-not-cached")
    assert asked == [True]
    assert str(info.value).startswith("model: ")
