"""The prediction engine: fill-mask equal to the raw pipeline, errors a user can fix, classify, generate, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PredictError
from engine.predict import (
    ClassifyResult,
    FillMaskResult,
    GenerateResult,
    compare,
    load_predictor,
    predict,
)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """A tiny BERT sentiment classifier whose labels are named negative/positive."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-classifier")
    config = BertConfig.from_pretrained(
        tiny_bert_dir, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def angle_mask_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """The tiny masked LM with a tokenizer whose mask token is <mask> (as in RoBERTa)."""
    from transformers import AutoTokenizer, BertForMaskedLM

    path = tmp_path_factory.mktemp("angle-mask")
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tok.add_special_tokens({"mask_token": "<mask>"})
    model = BertForMaskedLM.from_pretrained(tiny_bert_dir)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def raw_fill_mask(model_dir: Path, text: str, top_k: int = 5) -> Any:
    from transformers import pipeline

    return pipeline("fill-mask", model=str(model_dir), device="cpu")(text, top_k=top_k)


def test_fill_mask_equals_the_raw_pipeline_ordered_by_score(tiny_bert_dir: Path) -> None:
    text = "the bakery was [MASK] today"
    raw = raw_fill_mask(tiny_bert_dir, text, top_k=7)
    result = predict(str(tiny_bert_dir), text, top_k=7, device="cpu")
    assert isinstance(result, FillMaskResult) and result.mask_token == "[MASK]"
    (tokens,) = result.masks
    assert [t.token_str for t in tokens] == [r["token_str"] for r in raw]
    assert [t.score for t in tokens] == pytest.approx([r["score"] for r in raw], abs=1e-6)
    assert [t.score for t in tokens] == sorted((t.score for t in tokens), reverse=True)


def test_fill_mask_gives_one_ranking_per_mask(tiny_bert_dir: Path) -> None:
    text = "the [MASK] was [MASK] today"
    raw = raw_fill_mask(tiny_bert_dir, text, top_k=3)
    result = predict(str(tiny_bert_dir), text, top_k=3, device="cpu")
    assert isinstance(result, FillMaskResult)
    assert len(result.masks) == 2
    assert [[t.token_str for t in m] for m in result.masks] == [[r["token_str"] for r in row] for row in raw]


def test_a_top_k_past_the_vocabulary_lists_every_token(tiny_bert_dir: Path) -> None:
    from transformers import AutoConfig

    result = predict(str(tiny_bert_dir), "a [MASK] day", top_k=10**6, device="cpu")
    (candidates,) = result.masks
    assert len(candidates) == AutoConfig.from_pretrained(tiny_bert_dir).vocab_size


def test_fill_mask_uses_the_models_own_mask_token(angle_mask_dir: Path) -> None:
    result = predict(str(angle_mask_dir), "the bakery was <mask> today", device="cpu")
    assert isinstance(result, FillMaskResult) and result.mask_token == "<mask>"
    assert len(result.masks[0]) == 5
    with pytest.raises(
        PredictError, match=r"no <mask> in the text \(this model's mask token is <mask>, not \[MASK\]\)"
    ):
        predict(str(angle_mask_dir), "the bakery was [MASK] today", device="cpu")


def test_text_without_a_mask_token_says_which_token_to_type(tiny_bert_dir: Path) -> None:
    with pytest.raises(PredictError, match=r"no \[MASK\] in the text; type \[MASK\] where"):
        predict(str(tiny_bert_dir), "the bakery was lovely today", device="cpu")


def test_empty_text_is_an_error(tiny_bert_dir: Path) -> None:
    with pytest.raises(PredictError, match="the text is empty"):
        predict(str(tiny_bert_dir), "   ", device="cpu")


def test_over_long_text_is_truncated_with_a_warning(tiny_bert_dir: Path) -> None:
    long_tail = " ".join(["lovely"] * 300)
    result = predict(str(tiny_bert_dir), f"the bakery was [MASK] {long_tail}", device="cpu")
    assert isinstance(result, FillMaskResult)
    assert any("only the first 128 were read" in w for w in result.warnings)
    with pytest.raises(PredictError, match=r"every \[MASK\] is past the first 128 tokens"):
        predict(str(tiny_bert_dir), f"{long_tail} the bakery was [MASK]", device="cpu")


def test_untrained_mlm_head_is_flagged_from_the_load_report(tiny_bert_dir: Path) -> None:
    bare = predict("minilm", "this is a [MASK] movie!", device="cpu")
    assert bare.untrained_head
    assert any("newly initialized" in w for w in bare.warnings)
    trained = predict(str(tiny_bert_dir), "this is a [MASK] movie!", device="cpu")
    assert not trained.untrained_head and not trained.warnings


def test_models_are_loaded_once_and_reused(tiny_bert_dir: Path) -> None:
    first = load_predictor(str(tiny_bert_dir), device="cpu")
    assert load_predictor(str(tiny_bert_dir), device="cpu") is first


def test_classify_returns_label_names_with_probabilities(classifier_dir: Path) -> None:
    from transformers import pipeline

    text = "the cafe was lovely"
    result = predict(str(classifier_dir), text, device="cpu")
    assert isinstance(result, ClassifyResult)
    assert {s.label for s in result.labels} == {"negative", "positive"}
    assert sum(s.score for s in result.labels) == pytest.approx(1.0)
    raw = pipeline("text-classification", model=str(classifier_dir), device="cpu", top_k=None)([text])[0]
    assert [(s.label, s.score) for s in result.labels] == [(r["label"], pytest.approx(r["score"])) for r in raw]


def test_a_base_classifier_takes_the_labels_it_is_given_and_keeps_one_copy(tiny_bert_dir: Path) -> None:
    """A bare encoder's new classifier is named with the data's classes; loaded again with other labels, it
    replaces the copy loaded before instead of staying beside it."""
    import engine.predict

    engine.predict.clear_cache()
    first = load_predictor(str(tiny_bert_dir), task="classification", device="cpu", label_names=["1", "2"])
    again = load_predictor(str(tiny_bert_dir), task="classification", device="cpu", label_names=["1", "2"])
    assert again is first
    five = load_predictor(str(tiny_bert_dir), task="classification", device="cpu", label_names=list("12345"))
    result = five.predict("the cafe was lovely", top_k=5)
    assert isinstance(result, ClassifyResult) and {s.label for s in result.labels} == set("12345")
    assert [p for p in engine.predict._CACHE.values() if p.path == five.path] == [five]


def test_generate_continues_a_prompt_greedily_within_max_new_tokens(tiny_gpt2_dir: Path) -> None:
    predictor = load_predictor(str(tiny_gpt2_dir), device="cpu")
    first = predictor.generate("the cafe was", max_new_tokens=3)
    assert isinstance(first, GenerateResult) and first.prompt == "the cafe was"
    assert 1 <= len(predictor.tokenizer(first.completion, add_special_tokens=False)["input_ids"]) <= 3
    assert predictor.generate("the cafe was", max_new_tokens=3) == first  # greedy is deterministic
    # WordPiece decodes the new tokens alone without the space before them: "the cafe wasdigital"
    assert (first.prompt + first.completion).split()[:3] == ["the", "cafe", "was"]
    sampled = predictor.generate("the cafe was", max_new_tokens=3, do_sample=True, seed=1)
    assert sampled == predictor.generate("the cafe was", max_new_tokens=3, do_sample=True, seed=1)


def test_a_prompt_past_the_models_limit_keeps_its_end_and_room_for_the_new_tokens(tiny_gpt2_dir: Path) -> None:
    predictor = load_predictor(str(tiny_gpt2_dir), device="cpu")
    limit = predictor.token_limit
    long = "the cafe was " * limit
    result = predictor.generate(long, max_new_tokens=10)
    assert f"only its last {limit - 10} were read, leaving room" in " ".join(result.warnings)
    assert 1 <= len(predictor.tokenizer(result.completion, add_special_tokens=False)["input_ids"]) <= 10
    with pytest.raises(PredictError, match=f"^max-new-tokens: .* give fewer than {limit}$"):
        predictor.generate("the cafe was", max_new_tokens=limit)


def fake_run(tmp_path: Path, model_dir: Path | None, base: str) -> Path:
    from engine.config import from_dict, save_config

    run = tmp_path / "runs" / "20260101-000000-masked-lm"
    run.mkdir(parents=True)
    save_config(from_dict({"task": "masked-lm", "engine": "sft", "model": {"name_or_path": base}}), run / "config.yaml")
    if model_dir is not None:
        shutil.copytree(model_dir, run / "model")
    return run


def test_run_folder_without_a_model_yet_is_an_error(tmp_path: Path) -> None:
    run = fake_run(tmp_path, None, "minilm")
    with pytest.raises(PredictError, match="has no model or checkpoint yet"):
        predict(str(run), "this is a [MASK] movie!", device="cpu")


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_a_run_still_training_predicts_with_its_latest_checkpoint_and_says_so(
    engine: str, tmp_path: Path, tiny_bert_dir: Path
) -> None:
    from engine.runner import Runner
    from tests.conftest import tiny_config, write_jsonl

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was lovely, visit {i}"} for i in range(24)])
    overrides = {"task": "masked-lm", "engine": engine, "data.label_field": None, "train.save_strategy": "epoch"}
    result = Runner(tiny_config(tiny_bert_dir, rows, tmp_path / "runs", overrides)).run()
    assert result.status == "finished" and result.run_dir is not None
    shutil.rmtree(result.run_dir / "model")  # as it is while the run trains
    (latest,) = sorted((result.run_dir / "checkpoints").iterdir())[-1:]
    got = predict(str(result.run_dir), "this is a [MASK] movie!", top_k=3, device="cpu")
    assert isinstance(got, FillMaskResult) and len(got.masks[0]) == 3
    killed = "it ended without one: killed? tunebench run --resume RUN finishes it"
    assert f"{latest.name}: the run has no model yet ({killed}); this is its latest checkpoint" in got.warnings
    from engine.predict import checkpoint_note
    from engine.runs import RunDir

    with RunDir(result.run_dir).lock():  # as its process holds it while it trains
        assert checkpoint_note(str(latest)) == (
            f"{latest.name}: the run has no model yet (it is running); this is its latest checkpoint"
        )


def test_a_run_resumed_since_its_model_predicts_with_its_newer_checkpoint(tmp_path: Path, tiny_bert_dir: Path) -> None:
    import os

    from engine.runner import Runner
    from tests.conftest import tiny_config, write_jsonl

    rows = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"text": f"{w} cafe, visit {i}", "label": w} for i in range(12) for w in ("good", "bad")],
    )
    result = Runner(tiny_config(tiny_bert_dir, rows, tmp_path / "runs", {"train.save_strategy": "epoch"})).run()
    assert result.status == "finished" and result.run_dir is not None
    latest = sorted((result.run_dir / "checkpoints").iterdir())[-1]
    # A checkpoint folder of a classification run is a classifier too (its config.json names the head).
    from_checkpoint = predict(str(latest), "good cafe", device="cpu")
    assert isinstance(from_checkpoint, ClassifyResult)
    assert f"{latest.name}: a checkpoint of the run; its model/ holds the weights it ended with" in (
        from_checkpoint.warnings
    )
    ended = predict(str(result.run_dir), "good cafe", device="cpu")
    assert isinstance(ended, ClassifyResult) and not any("checkpoint" in w for w in ended.warnings)

    # As a stopped run leaves it once resumed and killed: its model/ older than its latest checkpoint.
    model = result.run_dir / "model"
    os.utime(model, (latest.stat().st_mtime - 60, latest.stat().st_mtime - 60))
    got = predict(str(result.run_dir), "good cafe", device="cpu")
    assert isinstance(got, ClassifyResult) and got.model == str(latest)
    assert (
        f"{latest.name}: written after the run's model/ (it was resumed and has not ended since); these are its "
        "latest weights" in got.warnings
    )


