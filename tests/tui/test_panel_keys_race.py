"""Panel keys pressed back to back, as a terminal sends them: the last key pressed decides the panel on show,
whatever is still loading, and nothing that finishes later moves the view or the focus."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from textual import events

from engine.browse import DatasetBrowser
from tests.tui.conftest import settle
from tui.app import PANEL_KEYS, WorkbenchApp

BURSTS = {
    "config then train": (["f3", "f4"], "train"),
    "four panels": (["f3", "f4", "f5", "f6"], "runs"),
    "every panel, back to data": (["f3", "f4", "f5", "f6", "f2"], "data"),
}


def post_keys(app: WorkbenchApp, keys: list[str]) -> None:
    """Queue the keys at once, as the terminal driver posts what one read of the terminal holds."""
    for key in keys:
        app.post_message(events.Key(key, None))


def assert_on_show(app: WorkbenchApp, panel: str) -> None:
    assert app.active_panel == panel
    focused = app.focused
    assert focused is not None and app.query_one(f"#{panel}-panel") in focused.ancestors, focused


@pytest.fixture
def slow_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The dataset opens only once the test sets the returned event, so keys surely arrive while it loads."""
    release = threading.Event()
    open_browser = DatasetBrowser.open

    def held(*args: object, **kwargs: object) -> DatasetBrowser:
        release.wait(timeout=60)
        return open_browser(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DatasetBrowser, "open", staticmethod(held))
    yield release
    release.set()


@pytest.mark.parametrize(("keys", "last"), list(BURSTS.values()), ids=list(BURSTS))
async def test_a_burst_of_panel_keys_right_after_start_ends_on_the_last_key(
    make_app: Callable[..., WorkbenchApp], keys: list[str], last: str
) -> None:
    app = make_app()
    async with app.run_test() as pilot:  # the data starts loading as the panels finish mounting
        post_keys(app, keys)
        await settle(pilot)
        assert_on_show(app, last)


@pytest.mark.parametrize(("keys", "last"), list(BURSTS.values()), ids=list(BURSTS))
async def test_a_burst_of_panel_keys_while_the_data_loads_ends_on_the_last_key(
    make_app: Callable[..., WorkbenchApp], slow_data: threading.Event, keys: list[str], last: str
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        post_keys(app, keys)
        await pilot.pause()
        assert app.data_panel.browser is None  # still loading
        slow_data.set()
        await settle(pilot)
        assert app.data_panel.browser is not None
        assert_on_show(app, last)


@pytest.mark.parametrize(("keys", "last"), list(BURSTS.values()), ids=list(BURSTS))
async def test_a_burst_of_panel_keys_after_every_panel_has_loaded_ends_on_the_last_key(
    make_app: Callable[..., WorkbenchApp], keys: list[str], last: str
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        for key in PANEL_KEYS.values():
            await pilot.press(key)
            await settle(pilot)
        post_keys(app, keys)
        await settle(pilot)
        assert_on_show(app, last)


async def test_a_form_built_after_the_user_moved_on_does_not_take_the_view_back(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        post_keys(app, ["f3", "f4"])  # Config asks for its first field's focus before its form exists
        await settle(pilot)
        assert app.config_panel.form_built
        assert_on_show(app, "train")
