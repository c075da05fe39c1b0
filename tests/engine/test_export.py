"""``tunebench export``: a run's model as a folder plain transformers loads, the adapter alone, and the Hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.runner import Runner
from tests.conftest import sentiment_rows, tiny_config, write_jsonl

pytest.importorskip("peft")

TEXTS = ["the cafe was lovely today", "the bar was rude and dirty"]


def _run(root: Path, tiny_bert_dir: Path, lora: bool) -> Path:
    model = {"lora": {"r": 4}} if lora else {}
    cfg = tiny_config(tiny_bert_dir, write_jsonl(root / "rows.jsonl", sentiment_rows(48)), root / "runs", model=model)
    result = Runner(cfg).run()
    assert result.status == "finished" and result.run_dir is not None, result.error
    return result.run_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("lora"), tiny_bert_dir, lora=True)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("full"), tiny_bert_dir, lora=False)


def _pipeline_scores(folder: Path) -> list[dict[str, float]]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), device="cpu")
    return [{r["label"]: r["score"] for r in rows} for rows in classify(TEXTS, top_k=None)]


def _engine_scores(run: Path) -> list[dict[str, float]]:
    from engine.predict import clear_cache, load_predictor

    clear_cache()
    predictor = load_predictor(str(run), device="cpu")
    return [{s.label: s.score for s in predictor.classify(text).labels} for text in TEXTS]


def _close(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    return all(x.keys() == y.keys() and all(abs(x[k] - y[k]) < 1e-5 for k in x) for x, y in zip(a, b, strict=True))


def test_merged_export_loads_in_plain_pipeline_with_the_runs_predictions(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"
    assert main(["export", str(lora_run), str(out), "--merge"]) == 0
    assert capsys.readouterr().out.startswith(f"exported {out}: BertForSequenceClassification, ")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}, "a plain model: no peft needed"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"} and config["label2id"] == {"bad": 0, "good": 1}
    assert _close(_pipeline_scores(out), _engine_scores(lora_run))


def test_export_of_a_fully_fine_tuned_run_is_its_model(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    assert main(["export", str(full_run), str(out), "--merge"]) == 0  # nothing to merge: the model as it is
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (full_run / "model").iterdir())
    assert _close(_pipeline_scores(out), _engine_scores(full_run))


def test_export_without_merge_writes_the_adapter_that_peft_loads_on_its_base(
    lora_run: Path, tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "adapter"
    assert main(["export", str(lora_run), str(out)]) == 0
    size = (out / "adapter_model.safetensors").stat().st_size  # a tiny model's: it read "(0.0 MB)"
    assert f"({size // 1024} KiB) on " in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "config.json" not in names, "beside an adapter, transformers would take the folder for a whole model"
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base) == tiny_bert_dir.resolve()

    torch.manual_seed(0)  # the base's fresh head and pooler: replaced by the adapter's trained copies
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=2), out)
    inputs = AutoTokenizer.from_pretrained(out)(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        probabilities = model.eval()(**inputs).logits.softmax(-1)
    expected = _engine_scores(lora_run)
    assert all(abs(float(probabilities[i, 1]) - expected[i]["good"]) < 1e-5 for i in range(len(TEXTS)))


def test_predict_on_an_exported_adapter_says_where_its_head_is(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adapter"
    assert main(["export", str(lora_run), str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(out), "the cafe was lovely"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: model: {out} is a LoRA adapter exported for peft, without the model's head and "
        "labels; use the run it came from, or export that run with --merge"
    ]


def test_export_replaces_an_earlier_export_only_when_forced(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "taken"
    assert main(["export", str(lora_run), str(out)]) == 0  # the adapter alone
    capsys.readouterr()
    assert main(["export", str(lora_run), str(out), "--merge"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {out} holds a model already; add --force to replace it, or pick another folder"
    ]
    assert (out / "adapter_config.json").is_file()
    assert main(["export", str(lora_run), str(out), "--merge", "--force"]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"], "no temporary folder is left beside it"


def test_export_never_replaces_a_folder_of_other_files_even_forced(
    lora_run: Path, full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force replaces an earlier export, not a project whose runs lie a level down, nor a folder of notes."""
    project = tmp_path / "project"
    shutil.copytree(full_run, project / "runs" / full_run.name)
    (project / "train.py").write_text("print('mine')\n", encoding="utf-8")
    (project / "notes.txt").write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main(["export", str(lora_run), str(project), "--force"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {project} holds notes.txt, runs/, train.py, not an exported model; "
        "export into a new or empty folder"
    ]
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "runs", "train.py"]
    assert (project / "runs" / full_run.name / "model" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["project"], "no temporary folder is left beside it"
    inner = project / "runs" / full_run.name / "model"  # another run's model: a part of that run
    assert main(["export", str(lora_run), str(inner), "--force"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {inner} is inside the run {full_run.name}; pick a folder outside it"
    ]
    assert (inner / "model.safetensors").is_file()
    (project / "runs" / full_run.name).rename(tmp_path / "moved")  # a project of files with a config.json
    (project / "runs").rmdir()
    (project / "config.json").write_text("{}", encoding="utf-8")
    assert main(["export", str(lora_run), str(project), "--force"]) == 2
    assert "not an exported model" in capsys.readouterr().err
    assert (project / "train.py").is_file()


def test_export_into_the_current_folder_points_to_a_folder_of_its_own(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaced, the folder the shell is in would go from under it: even an empty one is refused, with a path."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    capsys.readouterr()
    assert main(["export", str(lora_run), "."]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tunebench: error: export: . is the folder you are in; export into a folder of its own, e.g. model"
    ]
    assert main(["export", str(lora_run), "model"]) == 0
    assert (here / "model" / "adapter_config.json").is_file()


def test_export_refuses_to_replace_the_run_itself(lora_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["export", str(lora_run), str(lora_run.parent), "--force"]) == 2
    assert "holds the run" in capsys.readouterr().err
    assert (lora_run / "model" / "adapter_config.json").is_file()


def test_export_refuses_a_folder_inside_the_run_or_another_run_even_forced(
    lora_run: Path, full_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force replaces what a folder holds, but never a part of the run (its model, its checkpoints) or
    another run."""
    inside = lora_run / "model"
    held = sorted(p.name for p in inside.iterdir())
    capsys.readouterr()
    assert main(["export", str(lora_run), str(inside), "--force"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {inside} is inside the run {lora_run.name}; pick a folder outside it"
    ]
    assert sorted(p.name for p in inside.iterdir()) == held
    assert main(["export", str(lora_run), str(full_run), "--force"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {full_run} is the folder of the run {full_run.name}; pick another folder"
    ]
    assert (full_run / "model" / "model.safetensors").is_file()
    assert main(["export", str(lora_run), str(full_run.parent), "--force"]) == 2
    assert f"{full_run.parent} holds the run" in capsys.readouterr().err


def test_a_failed_export_leaves_nothing_behind(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import PreTrainedTokenizerBase

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", broken)
    capsys.readouterr()
    assert main(["export", str(lora_run), str(tmp_path / "out"), "--merge"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_run_without_a_model_is_one_line(
    tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.runs import create_run_dir

    cfg = tiny_config(tiny_bert_dir, write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(8)), tmp_path / "runs")
    run = create_run_dir(cfg, tmp_path / "runs")
    capsys.readouterr()
    assert main(["export", run.name, str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: {run.name} has no model: its process ended before writing model/; "
        f"tunebench run --resume {run.path} continues it and writes one, "
        "or export another run"
    ]


def test_push_to_hub_without_a_token_or_the_hub_exits_2_naming_what_is_missing(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # no hf auth login
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["export", str(lora_run), str(out), "--merge", "--push-to-hub", "me/tiny"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tunebench: error: --push-to-hub: needs a Hugging Face token (run hf auth login, or set HF_TOKEN) and a "
        "connection to the Hugging Face Hub (offline?); nothing was exported"
    ]
    assert not out.exists()
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["export", str(lora_run), str(out), "--push-to-hub", "me/tiny"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tunebench: error: --push-to-hub: needs a connection to the Hugging Face Hub (offline?); nothing was exported"
    ]


def test_push_to_hub_uploads_the_exported_folder(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    import engine.hub

    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(_self: Any, repo_id: str, **kwargs: Any) -> str:
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(_self: Any, **kwargs: Any) -> None:
        calls.append(("upload_folder", kwargs))

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(engine.hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    assert main(["export", str(lora_run), str(out), "--merge", "--push-to-hub", "me/tiny"]) == 0
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[1][1]["folder_path"] == str(out) and calls[1][1]["repo_id"] == "me/tiny"
    assert capsys.readouterr().out.splitlines()[-1] == "pushed: https://huggingface.co/me/tiny"


def test_export_of_a_live_run_says_to_stop_it_first(
    full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live run's model/ is an earlier session's (or none), and the run's end replaces it: no silent export of
    an older model."""
    import shutil

    from engine.runs import RunDir

    run = RunDir(Path(shutil.copytree(full_run, tmp_path / "runs" / full_run.name)))
    with run.lock():  # as the run's process holds it while it trains
        assert main(["export", run.name, str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.splitlines() == [  # its folder: from here, ./runs is not where it is
        f"tunebench: error: export: {run.name} is still training; stop it first (tunebench stop {run.path} "
        "saves its model), or export it once it ends"
    ]
    assert not (tmp_path / "out").exists()


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(
    full_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import shutil

    import engine.export

    real = shutil.copy2

    def copy_until_full(src: Any, dst: Any) -> Any:
        if str(src).endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(engine.export.shutil, "copy2", copy_until_full)
    out = tmp_path / "exports" / "out"
    assert main(["export", str(full_run), str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: cannot write {out} (No space left on device); free disk space or pick another "
        "folder"
    ]
    assert list(out.parent.iterdir()) == []  # no temporary folder left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_export_where_no_folder_can_be_made_does_not_blame_the_disk(
    full_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path("/proc/tunebench-export/out")
    capsys.readouterr()
    assert main(["export", str(full_run), str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunebench: error: export: cannot write {out} (No such file or directory); pick another folder"
    ]