def test_compare_puts_the_base_model_beside_the_fine_tuned_one(tmp_path: Path, tiny_bert_dir: Path) -> None:
    run = fake_run(tmp_path, tiny_bert_dir, base="minilm")
    side_by_side = compare("this is a [MASK] movie!", str(run), top_k=3, device="cpu")
    assert isinstance(side_by_side.base, FillMaskResult) and isinstance(side_by_side.tuned, FillMaskResult)
    assert side_by_side.base.model == "minilm" and side_by_side.base.untrained_head
    assert side_by_side.tuned.model == str(run) and not side_by_side.tuned.untrained_head
    assert side_by_side.tuned.masks == predict(str(run), "this is a [MASK] movie!", top_k=3, device="cpu").masks


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from engine.cli import main

    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_predict_json_fill_mask_equals_the_pipeline(
    capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path
) -> None:
    text = "the bakery was [MASK] today"
    code, out, _ = cli(capsys, "--model", str(tiny_bert_dir), "--top-k", "4", "--json", text)
    assert code == 0
    rows = json.loads(out)
    raw = raw_fill_mask(tiny_bert_dir, text, top_k=4)
    assert [r["token_str"] for r in rows] == [r["token_str"] for r in raw]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in raw], abs=1e-6)
    assert set(rows[0]) == {"token_str", "score"}

    code, out, _ = cli(capsys, "--model", str(tiny_bert_dir), "--top-k", "2", "--json", "the [MASK] was [MASK]")
    assert code == 0 and [len(row) for row in json.loads(out)] == [2, 2]


