"""Fixtures for the workbench tests: a config on disk, app factories with fake engines, and waits on workers
and messages (never on sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input

from engine.config import RunConfig, from_dict, save_config
from tests.tui.fakes import FakePredictor, ScriptedEngine
from tui.app import WorkbenchApp

CONFIG_FILE = "config.yaml"


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """No blinking cursor: screenshots and asserts see the same frame every time."""
    monkeypatch.setattr(Input, "cursor_blink", False)


def set_animations(monkeypatch: pytest.MonkeyPatch, level: str | None) -> None:
    """As if ``TEXTUAL_ANIMATIONS`` were ``level`` (None: unset) when Textual was imported, which is when
    Textual reads it; the workbench looks at the environment when an app is made."""
    import textual.constants

    if level is None:
        monkeypatch.delenv("TEXTUAL_ANIMATIONS", raising=False)
    else:
        monkeypatch.setenv("TEXTUAL_ANIMATIONS", level)
    monkeypatch.setattr(textual.constants, "TEXTUAL_ANIMATIONS", level or "full")


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dates render in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def workbench_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunConfig:
    """The bundled movies sample with minilm, saved as ./config.yaml in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(
        {
            "task": "classification",
            "model": {"name_or_path": "minilm"},
            "data": {"source": "movies-sample", "max_length": 64},
            "train": {"num_train_epochs": 3, "device": "cpu"},
            "output": {"runs_dir": "runs"},
        }
    )
    save_config(cfg, CONFIG_FILE)
    return cfg


@pytest.fixture
def scripted_engine() -> ScriptedEngine:
    return ScriptedEngine("runs/20240101-120000-classification-tiny-bert")


@pytest.fixture
def fake_predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def make_app(
    workbench_config: RunConfig, scripted_engine: ScriptedEngine, fake_predictor: FakePredictor
) -> Callable[..., WorkbenchApp]:
    """A workbench on ./config.yaml with the scripted engine and the fake predictor unless told otherwise."""

    def make(
        *, panel: str = "data", engine: Any = None, predictor: Any = None, cfg: RunConfig | None = None
    ) -> WorkbenchApp:
        return WorkbenchApp(
            cfg or workbench_config,
            CONFIG_FILE,
            runner_factory=engine or scripted_engine,
            predict_backend=predictor or fake_predictor,
            initial_panel=panel,
        )

    return make


async def settle(pilot: Pilot[Any]) -> None:
    """Let every background worker except the training run finish, and the UI process what they posted."""
    app = pilot.app
    await app.panels_mounted.wait()  # the panels mount after the first frame
    for _ in range(20):
        busy = [w for w in app.workers if w.is_running and w.group not in ("train", "quit")]
        if not busy:
            break
        await asyncio.gather(*(w.wait() for w in busy), return_exceptions=True)
        await pilot.pause()
    await pilot.pause()


async def until(pilot: Pilot[Any], predicate: Callable[[], bool], what: str) -> None:
    """Settle until ``predicate`` holds; fail with ``what`` if it never does."""
    await pilot.app.panels_mounted.wait()
    for _ in range(50):
        if predicate():
            return
        await settle(pilot)
    raise AssertionError(f"never happened: {what}")


async def reach(app: Any, *states: str, timeout: float = 180) -> str:
    """Wait for the app's run to reach one of ``states``; fail with where it is stuck instead of hanging."""
    try:
        return str(await asyncio.wait_for(app.controller.wait_for(*states), timeout))
    except TimeoutError:
        raise AssertionError(
            f"run never reached {states}: it is {app.controller.state} ({app.controller.detail})"
        ) from None


class MessageLog:
    """A ``message_hook`` that records messages and lets a test await one (runs on the app's loop)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._waiting: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        for entry in list(self._waiting):
            predicate, future = entry
            if predicate(message) and not future.done():
                future.set_result(message)
                self._waiting.remove(entry)

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 120) -> Message:
        for message in self.messages:
            if predicate(message):
                return message
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting.append((predicate, future))
        return await asyncio.wait_for(future, timeout)


def record_notes(app: WorkbenchApp) -> list[str]:
    """The messages of every notification the app shows from now on."""
    notes: list[str] = []
    show = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        notes.append(message)
        show(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return notes
