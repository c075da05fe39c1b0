"""The bad-input corpus (tests/bad_inputs/cases.yaml): every mistake a user can make in a config, a data file, a
model choice, a text or a command line ends in one line that names the culprit and the fix, with exit code 2,
no traceback, and no run folder left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "bad_inputs"
CASES: list[dict[str, Any]] = yaml.safe_load((BAD / "cases.yaml").read_text(encoding="utf-8"))
WIDE = {"COLUMNS": "400"}  # rich wraps at the terminal width; a warning must stay one line to be compared


@pytest.fixture(scope="session")
def assets(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Values of the placeholders in cases.yaml."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

    from tests.conftest import TINY_BERT

    tiny: dict[str, Any] = dict(TINY_BERT)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    small_vocab = tmp_path_factory.mktemp("small-vocab")
    BertForMaskedLM(BertConfig(vocab_size=1000, **tiny)).save_pretrained(small_vocab)
    tokenizer.save_pretrained(small_vocab)
    three_labels = tmp_path_factory.mktemp("three-labels")
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **{**tiny, "num_labels": 3})).save_pretrained(
        three_labels
    )
    tokenizer.save_pretrained(three_labels)
    truncated = tmp_path_factory.mktemp("truncated")  # a copy cut short
    shutil.copytree(tiny_bert_dir, truncated, dirs_exist_ok=True)
    (truncated / "model.safetensors").write_bytes(b"x\n")
    words = ["the", "cafe", "was", "lovely", "and", "the", "staff", "were", "friendly"]
    return {
        "tiny_bert": str(tiny_bert_dir),
        "small_vocab": str(small_vocab),
        "three_labels": str(three_labels),
        "truncated": str(truncated),
        "long_text": " ".join(words[i % len(words)] for i in range(400)),
        "cores": str(os.cpu_count() or 1),
        "examples": f"{REPO / 'sample_configs'}/",  # the cases run from tests/bad_inputs, outside the checkout's root
    }


def fill(text: str, assets: dict[str, str]) -> str:
    for key, value in assets.items():
        text = text.replace("{" + key + "}", value)
    return text


def command(case: dict[str, Any], assets: dict[str, str], runs: Path) -> list[str]:
    argv = [fill(a, assets) for a in case["argv"]]
    if argv[0] == "run" and "--runs-dir" not in argv and "--resume" not in argv:
        argv += ["--runs-dir", str(runs)]
    return argv


def run_case(case: dict[str, Any], assets: dict[str, str], runs: Path, capsys: Any) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the case's command, run from tests/bad_inputs."""
    argv = command(case, assets, runs)
    if case.get("subprocess"):
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *argv],
            cwd=BAD,
            capture_output=True,
            text=True,
            env={**os.environ, **WIDE, "PYTHONPATH": str(REPO)},
            timeout=300,
        )
        return done.returncode, done.stdout, done.stderr
    from engine.cli import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_ends_in_one_clear_line(
    case: dict[str, Any],
    assets: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if case["argv"][0] == "predict":
        pytest.importorskip("engine.predict")
    monkeypatch.chdir(BAD)
    for key, value in WIDE.items():
        monkeypatch.setenv(key, value)
    runs = tmp_path / "runs"
    code, out, err = run_case(case, assets, runs, capsys)
    expected = fill(case["expect"], assets)

    assert "Traceback" not in err and "Traceback" not in out
    if case.get("warning"):
        assert code == 0, err
        assert expected in [line.strip() for line in (out + err).splitlines()], out + err
    else:
        assert code == 2, err
        assert err.splitlines() == [expected]
        logged = [line for line in out.splitlines() if line.lstrip().startswith("error:")]
        assert logged == [], "the error is said once, not again by a library's log"
        leftovers = list(runs.iterdir()) if runs.is_dir() else []
        assert leftovers == [], "a user error must not leave a run folder behind"


def test_corpus_covers_at_least_forty_cases_with_unique_ids() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)
    assert all("expect" in c for c in CASES)