def test_cli_predict_takes_a_run_by_its_name_in_the_runs_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_bert_dir: Path
) -> None:
    run = fake_run(tmp_path, tiny_bert_dir, base="minilm")
    text = "the bakery was [MASK] today"
    by_name = cli(capsys, "--model", run.name, "--runs-dir", str(run.parent), "--json", text)
    assert by_name[0] == 0
    assert by_name == cli(capsys, "--model", str(run), "--json", text)
    assert by_name == cli(capsys, "--model", run.name[:12], "--runs-dir", str(run.parent), "--json", text)


def test_cli_predict_names_the_runs_a_shared_prefix_matches_instead_of_trying_the_hub(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_bert_dir: Path
) -> None:
    run = fake_run(tmp_path, tiny_bert_dir, base="minilm")
    shutil.copytree(run, run.with_name(run.name.replace("000000", "000001")))
    code, out, err = cli(capsys, "--model", "20260101", "--runs-dir", str(run.parent), "this is a [MASK] movie!")
    assert code == 2 and not out
    assert (
        err == f"tunebench: error: 20260101 matches 2 runs ({run.name}, {run.name.replace('000000', '000001')}); "
        "give more of the name\n"
    )


def test_cli_predict_json_classify_maps_labels_to_probabilities(
    capsys: pytest.CaptureFixture[str], classifier_dir: Path
) -> None:
    code, out, _ = cli(capsys, "--model", str(classifier_dir), "--json", "the cafe was lovely")
    assert code == 0
    probs = json.loads(out)
    assert set(probs) == {"negative", "positive"} and sum(probs.values()) == pytest.approx(1.0)


