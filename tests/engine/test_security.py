"""Security: configs are data (safe YAML), remote code stays off, checkpoints load no pickled code, nothing listens
on a port, and a config cannot place a run outside its runs folder."""

from __future__ import annotations

import ast
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoint import OPTIMIZER_FILE, latest_checkpoint
from engine.config import from_dict, load_config
from engine.errors import ConfigError, UserError
from engine.runner import Runner
from engine.runs import create_run_dir
from tests.conftest import sentiment_rows, write_jsonl

ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _small_run(make_config: Callable[..., Any], tmp_path: Path, **train: Any) -> Any:
    """A one-epoch config on 40 rows (30 to train on): enough to go through every stage of a run."""
    rows = write_jsonl(tmp_path / "small.jsonl", sentiment_rows(40))
    return make_config(data={"source": str(rows)}, train={"num_train_epochs": 1, **train})


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of ``<something>.name(...)`` or ``name(...)`` in the engine package."""
    found = []
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append((path, node))
    return found


def test_config_yaml_with_python_tags_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'task: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(evil)
    assert not marker.exists()


def test_engine_parses_yaml_only_with_safe_load() -> None:
    assert _calls("load") == [] or all(
        not (isinstance(c.func, ast.Attribute) and getattr(c.func.value, "id", "") == "yaml") for _, c in _calls("load")
    )
    assert _calls("unsafe_load") == [] and _calls("full_load") == []
    # nor through a loader class of its own: only the safe ones (SafeLoader, libyaml's CSafeLoader)
    unsafe = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader", "UnsafeConstructor"}
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_yaml = isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "yaml"
            assert not (is_yaml and node.attr in unsafe), f"{path.name}:{node.lineno} uses yaml.{node.attr}"
            assert not (isinstance(node, ast.Constant) and node.value in unsafe), f"{path.name}:{node.lineno}"
            if isinstance(node, ast.ClassDef):  # a loader of its own is a safe one with a check more
                for base in node.bases:
                    if isinstance(base, ast.Attribute) and getattr(base.value, "id", "") == "yaml":
                        assert base.attr in {"SafeLoader", "CSafeLoader", "YAMLError"}, f"{path.name}:{node.lineno}"


def test_every_torch_load_in_the_engine_passes_weights_only_true() -> None:
    loads = [(p, c) for p, c in _calls("load") if getattr(getattr(c.func, "value", None), "id", "") == "torch"]
    assert loads, "the checkpoint code loads optimizer state with torch.load"
    for path, call in loads:
        flags = {k.arg: k.value for k in call.keywords}
        value = flags.get("weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path.name}:{call.lineno}"


def test_trust_remote_code_is_off_unless_the_config_turns_it_on(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], tmp_path: Path
) -> None:
    import transformers

    assert from_dict({}).model.trust_remote_code is False
    seen: list[Any] = []
    for name in ("AutoTokenizer", "AutoModelForSequenceClassification"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained.__func__

        def spy(klass: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            seen.append(kwargs.get("trust_remote_code"))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    result = Runner(_small_run(make_config, tmp_path)).run()
    assert result.status == "finished", result.error
    assert seen and all(flag is False for flag in seen)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_pickled_code_is_refused_on_resume(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    import torch

    cfg = _small_run(make_config, tmp_path, save_strategy="steps", save_steps=2)
    runner = Runner(cfg)
    runner.subscribe(lambda e: runner.stop() if e.type == "CheckpointSaved" else None)
    stopped = runner.run()
    assert stopped.status == "stopped" and stopped.run_dir is not None
    checkpoint = latest_checkpoint(stopped.run_dir / "checkpoints")
    assert checkpoint is not None
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker), "param_groups": []}, checkpoint / OPTIMIZER_FILE)

    resumed = Runner.from_run_dir(stopped.run_dir).run()
    assert resumed.status == "failed" and resumed.user_error
    assert resumed.error is not None and "cannot be loaded safely" in resumed.error
    assert str(checkpoint / OPTIMIZER_FILE) in resumed.error
    assert not marker.exists(), "unpickling ran code from the checkpoint"


def test_a_run_opens_no_network_port(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], tmp_path: Path
) -> None:
    opened: list[Any] = []
    real_bind, real_listen = socket.socket.bind, socket.socket.listen

    def bind(self: socket.socket, address: Any) -> None:
        opened.append(("bind", address))
        real_bind(self, address)

    def listen(self: socket.socket, *args: Any) -> None:
        opened.append(("listen", args))
        real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(socket.socket, "listen", listen)
    result = Runner(_small_run(make_config, tmp_path)).run()
    assert result.status == "finished", result.error
    assert opened == []


@pytest.mark.parametrize(
    "run_name",
    ["../../escaped", "/etc/cron.d/job", "..", "a/../../b", "..\\..\\windows", "~/home-run", "nul\0byte", "-" * 300],
)
def test_run_names_cannot_place_a_run_outside_the_runs_folder(
    tmp_path: Path, make_config: Callable[..., Any], run_name: str
) -> None:
    box = tmp_path / "box"
    runs = box / "nested" / "runs"
    cfg = make_config(output={"run_name": run_name})
    run = create_run_dir(cfg, runs)
    assert run.path.resolve().parent == runs.resolve()
    assert not run.path.name.startswith(".")
    assert [p.name for p in box.iterdir()] == ["nested"], "nothing was written beside the runs folder"
    assert [p.name for p in (box / "nested").iterdir()] == ["runs"]


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run folder"):
        Runner.from_run_dir(tmp_path)