def test_cli_predict_table_warns_about_an_untrained_head_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--model", "minilm", "this is a [MASK] movie!")
    assert code == 0
    assert "this is a [MASK] movie!" in out and "score" in out
    assert "tunebench: warning: minilm: this model's MLM head was newly initialized" in err
    assert "newly initialized" not in out


def test_cli_predict_repeats_a_long_text_cut_to_one_short_line(
    capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path
) -> None:
    text = "a [MASK] day. " + "the cafe was lovely and the staff were kind. " * 60
    code, out, _err = cli(capsys, "--model", str(tiny_bert_dir), text)
    assert code == 0
    title = out.splitlines()[0]
    assert len(title) < 200 and title.startswith("a [MASK] day. the cafe") and f"({len(text):,} characters)" in title


def test_cli_predict_user_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path) -> None:
    code, out, err = cli(capsys, "--model", str(tiny_bert_dir), "no mask here")
    assert code == 2 and not out
    assert err.startswith("tunebench: error: text: no [MASK] in the text") and err.count("\n") == 1

    code, _, err = cli(capsys, "--model", str(tiny_bert_dir / "missing"), "a [MASK]")
    assert code == 2 and "not a folder" in err

    for top_k in ("0", "100000"):
        code, out, err = cli(capsys, "--model", str(tiny_bert_dir), "--top-k", top_k, "a [MASK]")
        assert code == 2 and not out
        assert err == f"tunebench: error: --top-k: expected a whole number from 1 to 1000, got {top_k}\n"


def test_a_checkpoint_rotated_away_while_it_loads_gives_way_to_the_newest(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run deletes its older checkpoints as it saves (save_total_limit): the one predict picked can go
    before its weights are read."""
    from engine import predict as predict_module
    from engine.runner import Runner
    from tests.conftest import tiny_config, write_jsonl

    rows = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"text": f"{w} cafe, visit {i}", "label": w} for i in range(12) for w in ("good", "bad")],
    )
    result = Runner(tiny_config(tiny_bert_dir, rows, tmp_path / "runs", {"train.save_strategy": "epoch"})).run()
    assert result.status == "finished" and result.run_dir is not None
    shutil.rmtree(result.run_dir / "model")  # as it is while the run trains
    older, newest = sorted((result.run_dir / "checkpoints").iterdir())
    build = predict_module._build
    rotations = [newest]

    def rotated_while_loading(name: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if rotations:
            shutil.rmtree(rotations.pop())
            raise OSError(f"no file named config.json in {path}")
        return build(name, path, *args, **kwargs)

    monkeypatch.setattr(predict_module, "_build", rotated_while_loading)
    got = predict(str(result.run_dir), "good cafe", device="cpu")
    assert isinstance(got, ClassifyResult)
    assert any(w.startswith(f"{older.name}: the run has no model yet") for w in got.warnings), got.warnings

    def newer_saved_while_loading(name: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name != "checkpoint-50":  # half deleted, as a prune leaves it for a moment
            shutil.copytree(path, Path(path).with_name("checkpoint-50"))
            raise OSError(f"no file named model.safetensors in {path}")
        return build(name, path, *args, **kwargs)

    monkeypatch.setattr(predict_module, "_build", newer_saved_while_loading)
    predict_module.clear_cache()
    got = predict(str(result.run_dir), "good cafe", device="cpu")
    assert any(w.startswith("checkpoint-50: the run has no model yet") for w in got.warnings), got.warnings

    saves = iter(range(100, 200))

    def always_rotated(name: str, path: str, *args: Any, **kwargs: Any) -> Any:
        shutil.copytree(path, Path(path).with_name(f"checkpoint-{next(saves)}"))  # the run saves anew ...
        shutil.rmtree(path)  # ... and deletes the one being read
        raise OSError(f"no file named config.json in {path}")

    monkeypatch.setattr(predict_module, "_build", always_rotated)
    predict_module.clear_cache()
    with pytest.raises(PredictError) as info:
        predict(str(result.run_dir), "bad cafe", device="cpu")
    assert str(info.value) == (
        f"model: {result.run_dir} replaced its checkpoints faster than they loaded; ask again, or wait for the run "
        "to end"
    )
