"""Each panel through Pilot: what a user sees and can do on it."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, Log, ProgressBar, Select, Static

from engine.config import RunConfig, from_dict, load_config, save_config, validate_field
from engine.errors import ConfigError, PredictError
from engine.events import DeviceUsage, EpochEnded, Evaluated, RunFailed, RunFinished, RunStarted, StepLogged
from engine.runner import Emit
from tests.conftest import run_started, sentiment_rows, write_jsonl
from tests.tui.conftest import CONFIG_FILE, reach, record_notes, set_animations, settle, until
from tests.tui.fakes import FakePredictor, ScriptedEngine, ScriptedRunner, run_script
from tests.tui.helpers import edit_field, sample_rows, summary_for, write_run
from tui.app import WorkbenchApp
from tui.bridge import EventBridge, StepsLogged
from tui.controller import RunState
from tui.panels.config import REMOTE_CODE_NOTE, PathSuggester, parse_text
from tui.panels.data import DataPanel, SampleScreen, SamplesTable
from tui.panels.predict import PredictionView, PredictRequest
from tui.panels.runs import RunsPanel, RunsTable
from tui.panels.train import REMOTE_CODE_MARK
from tui.widgets.epoch_table import EpochTable
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.loss_chart import LossChart
from tui.widgets.score_bars import ScoreBars


def text_of(app: WorkbenchApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


# -- Data -------------------------------------------------------------------------------------------------------


async def test_data_panel_loading_bar_pulses_only_while_loading_and_only_with_animations(
    make_app: Callable[..., WorkbenchApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    pulse = DataPanel._pulse
    for level, pulses in ((None, False), ("full", True)):
        set_animations(monkeypatch, level)
        #: (loading, the bar refreshing on its own timer) after each change of state
        seen: list[tuple[bool, bool]] = []

        def recorded(panel: DataPanel, on: bool) -> None:
            pulse(panel, on)
            seen.append((on, panel.query_one("#data-progress Bar").auto_refresh is not None))  # noqa: B023

        monkeypatch.setattr(DataPanel, "_pulse", recorded)
        app = make_app()
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")  # noqa: B023
            await pilot.pause()
        assert (True, pulses) in seen, level  # a bar of unknown length refreshes 15 times a second
        assert seen[-1] == (False, False), level  # idle, nothing refreshes, hidden or not


async def test_the_samples_cursor_shows_focus_and_a_panel_key_redraws_only_its_row(
    make_app: Callable[..., WorkbenchApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table draws its cursor row one way focused and another blurred; a focus change redraws that row, and a
    panel key back to Data draws no other row of the table again (its lines come from Textual's cache)."""
    from textual.geometry import Region

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        table = app.query_one(SamplesTable)
        await pilot.pause()

        def cursor_background() -> object:
            line = table.render_lines(Region(0, 1, table.size.width, 1))[0]  # row 0, under the header
            return next(iter(line)).style.bgcolor  # type: ignore[union-attr]

        focused = cursor_background()
        await pilot.press("slash")  # to the filter field: the table keeps its place on screen, blurred
        await pilot.pause()
        assert not table.has_focus and cursor_background() != focused
        await pilot.press("escape", "f2")  # out of the field; the panel key focuses its table
        await pilot.pause()
        assert table.has_focus and cursor_background() == focused

        await pilot.press("f4")
        await pilot.pause()
        drawn: list[int] = []
        original = SamplesTable.render_line
        monkeypatch.setattr(SamplesTable, "render_line", lambda self, y: drawn.append(y) or original(self, y))
        await pilot.press("f2")
        await pilot.pause()
        assert table.has_focus and drawn == [1]
        assert cursor_background() == focused


async def test_a_panel_key_back_to_data_neither_redraws_the_tables_scroll_bar_nor_restyles_it(
    make_app: Callable[..., WorkbenchApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Textual's ScrollView redrew its scroll bar whole on every layout pass that took it in (it compared its own
    virtual size with the layout's), and restyled the table when the focus came and went, though no :focus rule
    styles it. The scroll bar still follows the rows."""
    from textual.css.stylesheet import Stylesheet
    from textual.scrollbar import ScrollBar

    from tui.widgets.paged_table import RowList

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        table = app.query_one(SamplesTable)
        assert table.show_vertical_scrollbar, "the test needs more rows than the table shows"
        await pilot.press("f4")
        await pilot.pause()
        drawn: list[object] = []
        restyled: list[object] = []
        render, apply = ScrollBar.render, Stylesheet.apply  # render: the lines Textual has not cached
        monkeypatch.setattr(ScrollBar, "render", lambda bar: drawn.append(bar) or render(bar))
        monkeypatch.setattr(Stylesheet, "apply", lambda css, node, **k: restyled.append(node) or apply(css, node, **k))
        await pilot.press("f2")
        await pilot.pause()
        assert table.has_focus
        assert drawn == []
        assert table not in restyled

        view = app.data_panel.view
        assert view is not None
        table.set_source(RowList([view.page(0, 3)[i] for i in range(3)]))
        await pilot.pause()
        assert not table.show_vertical_scrollbar  # three rows fit
        table.set_source(view)
        await pilot.pause()
        assert table.show_vertical_scrollbar and drawn  # back, and drawn


async def test_tables_that_skip_the_focus_restyle_look_as_a_restyle_would_make_them(
    make_app: Callable[..., WorkbenchApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with FOCUS_STYLED off keeps the styles it had before the focus came or went: right only while no
    :focus or :blur rule styles it or its parts (header, cursor row). Restyling it, focused and blurred, must
    change nothing; the Runs table, which its :focus rule tints, shows that the check would see such a rule."""
    from tui.widgets.paged_table import PagedTable

    def looks(table: PagedTable[Any]) -> list[dict[str, object]]:
        parts = [table.get_component_styles(name) for name in sorted(table.COMPONENT_CLASSES)]
        return [dict(styles.get_render_rules()) for styles in [table.styles, *parts]]

    def restyle_changes(table: PagedTable[Any]) -> bool:
        before = looks(table)
        app.stylesheet.apply(table)
        return looks(table) != before

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        unstyled = [
            ("f2", app.query_one(SamplesTable)),
            ("f4", app.query_one("#train-epochs", EpochTable)),
            ("f6", app.query_one("#runs-epochs", EpochTable)),
        ]
        for key, table in unstyled:
            assert not table.FOCUS_STYLED
            await pilot.press(key)
            for node in table.ancestors_with_self:  # the Runs panel shows its epoch table once a run is opened
                node.display = True
            table.focus()
            await pilot.pause()
            assert table.has_focus
            assert not restyle_changes(table), f"{table.id} focused"
            app.screen.set_focus(None)
            await pilot.pause()
            assert not restyle_changes(table), f"{table.id} blurred"

        monkeypatch.setattr(RunsTable, "FOCUS_STYLED", False)
        runs = app.query_one(RunsTable)
        runs.focus()
        await pilot.pause()
        assert runs.has_focus
        assert restyle_changes(runs)


async def test_a_panel_key_moves_the_focus_without_repainting_the_whole_screen(
    make_app: Callable[..., WorkbenchApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A focus change repainted all of Textual's screen: a whole frame more after every panel key."""
    from textual._compositor import Compositor

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        full: list[object] = []
        original = Compositor.render_full_update
        monkeypatch.setattr(Compositor, "render_full_update", lambda self, **kw: full.append(1) or original(self, **kw))
        for key, panel in (("f4", "train"), ("f2", "data"), ("f3", "config"), ("f2", "data")):
            await pilot.press(key)
            await pilot.pause()
            assert app.focused is not None and f"{panel}-panel" in [n.id for n in app.focused.ancestors_with_self]
        assert full == []


async def test_data_panel_reads_only_the_pages_on_screen(make_app: Callable[..., WorkbenchApp]) -> None:
    rows = sample_rows("movies-sample", "train")
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        table = app.query_one(SamplesTable)
        assert table.row_count == len(rows)
        first = table.row_at(0)
        assert first is not None and first.label == rows[0]["label"]
        assert table.pages_read == 1
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor == len(rows) - 1
        assert table.pages_read == 2  # the first page and the last one, nothing in between
        assert f"{len(rows):,} rows" in text_of(app, "#data-title")


async def test_label_histogram_counts_every_label(make_app: Callable[..., WorkbenchApp]) -> None:
    rows = sample_rows("movies-sample", "train")
    expected = {label: sum(r["label"] == label for r in rows) for label in {r["label"] for r in rows}}
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        bars = app.query_one("#data-histogram", ScoreBars)
        assert {label: int(shown.replace(",", "")) for label, _, shown in bars.rows} == expected


async def test_histogram_rows_of_wide_labels_keep_their_counts_at_80_columns(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    """A CJK or emoji label takes two cells a character: counted in characters, its row ran past the panel's
    edge and lost its count."""
    from rich.cells import cell_len

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        bars = app.query_one("#data-histogram", ScoreBars)
        bars.set_counts([("日本語のラベル", 15), ("positif 😀", 9), ("neg", 3)])
        await pilot.pause()
        lines = [line.plain for line in bars.render().split("\n")]
        assert [cell_len(line) for line in lines] == [bars.size.width] * 3
        assert [line.split()[-1] for line in lines] == ["15", "9", "3"]


async def test_a_histogram_of_more_classes_than_the_column_has_lines_says_how_many_more(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    """Cut at the column's foot, the rarest classes were gone without a word."""
    rows = [{"text": f"review {i}", "label": f"class_{i % 40:02d}"} for i in range(80)]
    cfg = validate_field(workbench_config, "data.source", str(write_jsonl(tmp_path / "many.jsonl", rows)))
    app = make_app(cfg=cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.pause()
        bars = app.query_one("#data-histogram", ScoreBars)
        lines = [line.plain for line in bars.render().split("\n")]
        assert 3 < len(lines) == bars.size.height < 40
        shown, more = lines[:-1], lines[-1]
        assert all(line.startswith("class_") for line in shown)
        assert more == f"… {len(bars.rows) - len(shown)} more"
        assert bars.region.bottom <= app.query_one("#data-side").content_region.bottom


async def test_the_samples_label_column_fits_a_label_of_wide_characters(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    rows = [{"text": f"review {i}", "label": "日本語のラベル" if i % 2 else "neg"} for i in range(8)]
    cfg = validate_field(workbench_config, "data.source", str(write_jsonl(tmp_path / "wide.jsonl", rows)))
    app = make_app(cfg=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        table = app.query_one(SamplesTable)
        assert [c.width for c in table._columns][1] == 14  # seven characters, fourteen cells
        await pilot.pause()
        assert "日本語のラベル" in "".join(s.text for s in table.render_lines(table.region.reset_offset))


async def test_long_labels_that_differ_at_their_ends_stay_apart_in_table_and_histogram(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    from tui.widgets.paged_table import fit

    names = [f"label_with_a_really_long_descriptive_name_number_{n}" for n in (1, 2)]
    rows = [{"text": f"review {i}", "label": names[i % 2]} for i in range(8)]
    cfg = validate_field(workbench_config, "data.source", str(write_jsonl(tmp_path / "long.jsonl", rows)))
    app = make_app(cfg=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.pause()
        table = app.query_one(SamplesTable)
        shown = "".join(s.text for s in table.render_lines(table.region.reset_offset))
        assert "label_wi…umber_1" in shown and "label_wi…umber_2" in shown
        bars = [line.plain.split()[0] for line in app.query_one("#data-histogram", ScoreBars).render().split("\n")]
        assert len(set(bars)) == 2 and all(bar.endswith(("_1", "_2")) for bar in bars)
    from rich.cells import cell_len

    cut = fit("日本語のラベル_12", 9, middle=True)  # two cells a character, cut to exactly the cells given
    assert cell_len(cut) == 9 and "…" in cut and cut.endswith("_12")


async def test_filter_keeps_only_rows_containing_the_text(make_app: Callable[..., WorkbenchApp]) -> None:
    rows = sample_rows("movies-sample", "train")
    matching = [i for i, r in enumerate(rows) if "great" in r["text"].lower()]
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.press("slash", *"great", "enter")
        await until(pilot, lambda: app.data_panel.view is not None and app.data_panel.view.query == "great", "filter")
        table = app.query_one(SamplesTable)
        assert table.row_count == len(matching)
        assert [table.row_at(i).index for i in range(3)] == matching[:3]  # type: ignore[union-attr]
        assert f"{len(matching):,} of {len(rows):,} rows" in text_of(app, "#data-title")
        await pilot.press("slash", *"zzz", "enter")
        await until(pilot, lambda: app.data_panel.view is not None and len(app.data_panel.view) == 0, "filter")
        assert text_of(app, "#data-hint") == "no rows match “zzz”; / edits the filter"
        assert [c.title for c in table._columns][:2] == ["#", "label"], "the label column stays"


async def test_t_shows_the_next_split(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.press("t")
        await until(pilot, lambda: app.data_panel.view is not None and app.data_panel.view.name == "test", "split")
        assert app.query_one(SamplesTable).row_count == len(sample_rows("movies-sample", "test"))
        assert app.query_one("#data-split", Select).value == "test"


async def test_escape_from_the_filter_leaves_the_data_keys_working(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.press("slash", *"xyz", "escape")
        await pilot.pause()
        assert app.focused is app.query_one(SamplesTable), "the table under the filter takes the focus"
        await pilot.press("t")
        await until(pilot, lambda: app.data_panel.view is not None and app.data_panel.view.name == "test", "split")
        assert app.data_panel.view.query == "", "Escape does not apply the filter it left"
        assert app.query_one("#data-filter", Input).value == "", "the field shows the filter in force"


async def test_another_source_shows_its_rows_unfiltered(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.press("slash", *"sushi", "enter")
        await until(pilot, lambda: app.data_panel.view is not None and app.data_panel.view.query == "sushi", "filter")
        app.data_panel.set_config(validate_field(workbench_config, "data.source", "reviews-sample"))
        await until(pilot, lambda: app.data_panel.view is not None, "the other source's rows")
        assert app.data_panel.view.query == "" and app.query_one("#data-filter", Input).value == ""
        assert len(app.data_panel.view) == app.data_panel.view.total_rows


async def open_first_sample(app: WorkbenchApp, pilot: Any) -> SampleScreen:
    """Enter on the Data panel's first row, once the train split shows: the sample view."""
    await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
    await pilot.press("enter")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, SampleScreen)
    return screen


async def test_enter_opens_a_sample_with_its_tokens_and_the_cut_marked(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    cfg = validate_field(workbench_config, "data.max_length", 16)
    first = sample_rows("movies-sample", "train")[0]
    app = make_app(cfg=cfg)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_first_sample(app, pilot)
        await until(pilot, lambda: screen.tokens is not None, "the sample is tokenized")
        assert str(screen.query_one("#sample-text", Static).render()) == first["text"]
        tokens = screen.tokens
        assert tokens is not None and tokens.length == 16 and tokens.truncated
        table = screen.query_one("#sample-tokens", DataTable)
        assert table.row_count == tokens.length + len(tokens.dropped)
        assert str(table.get_row_at(tokens.length)[0]).startswith("✂")
        assert "cut off" in str(screen.query_one("#sample-length", Static).render())
        await pilot.press("end")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("home")
        assert table.cursor_row == 0
        footer = screen.query_one(WorkbenchFooter).render_line(0).text
        assert "Close" in footer and "Filter" not in footer, "the footer has this view's keys, not the table's"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SampleScreen)


async def test_a_row_without_text_opens_with_why_a_run_refuses_it_and_no_tokens(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    rows = [{"text": None, "label": "good"}, *sentiment_rows(11)]
    source = write_jsonl(tmp_path / "holes.jsonl", rows)
    app = make_app(cfg=validate_field(workbench_config, "data.source", str(source)))
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_first_sample(app, pilot)
        length = screen.query_one("#sample-length", Static)
        assert str(length.render()) == 'a run refuses this split: data.text_field "text" is empty in this row'
        assert length.has_class("error") and screen.query_one("#sample-tokens", DataTable).row_count == 0
        await pilot.press("right")  # the next row has its text: tokens again
        await until(pilot, lambda: screen.tokens is not None, "the next sample is tokenized")
        assert not length.has_class("error")


async def test_t_on_a_source_of_one_split_says_there_is_no_other(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(12))  # one file: a train split alone
    app = make_app(cfg=validate_field(workbench_config, "data.source", str(source)))
    notes = record_notes(app)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        await pilot.press("t")
        await pilot.pause()
        assert notes == [f"{source} has one split, train: t has no other to show"]
        assert app.data_panel.view is not None and app.data_panel.view.name == "train"


async def test_a_missing_text_column_shows_one_clear_line(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    app = make_app(cfg=validate_field(workbench_config, "data.text_field", "body"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.error is not None, "the error shows")
        message = text_of(app, "#data-status")
        assert message.startswith('data.text_field: column "body" not in split')
        assert "\n" not in message


async def test_a_source_that_fails_to_load_shows_none_of_the_last_sources_splits(
    make_app: Callable[..., WorkbenchApp], tmp_path: Path
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        select = app.query_one("#data-split", Select)
        assert select.value == "train"
        await pilot.press("f3")
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        broken = tmp_path / "broken.jsonl"
        broken.write_text("{not json\n")
        edit_field(app, "data.source", str(broken))
        await pilot.pause()
        await pilot.press("f2")
        await until(pilot, lambda: app.data_panel.error is not None, "the error shows")
        assert "broken.jsonl" in text_of(app, "#data-status")
        assert select.is_blank() and [v for _p, v in select._options if v is not Select.NULL] == []


async def test_changing_the_data_source_in_config_refreshes_the_data_panel(
    make_app: Callable[..., WorkbenchApp], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(37))
    app = make_app(panel="config")
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "data.source", str(source))
        await pilot.pause()
        await pilot.press("f2")
        await until(pilot, lambda: app.data_panel.view is not None, "the new data shows")
        assert app.query_one(SamplesTable).row_count == 37
        assert str(source) in text_of(app, "#data-title")
        # one file and no split named: the eval set a run will use is held out of train, and the title says so
        assert text_of(app, "#data-title").endswith(
            "a run trains on 33 · eval: 10% of train, stratified by label (4 rows)"
        )


async def test_a_local_model_that_is_not_there_is_marked_in_the_form(
    make_app: Callable[..., WorkbenchApp], scripted_engine: ScriptedEngine, tmp_path: Path
) -> None:
    """As a data source is: the run would refuse it on s; the form says so as it is typed. A hub id passes."""
    missing = str(tmp_path / "no-model")
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "model.name_or_path")
        edit_field(app, "model.name_or_path", missing)
        await pilot.pause()
        assert app.config_panel.problems == {
            "model.name_or_path": f"{missing} is not a folder; give a model folder, a hub id, or minilm"
        }
        assert "1 invalid" in text_of(app, "#config-title")
        await pilot.press("escape", "f4", "s")
        await pilot.pause()
        assert scripted_engine.runners == []
        edit_field(app, "model.name_or_path", "bert-base-uncased")
        await pilot.pause()
        assert app.config_panel.is_valid


async def test_labels_that_are_lists_browse_with_the_runs_one_line_beside_them(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    rows = [{"text": f"review {i}", "label": ["good", "bad"][: 1 + i % 2]} for i in range(6)]
    source = write_jsonl(tmp_path / "lists.jsonl", rows)
    cfg = dataclasses.replace(workbench_config, data=dataclasses.replace(workbench_config.data, source=str(source)))
    app = make_app(cfg=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the rows")
        assert app.data_panel.error is None and len(app.data_panel.view) == 6
        assert text_of(app, "#data-hint") == (
            "data.label_field: column \"label\" holds list values such as ['good']; labels must be strings or integers"
        )


async def test_a_source_without_rows_to_train_on_says_so_in_the_title(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, tmp_path: Path
) -> None:
    """Its files are splits of other names: the panel browses them, and says what a run would refuse."""
    folder = tmp_path / "splits"
    write_jsonl(folder / "data.jsonl", sentiment_rows(8))
    write_jsonl(folder / "other.jsonl", sentiment_rows(4))
    cfg = dataclasses.replace(workbench_config, data=dataclasses.replace(workbench_config.data, source=str(folder)))
    app = make_app(cfg=cfg)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the rows")
        assert "no train split to train on: set data.train_split" in text_of(app, "#data-title")
    one = write_jsonl(tmp_path / "one.jsonl", sentiment_rows(1))
    app = make_app(cfg=dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=str(one))))
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the row")
        assert "no row left to train on: the eval share takes them all" in text_of(app, "#data-title")


async def test_the_epoch_tables_columns_follow_the_configs_task_before_a_run(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "task")
        titles = lambda: [c.title for c in app.query_one(EpochTable)._columns]  # noqa: E731
        assert "macro-F1" in titles()
        edit_field(app, "task", "masked-lm")
        await pilot.pause()
        assert "perplexity" in titles() and "macro-F1" not in titles()


async def test_a_notice_shows_a_value_as_typed_even_where_it_reads_as_markup(
    make_app: Callable[..., WorkbenchApp], scripted_engine: ScriptedEngine
) -> None:
    """ "[/x]" in a typed value is no closing tag: the notice that quotes it neither fails nor drops it."""
    from textual.widgets._toast import Toast

    app = make_app(panel="config")
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await on_field(pilot, app, "launch.gpu_ids")
        edit_field(app, "launch.gpu_ids", "a[/x]")
        await pilot.pause()
        await pilot.press("escape", "f4", "s")
        await until(pilot, lambda: bool(app.screen.query(Toast)), "the notice")
        await pilot.pause()
        shown = " ".join(str(toast.render()) for toast in app.screen.query(Toast))
        assert 'got "a[/x]"' in shown
        assert scripted_engine.runners == []


async def test_a_data_source_that_names_no_data_is_marked_in_the_form_and_blocks_start_not_save(
    make_app: Callable[..., WorkbenchApp],
    workbench_config: RunConfig,
    scripted_engine: ScriptedEngine,
    tmp_path: Path,
) -> None:
    """The checks a run makes on a local path, per keystroke: a run cannot start or be queued with such a source,
    but the config saves (its data may live on another machine, or come later)."""
    missing = str(tmp_path / "missing.jsonl")
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "data.source")
        edit_field(app, "data.source", missing)
        await pilot.pause()
        assert app.config_panel.problems["data.source"].startswith(f"{missing} not found; check the path")
        assert not app.config_panel.is_valid and app.cfg.data.source == missing
        below = str(app.query_one("#config-below", Static).render()).splitlines()
        assert below[0].strip().startswith("✗ /") and "not found" in " ".join(" ".join(below[:4]).split())
        assert "1 invalid" in text_of(app, "#config-title")
        (tmp_path / "empty.jsonl").touch()
        for source, problem in (("~no-such-user-here/a.jsonl", "no user"), (str(tmp_path / "empty.jsonl"), "empty")):
            edit_field(app, "data.source", source)  # each keystroke's text is checked: none may raise
            await pilot.pause()
            assert problem in app.config_panel.problems["data.source"]
        await pilot.press("escape", "f4", "s")
        await pilot.pause()
        assert scripted_engine.runners == [] and app.active_panel == "config"
        await pilot.press("escape", "ctrl+s")
        await pilot.pause()
        assert load_config(CONFIG_FILE).data.source == str(tmp_path / "empty.jsonl")  # saved as typed
        source = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(12))
        edit_field(app, "data.source", str(source))
        await pilot.pause()
        assert app.config_panel.is_valid and app.cfg.data.source == str(source)
    # a config whose file names a source that is not there: marked from the start, as an edit would be
    app = make_app(cfg=validate_field(workbench_config, "data.source", missing), panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        assert "not found" in app.config_panel.problems["data.source"]
        assert "1 invalid" in text_of(app, "#config-title")


async def test_the_data_panel_names_the_eval_split_a_run_will_use(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        rows = len(sample_rows("movies-sample", "test"))
        assert text_of(app, "#data-title").endswith(f"rows · eval: test split ({rows} rows)")
    cfg = validate_field(validate_field(workbench_config, "data.train_size", 5), "data.eval_size", 3)
    app = make_app(cfg=cfg)
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the train split shows")
        assert text_of(app, "#data-title").endswith("a run trains on 5 · eval: test split (3 rows)")


async def test_the_column_fields_offer_the_loaded_datasets_columns(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the data is loaded")
        await pilot.press("f3")
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.config_panel.focus_field("data.label_field")
        await pilot.pause()
        assert "Columns: text, label" in text_of(app, "#config-help")
        suggester = app.config_panel.editor.suggester
        assert suggester is not None
        assert await suggester.get_suggestion("la") == "label"
        # another source: its columns are not known until the Data panel loads it
        edit_field(app, "data.source", "reviews-sample")
        await pilot.pause()
        assert await suggester.get_suggestion("la") is None
        app.config_panel.focus_field("data.source")
        assert app.config_panel.editor.suggester is None  # not a column field


# -- Config -----------------------------------------------------------------------------------------------------


async def test_an_invalid_value_shows_the_engine_message_and_blocks_start(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, scripted_engine: ScriptedEngine
) -> None:
    with pytest.raises(ConfigError) as expected:
        validate_field(workbench_config, "train.learning_rate", -1)
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "train.learning_rate", "-1")
        app.config_panel.focus_field("engine")
        await pilot.pause()
        below = str(app.query_one("#config-below", Static).render())
        assert f"✗ {expected.value.message}" in below.split("learning_rate")[1].splitlines()[1]
        await pilot.press("f4", "s")
        await pilot.pause()
        assert scripted_engine.runners == []
        assert app.active_panel == "config"
        assert app.focused is app.config_panel.editor and app.config_panel.current.path == "train.learning_rate"
        assert f"✗ {expected.value.message}" in str(app.query_one("#config-below", Static).render()).splitlines()[0]


async def edit_then_press(pilot: Any, app: WorkbenchApp, path: str, text: str, key: str) -> None:
    """Type ``text`` into the Config form's field ``path``, then press ``key`` (a save, a reset, a quit)."""
    edit_field(app, path, text)
    await pilot.pause()
    await pilot.press(key)
    await pilot.pause()


async def on_field(pilot: Any, app: WorkbenchApp, path: str) -> None:
    """Wait for the Config form, put its editor on ``path`` and let the focus land there."""
    await until(pilot, lambda: app.config_panel.form_built, "the form is built")
    app.config_panel.focus_field(path)
    await pilot.pause()


def burst(app: WorkbenchApp, *keys: str) -> None:
    """Queue ``keys`` on the app at once, as a fast typist, key repeat or a paste without bracketed paste does
    (Pilot's press waits after each key)."""
    from textual import events

    for key in keys:
        name = {".": "full_stop", "_": "underscore"}.get(key, key)
        app.post_message(events.Key(name, key if len(key) == 1 else None))


async def drain(pilot: Any) -> None:
    for _ in range(10):
        await pilot.pause()


@pytest.mark.parametrize(("field", "typed"), [("train.learning_rate", "0.000123456789"), ("data.train_split", "va_l")])
async def test_keys_typed_in_a_burst_edit_the_field_in_the_order_typed(
    make_app: Callable[..., WorkbenchApp], field: str, typed: str
) -> None:
    """Input runs its backspace binding only once the key has bubbled back up to the app, behind the letters
    queued meanwhile: a backspace typed before a letter deleted it, and the field was left valid with a value
    other than the one typed."""
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, field)
        editor = app.config_panel.editor
        burst(app, "end", *["backspace"] * len(editor.value), *typed)
        await drain(pilot)
        assert editor.value == typed
        burst(app, "left", "left", "backspace", "5", "end", "x")
        await drain(pilot)
        assert editor.value == f"{typed[:-3]}5{typed[-2:]}x"
        editor._cursor_visible = False  # mid-blink: a key that moves the cursor shows it again, as in any Input
        await pilot.press("left")
        assert editor._cursor_visible


async def test_keys_typed_right_after_a_panel_key_go_to_the_panel_shown(make_app: Callable[..., WorkbenchApp]) -> None:
    """The focus moved a turn after the panel key, behind the keys already queued: they went to the field of
    the panel just left (here they would have changed the task in the hidden Config form)."""
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "task")
        before = app.config_panel.config
        burst(app, "f5", *"abc")
        await drain(pilot)
        assert app.query_one("#predict-input", Input).value == "abc"
        assert app.config_panel.config == before and app.config_panel.editor.value == "classification"
        burst(app, "f3", *"ab")  # and back: the form's editor gets them (on the task, a letter picks a choice)
        await drain(pilot)
        assert app.query_one("#predict-input", Input).value == "abc"


async def test_group_by_length_is_a_true_false_choice_with_its_help(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "train.group_by_length")
        assert app.config_panel.editor.value == "true"
        assert "train.group_by_length: Batch samples of similar length" in text_of(app, "#config-help")
        await pilot.press("right")
        assert app.config_panel.editor.value == "false"
        assert app.config_panel.config.train.group_by_length is False
        await pilot.press("right")
        assert app.config_panel.config.train.group_by_length is True


async def test_changed_fields_are_marked_and_reset_brings_back_the_file(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        field = edit_field(app, "train.learning_rate", "0.001")
        await pilot.pause()
        assert str(app.query_one("#config-key", Static).render()).startswith("● learning_rate")
        app.config_panel.focus_field("engine")  # the field is a line of the form now
        await pilot.pause()
        assert "● learning_rate" in str(app.query_one("#config-below", Static).render())
        assert "1 changed from file" in text_of(app, "#config-title")
        assert app.config_panel.config.train.learning_rate == 0.001
        await pilot.press("ctrl+r", "ctrl+r")  # the first names the edits it would drop
        await pilot.pause()
        app.config_panel.focus_field("train.learning_rate")
        assert field.value == str(workbench_config.train.learning_rate)
        assert app.config_panel.config == workbench_config
        assert "as in file" in text_of(app, "#config-title")


async def test_save_writes_the_form_and_load_reads_a_file(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    other = validate_field(workbench_config, "train.num_train_epochs", 7)
    save_config(other, "other.yaml")
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        await edit_then_press(pilot, app, "train.num_train_epochs", "5", "ctrl+s")
        assert load_config(CONFIG_FILE).train.num_train_epochs == 5
        assert "as in file" in text_of(app, "#config-title")
        app.query_one("#config-path", Input).value = "other.yaml"
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.config_panel.editor.value == "7"
        assert app.config_panel.config == other


async def test_save_keeps_the_presets_comments_and_writes_only_what_changed(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    """A save wrote the config whole: the preset's comments went and every default was spelled out."""
    preset = Path(CONFIG_FILE).read_text(encoding="utf-8")
    commented = "# my experiment: why these numbers\n" + preset.replace(
        "num_train_epochs:", "# more epochs overfit\n  num_train_epochs:", 1
    )
    Path(CONFIG_FILE).write_text(commented, encoding="utf-8")
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        await edit_then_press(pilot, app, "train.num_train_epochs", "5", "ctrl+s")
        saved = Path(CONFIG_FILE).read_text(encoding="utf-8")
        assert saved.startswith("# my experiment: why these numbers\n")
        assert "  # more epochs overfit\n  num_train_epochs: 5\n" in saved
        assert len(saved.splitlines()) == len(commented.splitlines())
        await with_path(pilot, app, "copy.yaml", "ctrl+s")  # saved as another file: the same text
        assert Path("copy.yaml").read_text(encoding="utf-8") == saved


async def with_path(pilot: Any, app: WorkbenchApp, path: str, *keys: str) -> str:
    """Type ``path`` in the Config panel's file field, press ``keys``: the status line after them."""
    app.query_one("#config-path", Input).value = path
    await pilot.press(*keys)
    await pilot.pause()
    return text_of(app, "#config-status")


async def test_a_pipe_is_not_loaded_and_a_link_is_saved_through(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    """Read on the UI thread, a pipe would hold the workbench until something writes to it; a preset kept as a
    link to a shared file stays a link."""
    import os

    os.mkfifo("pipe.yaml")
    Path("shared").mkdir()
    save_config(workbench_config, "shared/real.yaml")
    Path("link.yaml").symlink_to(Path("shared/real.yaml").resolve())
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        said = await with_path(pilot, app, "pipe.yaml", "ctrl+l")
        assert "pipe.yaml: not a regular file (a pipe or a device)" in said
        Path("typo.yaml").write_text("task: classification\ntrain:\n  learning_rte: 0.1\n")
        said = await with_path(pilot, app, "typo.yaml", "ctrl+l")  # a key's mistake names its file too
        assert said.startswith('typo.yaml: train.learning_rte: unknown key (did you mean "learning_rate"?)')
        await with_path(pilot, app, "link.yaml", "ctrl+l")
        await edit_then_press(pilot, app, "train.num_train_epochs", "5", "ctrl+s")
        assert Path("link.yaml").is_symlink() and load_config("shared/real.yaml").train.num_train_epochs == 5
        record = Path("runs/20240101-000000-r1")  # a run's config.yaml, which a link must not let a save replace
        record.mkdir(parents=True)
        save_config(workbench_config, record / "config.yaml")
        (record / "events.jsonl").touch()
        Path("best.yaml").symlink_to(record.resolve() / "config.yaml")
        before = (record / "config.yaml").read_bytes()
        said = await with_path(pilot, app, "best.yaml", "ctrl+s", "ctrl+s")
        assert "not saved: best.yaml is the record of run 20240101-000000-r1" in said
        assert (record / "config.yaml").read_bytes() == before


async def test_a_file_field_naming_no_user_a_folder_or_nothing_says_so(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.query_one("#config-path", Input).value = "~nosuchuser0/x.yaml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "not saved: ~nosuchuser0/x.yaml: no user 'nosuchuser0'" in text_of(app, "#config-status")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert "~nosuchuser0/x.yaml: no user 'nosuchuser0'" in text_of(app, "#config-status")
        assert app.is_running
        Path("presets").mkdir()
        for typed, said in (
            ("presets/", "not saved: presets/ is a folder; name a file in it (e.g. presets/my-run.yaml)"),
            ("", "not saved: type a file name in the path field (e.g. sample_configs/my-run.yaml)"),
        ):
            app.query_one("#config-path", Input).value = typed
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert text_of(app, "#config-status") == said
        app.query_one(
            "#config-path", Input
        ).value = "presets/mine.yaml"  # what it said was about the field's last value
        await pilot.pause()
        assert text_of(app, "#config-status") == ""


async def test_reset_and_quit_over_unsaved_edits_each_ask_once(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        notes = record_notes(app)
        await edit_then_press(pilot, app, "train.num_train_epochs", "5", "ctrl+r")
        assert app.config_panel.config.train.num_train_epochs == 5, "the edit is kept"
        assert text_of(app, "#config-status") == (
            "1 unsaved change(s) (train.num_train_epochs); ctrl+r again drops them"
        )
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.config_panel.config.train.num_train_epochs == 3
        await edit_then_press(pilot, app, "train.num_train_epochs", "6", "ctrl+q")
        assert app.is_running and app.return_code is None
        assert notes == [
            "1 unsaved change(s) (train.num_train_epochs) in Config: ctrl+s there saves them; q or ctrl+q again quits"
        ]
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0


async def test_save_under_a_file_names_that_file(make_app: Callable[..., WorkbenchApp]) -> None:
    Path("afile").write_text("not a folder\n")
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.query_one("#config-path", Input).value = "afile/x.yaml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert text_of(app, "#config-status") == "cannot save to afile/x.yaml (afile is a file); pick another path"
        assert Path("afile").read_text() == "not a folder\n"


async def test_a_save_refused_for_a_bad_field_stops_saying_so_once_the_field_is_fixed(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        await edit_then_press(pilot, app, "train.learning_rate", "fast", "ctrl+s")
        assert text_of(app, "#config-status").startswith("not saved: fix train.learning_rate first")
        edit_field(app, "train.num_train_epochs", "4")  # another field: the refusal still holds
        await pilot.pause()
        assert text_of(app, "#config-status").startswith("not saved: fix train.learning_rate first")
        edit_field(app, "train.learning_rate", "2e-4")
        await pilot.pause()
        assert text_of(app, "#config-status") == ""
        assert not app.query_one("#config-status").display


async def test_save_over_another_file_and_load_over_edits_each_ask_for_their_key_again(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    other = validate_field(workbench_config, "train.num_train_epochs", 7)
    save_config(other, "other.yaml")
    before = Path("other.yaml").read_text()
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "train.num_train_epochs", "5")
        await pilot.pause()
        path = app.query_one("#config-path", Input)
        path.value = "other.yaml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert Path("other.yaml").read_text() == before, "a file the form did not come from is kept"
        assert "other.yaml exists and is not the file this form came from; ctrl+s again replaces it" in text_of(
            app, "#config-status"
        )
        await pilot.press("ctrl+l")  # another key in between: the save waits for its own key again
        await pilot.pause()
        assert app.config_panel.config.train.num_train_epochs == 5, "the edit is kept"
        assert "1 unsaved change(s) (train.num_train_epochs); ctrl+l again drops them" in text_of(app, "#config-status")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert Path("other.yaml").read_text() == before
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert load_config("other.yaml").train.num_train_epochs == 5
        assert text_of(app, "#config-status") == "saved other.yaml"
        await pilot.press("ctrl+s")  # now the form's own file: saved at once
        await pilot.pause()
        assert text_of(app, "#config-status") == "saved other.yaml"
        path.value = CONFIG_FILE
        await pilot.press("ctrl+l")  # nothing unsaved: loads at once
        await pilot.pause()
        assert app.config_panel.config == load_config(CONFIG_FILE)


async def test_q_queues_the_form_as_it_is_and_refuses_an_invalid_one(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    from engine import queue

    runs = workbench_config.output.runs_dir
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "train.num_train_epochs", "0")
        await pilot.pause()
        await pilot.press("escape", "Q")  # out of the field, so that Q is a key, not a letter
        assert "not queued: fix train.num_train_epochs first" in text_of(app, "#config-status")
        assert queue.list_queue(runs) == []
        edit_field(app, "train.num_train_epochs", "5")
        await pilot.pause()
        await pilot.press("escape", "Q")
        (entry,) = queue.list_queue(runs)
        assert entry.run_config().train.num_train_epochs == 5
        assert entry.label == f"{Path(CONFIG_FILE).name} train.num_train_epochs=5"
        assert text_of(app, "#config-status").startswith(f"queued #1 in {runs}/ (1 waiting); Q in the Runs panel")


async def test_escape_from_a_field_says_where_the_focus_is_and_enter_goes_back_in(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    """Escape leaves the focus on the form's frame: its hint must not read as the file field's, whose
    letters would then be taken for keys (a path with a q in it quit the app)."""
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.config_panel.editor.focus()
        await pilot.press("escape")
        frame = app.query_one("#config-form")
        assert app.focused is frame
        field = app.config_panel.current.path
        assert text_of(app, "#config-help").startswith(f"out of the field: single keys act · enter edits {field}")
        await pilot.press("shift+tab")
        assert app.focused is app.query_one("#config-path")
        assert text_of(app, "#config-help").startswith("ctrl+l loads this file")
        await pilot.press("tab")
        assert app.focused is frame
        await pilot.press("down", "down", "up")  # out of the field too, ↑ and ↓ pick the field
        after = app.config_panel.specs[app.config_panel.specs.index(app.config_panel.by_path[field]) + 1].path
        assert app.config_panel.current.path == after and app.focused is frame
        assert text_of(app, "#config-help").startswith(f"out of the field: single keys act · enter edits {after}")
        await pilot.press("enter")
        assert app.focused is app.config_panel.editor and app.config_panel.current.path == after


async def test_keys_typed_back_to_back_edit_the_field_the_editor_is_on(make_app: Callable[..., WorkbenchApp]) -> None:
    from textual import events

    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "train.num_train_epochs")
        # posted all at once, as a fast typist's keys reach the app: none waits for the one before to be handled;
        # the editor selects a field's text as it comes to it, so typing replaces the value
        for key in ["7", "down", "9", "up"]:
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        await pilot.pause()
        await pilot.pause()
        train = app.config_panel.config.train
        assert (train.num_train_epochs, train.per_device_train_batch_size) == (7, 9)
        assert app.config_panel.current.path == "train.num_train_epochs"
        assert app.config_panel.editor.value == "7"


async def test_a_click_on_a_fields_line_edits_that_field(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "data.eval_fraction", "2")  # an error line under it: the lines after it still map
        app.config_panel.focus_field("data.label_field")
        await pilot.pause()
        below = app.query_one("#config-below", Static)
        line = next(n for n, text in enumerate(str(below.render()).splitlines()) if "max_length" in text)
        await pilot.click(below, offset=(4, line))
        assert app.config_panel.current.path == "data.max_length"
        assert app.focused is app.config_panel.editor and app.config_panel.editor.value == "64"
        above = app.query_one("#config-above", Static)
        line = next(n for n, text in enumerate(str(above.render()).splitlines()) if "name_or_path" in text)
        await pilot.click(above, offset=(4, line))
        assert app.config_panel.current.path == "model.name_or_path"
        assert app.config_panel.editor.value == "minilm"


async def test_a_choice_field_is_stepped_through_not_typed_into(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await on_field(pilot, app, "train.group_by_length")
        await pilot.press("z", "backspace", "ctrl+u", "ctrl+k")  # no value starts with z; nothing deletes
        assert app.config_panel.editor.value == "true" and app.config_panel.config.train.group_by_length is True
        await pilot.press("f")  # a value's first letter picks it
        assert app.config_panel.config.train.group_by_length is False and app.config_panel.is_valid
        await pilot.press("T")
        assert app.config_panel.editor.value == "true" and app.config_panel.config.train.group_by_length is True
        with pytest.raises(ConfigError, match="expected one of true, false"):
            parse_text(app.config_panel.by_path["train.group_by_length"], "yes")  # pasted or loaded, not typed


def test_null_typed_where_null_is_allowed_is_null_not_the_word() -> None:
    """An empty optional field's placeholder says null: typing it, or YAML's ~, means what it says."""
    from tui.panels.config import field_specs

    specs = {spec.path: spec for spec in field_specs()}
    for path in ("data.eval_split", "data.label_field", "launch.accelerate_config", "launch.gpu_ids"):
        assert specs[path].optional
        assert parse_text(specs[path], "null") is None and parse_text(specs[path], " ~ ") is None
    assert parse_text(specs["data.source"], "null") == "null"  # a required text: a file may be named so


async def test_the_editor_moves_by_ten_and_leaves_the_form_at_its_ends(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        panel = app.config_panel
        await on_field(pilot, app, panel.specs[0].path)
        await pilot.press("pagedown", "pagedown")
        assert panel.cursor == 20
        await pilot.press("pageup")
        assert panel.cursor == 10
        await pilot.press("shift+tab", *["up"] * 12)
        assert panel.cursor == 0 and app.focused is panel.editor
        await pilot.press("shift+tab")  # at the first field: the focus leaves the editor
        assert app.focused is not panel.editor and panel.cursor == 0
        await on_field(pilot, app, panel.specs[-1].path)
        await pilot.press("tab")
        assert app.focused is not panel.editor and panel.cursor == len(panel.specs) - 1


async def test_a_refused_value_comes_back_as_typed(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "train.num_train_epochs", "1.50")
        edit_field(app, "train.lr_scheduler_type", "cos")
        app.config_panel.focus_field("engine")
        await pilot.pause()
        text = str(app.query_one("#config-below", Static).render())
        assert "num_train_epochs" in text and " 1.50" in text
        # the engine's message, wrapped beside the key column, whole (its lines are cut at the form's edge)
        message = app.config_panel.errors["train.lr_scheduler_type"][1]
        assert " ".join(message.split()) in " ".join(text.replace("✗", "").split())
        assert max(len(line) for line in text.splitlines()) <= 80
        app.config_panel.focus_field("train.num_train_epochs")
        assert app.config_panel.editor.value == "1.50"


async def test_fixing_one_field_clears_the_error_it_caused_on_another(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        edit_field(app, "data.eval_split", "test")
        await pilot.pause()
        assert app.config_panel.is_valid
        edit_field(app, "data.eval_fraction", "0.2")  # a share of train, beside a named split
        await pilot.pause()
        assert not app.config_panel.is_valid
        assert "data.eval_fraction" in app.config_panel.errors
        edit_field(app, "data.eval_split", "auto")
        await pilot.pause()
        assert app.config_panel.is_valid
        cfg = app.config_panel.config
        assert (cfg.data.eval_split, cfg.data.eval_fraction) == ("auto", 0.2)


async def test_report_to_takes_a_comma_separated_list(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.config_panel.focus_field("output.report_to")
        assert app.config_panel.editor.value == ""
        field = edit_field(app, "output.report_to", "tensorboard, wandb")
        await pilot.pause()
        assert app.config_panel.config.output.report_to == ["tensorboard", "wandb"]
        field.value = "tensorbord"
        await pilot.pause()
        assert "did you mean" in app.config_panel.errors["output.report_to"][1]
        field.value = ""
        await pilot.pause()
        assert app.config_panel.is_valid and app.config_panel.config.output.report_to == []


async def test_an_optional_switch_offers_null_and_takes_it_back(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        app.config_panel.focus_field("train.greater_is_better")
        assert app.config_panel.editor.value == "null"
        await pilot.press("left")  # false: eval_loss, the default metric, is better lower (true is refused)
        assert app.config_panel.config.train.greater_is_better is False
        await pilot.press("right")
        await pilot.pause()
        assert app.config_panel.config.train.greater_is_better is None and app.config_panel.is_valid


async def test_path_input_completes_yaml_files_and_folders(workbench_config: RunConfig) -> None:
    Path("configs").mkdir()
    suggester = PathSuggester()
    assert await suggester.get_suggestion("conf") in ("config.yaml", "configs/")
    assert await suggester.get_suggestion("config.") == "config.yaml"
    assert await suggester.get_suggestion("nothing-like-this") is None


async def test_trust_remote_code_on_is_marked_beside_the_field_and_in_the_train_status(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        note = app.query_one("#remote-code-note", Static)
        assert not note.display and REMOTE_CODE_MARK not in app.train_panel.status_text()
        edit_field(app, "model.trust_remote_code", "true")
        await pilot.pause()
        assert app.config_panel.config.model.trust_remote_code is True
        assert note.display and str(note.render()) == REMOTE_CODE_NOTE
        app.config_panel.focus_field("engine")  # off the field: its line carries the note
        await pilot.pause()
        assert not note.display
        assert f"true  {REMOTE_CODE_NOTE}" in str(app.query_one("#config-below", Static).render())
        await pilot.press("f4")
        await pilot.pause()
        assert REMOTE_CODE_MARK in text_of(app, "#train-status")
        await pilot.press("s")
        await reach(app, "finished")
        assert REMOTE_CODE_MARK in text_of(app, "#train-status")  # still there once the run reports its model
        await pilot.press("f3")
        edit_field(app, "model.trust_remote_code", "false")
        await pilot.pause()
        assert not note.display and REMOTE_CODE_MARK not in app.train_panel.status_text()


# -- Train ------------------------------------------------------------------------------------------------------


async def test_the_train_header_names_the_device_as_it_is_read(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="train")
    async with app.run_test(size=(160, 30)) as pilot:
        started = next(e for e in run_script("runs/x") if isinstance(e, RunStarted))
        app.train_panel.handle(started)
        await pilot.pause()
        assert " · cpu · " in text_of(app, "#train-status")  # before the first reading: the device's name
        app.train_panel.handle(DeviceUsage("NVIDIA H100", 87.0, 6144.0, 81920.0))
        await pilot.pause()
        assert " · NVIDIA H100 87% 6.0 GiB/80.0 GiB · " in text_of(app, "#train-status")
        app.train_panel.handle(DeviceUsage("CPU", 195.0, 900.0, 24000.0))
        await pilot.pause()
        assert " · CPU 195% 900 MiB RSS · " in text_of(app, "#train-status")
        app.train_panel.handle(next(e for e in run_script("runs/x") if isinstance(e, RunFinished)))
        await pilot.pause()
        assert " · cpu · " in text_of(app, "#train-status")  # a reading is shown only while it is live


async def test_the_train_header_says_how_much_of_a_lora_run_trains(make_app: Callable[..., WorkbenchApp]) -> None:
    import dataclasses

    app = make_app(panel="train")
    async with app.run_test(size=(200, 30)) as pilot:
        started = next(e for e in run_script("runs/x") if isinstance(e, RunStarted))
        lora = dataclasses.replace(started, num_parameters=22_700_000, trainable_parameters=204_300, adapter="LoRA r=8")
        app.train_panel.handle(lora)
        await pilot.pause()
        assert text_of(app, "#train-status").endswith(" · LoRA r=8 · 0.9 % of 22.7 M parameters trainable")
        app.train_panel.handle(dataclasses.replace(lora, num_processes=2, backend="gloo", batch_size=16))
        await pilot.pause()
        assert text_of(app, "#train-status").endswith(" trainable · 2 processes · gloo · batch 16")


async def test_train_panel_streams_every_step_epoch_rows_and_log_lines(
    make_app: Callable[..., WorkbenchApp], scripted_engine: ScriptedEngine
) -> None:
    script = run_script(scripted_engine.run_dir)
    steps = [e for e in script if isinstance(e, StepLogged)]
    app = make_app(panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await reach(app, "finished")
        await pilot.pause()
        chart = app.query_one("#train-chart", LossChart)
        assert chart.series["train loss (step)"].points == [(s.step, s.loss) for s in steps]
        assert len(chart.series["eval loss"].points) == 3
        epochs = app.query_one("#train-epochs", EpochTable)
        assert [epochs.cells_at(i)[0] for i in range(epochs.row_count)] == ["1", "2", "3"]
        assert epochs.cells_at(0)[1] == "1.0000"  # train loss of epoch 1 in the script
        log_text = "\n".join(app.query_one("#train-log", Log).lines)
        assert "a library warning shown in the log pane" in log_text
        status = app.train_panel.status_text()
        assert "cpu" in status and "fp32" in status and "1.2M params" in status


async def test_a_burst_of_steps_is_one_ui_update_and_loses_no_point(make_app: Callable[..., WorkbenchApp]) -> None:
    handled: list[StepsLogged] = []
    app = make_app(panel="train")
    async with app.run_test(message_hook=lambda m: handled.append(m) if isinstance(m, StepsLogged) else None) as pilot:
        bridge = app.controller.bridge = EventBridge(app.post_message)
        for i in range(1, 2001):  # queued faster than the UI runs: nothing is handled until we yield
            bridge(StepLogged(i, 2000, i / 2000, 1.0 / i, 1e-4, 100.0, i * 0.01, 1.0, time=0.0))
        await pilot.pause()
        assert len(handled) == 1
        assert len(app.query_one("#train-chart", LossChart).series["train loss (step)"].points) == 2000


def test_the_bridge_posts_once_for_the_steps_that_wait_and_again_after_they_are_taken() -> None:
    posted: list[Any] = []
    bridge = EventBridge(posted.append)
    steps = [StepLogged(i, 9, i / 9, 1.0, 1e-4, 100.0, i * 0.01, 1.0, time=0.0) for i in range(1, 10)]
    for step in steps[:5]:
        bridge(step)
    assert [type(m) for m in posted] == [StepsLogged]
    assert bridge.take_steps() == steps[:5]
    for step in steps[5:]:
        bridge(step)
    assert [type(m) for m in posted] == [StepsLogged, StepsLogged]
    assert bridge.take_steps() == steps[5:] and bridge.take_steps() == []


def test_the_bridge_takes_a_burst_as_it_takes_the_same_events_one_by_one() -> None:
    """An attach hands the bridge a run's whole history at once: the same messages, counts and steps."""
    steps = [StepLogged(i, 9, i / 9, 1.0, 1e-4, 100.0, i * 0.01, 1.0, time=0.0) for i in range(1, 10)]
    ended = EpochEnded(epoch=1, step=5, train_loss=1.0, duration_seconds=1.0, time=0.0)
    burst = [run_started(), *steps[:5], ended, *steps[5:], ended]

    def seen(bridge: EventBridge, posted: list[Any]) -> list[Any]:
        out = []
        for message in posted:
            if isinstance(message, StepsLogged):
                out.append(("steps", bridge.take_steps()))
            else:
                out.append((message.event, message.steps_before, bridge.take_steps(message.steps_before)))
        return out

    one_by_one: list[Any] = []
    single = EventBridge(one_by_one.append)
    for event in burst:
        single(event)
    at_once: list[Any] = []
    many = EventBridge(at_once.append)
    many.many(burst)
    assert [type(m) for m in at_once] == [type(m) for m in one_by_one]
    assert seen(many, at_once) == seen(single, one_by_one)


async def test_an_engine_failure_shows_and_a_new_run_can_start(make_app: Callable[..., WorkbenchApp]) -> None:
    message = 'data.text_field: column "body" not in split train (columns: text, label)'
    failing = ScriptedEngine("runs/failing", fail=message)
    working = ScriptedEngine("runs/working")
    engines = iter([failing, working])
    app = make_app(panel="train", engine=lambda cfg, subs: next(engines)(cfg, subs))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        assert await reach(app, "failed") == "failed"
        await pilot.pause()
        box = app.query_one("#train-error", Static)
        assert box.display and str(box.render()) == f"✗ {message}  (fix it in Config (F3) and press s to start again)"
        await pilot.press("s")
        assert await reach(app, "finished") == "finished"
        await pilot.pause()
        assert not app.query_one("#train-error").display
        assert len(working.runners) == 1
        app.train_panel.reset(app.cfg, "attached to 20240101-run", from_form=False)  # s would not start its config
        app.train_panel.show_failure(message, user_error=True)
        assert str(box.render()) == f"✗ {message}  (n in Runs (F6) starts a config from this run to fix)"


@pytest.mark.parametrize(
    ("traceback", "then"),
    [(None, "r in Runs resumes it from its last checkpoint"), ("Traceback …", "the log below has the traceback")],
)
async def test_a_run_that_failed_without_a_user_error_is_not_told_to_fix_the_config(
    make_app: Callable[..., WorkbenchApp], traceback: str | None, then: str
) -> None:
    app = make_app(panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        killed = "the training process was killed by signal 9 before the run ended"
        app.train_panel.handle(RunFailed(error=killed, user_error=False, traceback=traceback))
        await pilot.pause()
        assert str(app.query_one("#train-error", Static).render()) == f"✗ {killed}  ({then})"


# -- Predict ----------------------------------------------------------------------------------------------------


async def test_enter_predicts_with_base_and_fine_tuned_side_by_side(
    make_app: Callable[..., WorkbenchApp], fake_predictor: Callable[[PredictRequest], PredictionView]
) -> None:
    app = make_app(panel="predict")
    async with app.run_test(size=(100, 30)) as pilot:
        app.predict_panel.set_tuned("runs/20240101-run", "picked in Runs")
        await pilot.press(*"This is a [MASK] movie!", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        request = fake_predictor.requests[-1]  # type: ignore[attr-defined]
        assert (request.text, request.base, request.tuned) == ("This is a [MASK] movie!", "minilm", "runs/20240101-run")
        base_bars = app.query_one("#predict-base ScoreBars", ScoreBars)
        tuned_bars = app.query_one("#predict-tuned ScoreBars", ScoreBars)
        assert [(r[0], r[1]) for r in base_bars.rows] == [("positive", 0.52), ("negative", 0.48)]
        assert [(r[0], r[1]) for r in tuned_bars.rows] == [("positive", 0.91), ("negative", 0.09)]
        base_warning = app.query_one("#predict-base .predict-warning", Static)
        assert base_warning.display and "newly initialized" in str(base_warning.render())
        assert not app.query_one("#predict-tuned .predict-warning").display


async def test_a_base_classifier_asked_before_the_data_panel_loaded_waits_for_the_classes(
    make_app: Callable[..., WorkbenchApp],
    fake_predictor: Callable[[PredictRequest], PredictionView],
    workbench_config: RunConfig,
) -> None:
    """Opened on another panel (tunebench attach opens on Train), the Data panel has read nothing: the base
    classifier waits for the data's classes rather than answer as a bare checkpoint's two labels."""
    write_jsonl(Path("data") / "train.jsonl", [{"text": f"review {i}", "label": v} for i, v in enumerate([3, 1, 2])])
    cfg = dataclasses.replace(workbench_config, data=dataclasses.replace(workbench_config.data, source="data"))
    app = make_app(panel="predict", cfg=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        assert app.data_panel.browser is None
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        assert [r.label_names for r in fake_predictor.requests] == [("1", "2", "3")]  # type: ignore[attr-defined]


async def test_a_base_classifier_is_named_with_the_datas_classes_as_a_run_would_start_it(
    make_app: Callable[..., WorkbenchApp],
    fake_predictor: Callable[[PredictRequest], PredictionView],
    workbench_config: RunConfig,
) -> None:
    """Before any run, the base model's untrained classifier has the data's classes, numbered as a run numbers
    them (train and the eval split "auto" picks, numbers in numeric order), not the two placeholder labels of
    a bare checkpoint; another split, source or task, or too small a model.num_labels, forgets them."""
    labels = [10, 2, 33, 2]
    write_jsonl(Path("data") / "train.jsonl", [{"text": f"review {i}", "label": v} for i, v in enumerate(labels)])
    write_jsonl(Path("data") / "test.jsonl", [{"text": "held out", "label": 7}])
    cfg = dataclasses.replace(workbench_config, data=dataclasses.replace(workbench_config.data, source="data"))
    assert cfg.data.eval_split == "auto"
    app = make_app(panel="data", cfg=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.predict_panel.base_classes() != [], "the data's classes reach Predict")
        await pilot.press("f5", "ctrl+t", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        assert fake_predictor.requests[-1].label_names == ("2", "7", "10", "33")  # type: ignore[attr-defined]

        def with_(**changes: Any) -> RunConfig:
            model = dataclasses.replace(cfg.model, **changes.pop("model", {}))
            data = dataclasses.replace(cfg.data, **changes.pop("data", {}))
            return dataclasses.replace(cfg, model=model, data=data, **changes)

        app.predict_panel.set_config(with_(model={"num_labels": 5}))
        assert app.predict_panel.base_classes() == ["2", "7", "10", "33", "LABEL_4"]
        assert app.predict_panel.result is None, "the bars of four classes do not stand for a model of five"
        for other in (
            with_(model={"num_labels": 3}),
            with_(data={"eval_split": "validation"}),
            with_(data={"source": "reviews-sample"}),
            with_(task="masked-lm"),
        ):
            app.predict_panel.set_config(other)
            assert app.predict_panel.base_classes() == [], other


async def test_the_fine_tuned_side_of_a_lora_run_says_it_is_an_adapter_on_its_base(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    run = Path("runs") / "20240101-120000-classification-minilm"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text(workbench_config.to_yaml())
    (run / "model" / "config.json").write_text("{}")
    (run / "model" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "minilm"}))
    app = make_app(panel="predict")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        app.predict_panel.set_tuned(str(run), "picked in Runs")
        await pilot.pause()
        heading = text_of(app, "#predict-tuned .side-title")
        assert heading == f"fine-tuned · {run.name} (adapter on minilm, picked in Runs)"


def _run_folder(cfg: RunConfig, name: str, **changes: Any) -> str:
    """A run folder holding only its config.yaml: what the Predict panel reads before the model loads."""
    run = Path("runs") / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dataclasses.replace(cfg, **changes).to_yaml())
    return str(run)


async def test_another_fine_tuned_run_clears_the_results_and_brings_its_task_and_base(
    make_app: Callable[..., WorkbenchApp],
    fake_predictor: Callable[[PredictRequest], PredictionView],
    workbench_config: RunConfig,
) -> None:
    """Results of one run never stay under another run's name; the title and base side follow the run."""
    classifier = _run_folder(workbench_config, "20240101-120000-classification-minilm")
    mlm = _run_folder(
        workbench_config,
        "20240102-120000-masked-lm-tiny",
        task="masked-lm",
        model=dataclasses.replace(workbench_config.model, name_or_path="tiny-bert"),
    )
    app = make_app(panel="predict")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        panel = app.predict_panel
        panel.set_tuned(classifier, "picked in Runs")
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: panel.result is not None, "predictions show")
        assert app.query("#predict-tuned ScoreBars")

        panel.set_tuned(mlm, "this session's run")
        await pilot.pause()
        assert panel.result is None and not app.query("#predict-sides ScoreBars")
        assert "press Enter to predict with this run" in text_of(app, "#predict-tuned .predict-results Static")
        assert "fill-mask · base tiny-bert" in text_of(app, "#predict-title")
        assert text_of(app, "#predict-base .side-title") == "base · tiny-bert"
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: panel.result is not None, "predictions show")
        request = fake_predictor.requests[-1]  # type: ignore[attr-defined]
        assert (request.text, request.base, request.tuned) == ("This is a [MASK] movie!", "tiny-bert", mlm)


async def test_ctrl_b_sets_the_run_aside_and_brings_it_back(
    make_app: Callable[..., WorkbenchApp],
    workbench_config: RunConfig,
    fake_predictor: Callable[[PredictRequest], PredictionView],
) -> None:
    run = _run_folder(workbench_config, "20240101-120000-classification-minilm")
    (Path(run) / "model").mkdir()  # its classifier's five classes, which the base beside it took on
    labels = {str(i): str(i + 1) for i in range(5)}
    (Path(run) / "model" / "config.json").write_text(json.dumps({"id2label": labels}))
    app = make_app(panel="predict")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        panel = app.predict_panel
        panel._status("every [MASK] is past the first 512 tokens", error=True)
        panel.set_tuned(run, "picked in Runs")
        await pilot.pause()
        assert text_of(app, "#predict-status") == "", "a message about the last models goes with their results"
        await pilot.press("ctrl+b")
        assert panel.tuned is None
        assert "ctrl+b predicts with 20240101-120000" in text_of(app, "#predict-tuned .predict-results Static")
        assert text_of(app, "#predict-title").endswith(
            "fine-tuned 20240101-120000-classification-minilm set aside (ctrl+b)"
        )
        await pilot.press("ctrl+t", "enter")  # the base alone keeps the set-aside run's classes, not two new ones
        await until(pilot, lambda: panel.result is not None, "predictions show")
        request = fake_predictor.requests[-1]  # type: ignore[attr-defined]
        assert request.tuned is None and request.label_names == ("1", "2", "3", "4", "5")
        await pilot.press("ctrl+b")  # the text whose answer showed is asked of both models: no empty sides
        assert (panel.tuned, panel.tuned_origin) == (run, "picked in Runs")
        await until(pilot, lambda: panel.result is not None and panel.result.tuned is not None, "both answer")
        assert fake_predictor.requests[-1].text == request.text  # type: ignore[attr-defined]
        await pilot.press("ctrl+b")
        await until(pilot, lambda: panel.result is not None and panel.result.tuned is None, "the base answers")
        assert len(fake_predictor.requests) == 3  # type: ignore[attr-defined]


async def test_a_prediction_for_models_since_replaced_is_dropped_and_asked_again(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    release = threading.Event()
    fake = FakePredictor()
    answered: list[PredictionView] = []

    def slow(request: PredictRequest) -> PredictionView:
        if request.tuned is None:  # the request made before the run was set
            release.wait(10)
        view = fake(request)
        answered.append(view)
        return view

    run = _run_folder(workbench_config, "20240101-120000-classification-minilm")
    app = make_app(panel="predict", predictor=slow)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t", "enter")
        app.predict_panel.set_tuned(run, "this session's run")  # while the base model is being asked
        await until(pilot, lambda: app.predict_panel.result is not None, "the answer of both models")
        assert [r.tuned for r in fake.requests] == [run], "the same text, asked again of the new models"
        release.set()
        await until(pilot, lambda: len(answered) == 2, "the first request's late answer")
        await pilot.pause()
        assert app.predict_panel.result is answered[0] and app.query("#predict-tuned ScoreBars")


async def test_an_earlier_requests_late_answer_does_not_replace_the_latest(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    release = threading.Event()
    fake = FakePredictor()

    def slow_first(request: PredictRequest) -> PredictionView:
        if request.text == "first [MASK]":
            release.wait(10)
        return fake(request)

    app = make_app(panel="predict", predictor=slow_first)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press(*"first [MASK]", "enter")
        await pilot.press("home", "ctrl+k", *"second [MASK]", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "the second answer shows")
        shown = app.predict_panel.result
        release.set()
        await until(pilot, lambda: len(fake.requests) == 2, "the first answer comes back")
        await pilot.pause()
        assert app.predict_panel.result is shown and not app.predict_panel.busy


async def test_before_any_run_only_the_base_model_predicts(
    make_app: Callable[..., WorkbenchApp], fake_predictor: Callable[[PredictRequest], PredictionView]
) -> None:
    app = make_app(panel="predict")
    async with app.run_test() as pilot:
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        assert fake_predictor.requests[-1].tuned is None  # type: ignore[attr-defined]
        hint = app.query_one("#predict-tuned .predict-results Static", Static)
        assert "train a run" in str(hint.render())


async def test_a_prediction_error_shows_its_message_and_the_panel_stays_usable(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    def refuse(request: PredictRequest) -> PredictionView:
        raise PredictError("text: no [MASK] in the text; type [MASK] where the model should fill in a word")

    answers = iter([FakePredictor(), refuse])
    app = make_app(panel="predict", predictor=lambda request: next(answers)(request))
    async with app.run_test() as pilot:
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        await pilot.press("home", "ctrl+k", *"no mask here", "enter")
        await until(pilot, lambda: "no [MASK]" in text_of(app, "#predict-status"), "the error shows")
        assert app.query_one("#predict-status").has_class("error")
        assert app.focused is app.query_one("#predict-input")
        assert not app.query("#predict-sides ScoreBars"), "the last text's results do not stay under the error"


async def test_a_fine_tuned_model_that_fails_to_load_points_to_the_base_alone(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    message = "model: the run runs/x has no model or checkpoint yet"

    def refuse(request: PredictRequest) -> PredictionView:
        raise PredictError(message)

    app = make_app(panel="predict", predictor=refuse)
    async with app.run_test() as pilot:
        app.predict_panel.set_tuned(_run_folder(workbench_config, "20240101-120000-classification-minilm"))
        await pilot.press("ctrl+t", "enter")
        await until(pilot, lambda: "no model" in text_of(app, "#predict-status"), "the error shows")
        assert text_of(app, "#predict-status") == f"{message}; ctrl+b asks the base alone"


async def test_top_k_typed_beside_the_text_sets_how_many_candidates_show(
    make_app: Callable[..., WorkbenchApp], fake_predictor: Callable[[PredictRequest], PredictionView]
) -> None:
    app = make_app(panel="predict")
    async with app.run_test(size=(100, 30)) as pilot:
        assert not app.query_one("#predict-max-new").display
        await pilot.press(*"This is a [MASK] movie!", "tab", "backspace", "1", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        assert fake_predictor.requests[-1].top_k == 1  # type: ignore[attr-defined]
        assert len(app.query_one("#predict-base ScoreBars", ScoreBars).rows) == 1


async def test_an_out_of_range_top_k_is_refused_with_its_range(
    make_app: Callable[..., WorkbenchApp], fake_predictor: Callable[[PredictRequest], PredictionView]
) -> None:
    app = make_app(panel="predict")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"This is a [MASK] movie!", "tab", "backspace", "0")
        await pilot.pause()
        top_k = app.query_one("#predict-top-k", Input)
        assert top_k.has_class("-invalid")
        assert "top-k: expected a whole number from 1 to 50" in text_of(app, "#predict-status")
        await pilot.press("enter")
        await settle(pilot)
        assert fake_predictor.requests == []  # type: ignore[attr-defined]
        assert app.focused is top_k
        await pilot.press("backspace", "3")
        await pilot.pause()
        assert not top_k.has_class("-invalid") and text_of(app, "#predict-status") == ""


async def test_a_causal_lm_offers_max_new_tokens_instead_of_top_k(
    make_app: Callable[..., WorkbenchApp],
    workbench_config: RunConfig,
    fake_predictor: Callable[[PredictRequest], PredictionView],
) -> None:
    app = make_app(panel="predict", cfg=validate_field(workbench_config, "task", "causal-lm"))
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.query_one("#predict-max-new").display and not app.query_one("#predict-top-k").display
        await pilot.press(*"The movie was", "tab", "backspace", "backspace", *"12", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
        assert fake_predictor.requests[-1].max_new_tokens == 12  # type: ignore[attr-defined]
        app.query_one("#predict-input", Input).value = "Another text"  # typed since: not what was continued
        await pilot.pause()
        shown = app.query_one("#predict-base .generated", Static).render()
        assert str(shown) == "The movie was and then it rained"


# -- Runs -------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_runs(workbench_config: RunConfig) -> list[str]:
    names = ["20240101-100000-classification-minilm", "20240102-100000-classification-minilm"]
    for i, name in enumerate(names):
        cfg = validate_field(workbench_config, "train.learning_rate", 1e-4 * (i + 1))
        events = run_script(f"runs/{name}", epochs=2 + i)
        summary = summary_for(cfg, started=1_704_103_200 + 86_400 * i, best=0.7 + i / 10)
        write_run(Path("runs"), name, cfg, events, summary)
    return names


async def test_runs_panel_lists_runs_newest_first_and_opens_one(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        table = app.query_one("#runs-table", RunsTable)
        assert [table.cells_at(i)[1] for i in range(2)] == list(reversed(two_runs))
        assert table.cells_at(0)[3] == "acc 0.8000"
        await pilot.press("enter")
        await until(pilot, lambda: app.runs_panel.opened == [two_runs[1]], "the run opens")
        assert app.query_one("#runs-epochs", EpochTable).row_count == 3
        assert len(app.query_one("#runs-chart", LossChart).series["train loss (step)"].points) == 24


async def test_at_80_columns_run_names_are_cut_in_the_middle_and_the_best_score_shows(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    """The run column took its longest name's width, and at 80 columns the best score read "acc 0."."""
    app = make_app(panel="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        table = app.query_one("#runs-table", RunsTable)
        await pilot.pause()
        line = table.render_line(1).text
        assert "acc 0.8000" in line and "20240102-100…tion-minilm" in line
        await pilot.resize_terminal(160, 24)
        await pilot.pause()
        assert two_runs[1] in table.render_line(1).text  # wide enough: whole again


async def test_the_panel_on_show_lists_its_runs_once_and_again_on_its_key(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listings: list[str] = []
    monkeypatch.setattr(RunsPanel, "refresh_runs", lambda panel: listings.append(panel.runs_dir))
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert listings == ["runs"]
        await pilot.press("f6")  # the key of the panel on show reads the folder again
        await settle(pilot)
        assert listings == ["runs", "runs"]


async def test_v_shows_the_open_runs_confusion_matrix_and_per_class_scores(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    name = "20240103-100000-classification-minilm"
    events = run_script(f"runs/{name}", epochs=2)
    last = max(i for i, e in enumerate(events) if isinstance(e, Evaluated))
    events[last] = dataclasses.replace(events[last], confusion=[[14, 2], [5, 11]])  # type: ignore[arg-type]
    write_run(Path("runs"), name, workbench_config, events, summary_for(workbench_config, started=0, best=0.8))
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 1, "the runs list")
        notes = record_notes(app)
        await pilot.press("v")  # no run open yet: nothing swaps, and it says why
        assert notes == ["v shows an open run's confusion matrix: enter opens the highlighted run"]
        assert not app.query_one("#runs-classes").display
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.runs_panel.opened), "the run opens")
        assert "v: confusion matrix" in text_of(app, "#runs-detail-title")
        report, chart = app.query_one("#runs-classes", Static), app.query_one("#runs-chart", LossChart)
        assert chart.display and not report.display
        await pilot.press("v")
        assert report.display and not chart.display
        assert text_of(app, "#runs-detail-title").endswith("2 epochs, 16 loss points · v: the curves")
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(report.content)
        shown = [" ".join(line.split()) for line in console.export_text().splitlines()]
        # side by side where the width holds both: the grid's row, then the class's scores
        assert shown[1] == "true \\ predicted negative positive class precision recall F1 support"
        # precision 14/19, recall 14/16; 11/13 and 11/16
        assert shown[2:] == [
            "negative 14 2 negative 0.737 0.875 0.800 16",
            "positive 5 11 positive 0.846 0.688 0.759 16",
        ]
        await pilot.press("v")
        assert chart.display and not report.display


async def test_marked_runs_overlay_their_loss_curves(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("m", "down", "m", "o")
        await until(pilot, lambda: len(app.runs_panel.opened) == 2, "the overlay")
        series = app.query_one("#runs-chart", LossChart).series
        assert set(series) == set(two_runs)
        assert "2 marked" in text_of(app, "#runs-title")


async def test_l_loads_a_runs_config_and_p_predicts_with_its_model(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("l")
        await pilot.pause()
        assert app.active_panel == "config"
        assert app.config_panel.config.train.learning_rate == pytest.approx(2e-4)
        await pilot.press("f6")
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("p")
        await pilot.pause()
        assert app.active_panel == "predict"
        assert app.predict_panel.tuned is not None and Path(app.predict_panel.tuned).name == two_runs[1]


async def test_n_starts_a_new_config_from_a_run_which_it_names_as_parent(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("n")
        await pilot.pause()
        assert app.active_panel == "config"
        cfg = app.config_panel.config
        assert cfg.output.parent == two_runs[1] and cfg.train.learning_rate == pytest.approx(2e-4)
        assert f"from {two_runs[1]}" in text_of(app, "#config-title")
        assert app.cfg.output.parent == two_runs[1]  # what s on the Train panel starts
        record = Path("runs") / two_runs[1] / "config.yaml"
        before = record.read_text()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "not saved" in text_of(app, "#config-status") and record.read_text() == before


async def test_l_and_n_over_unsaved_config_edits_ask_once_and_keep_them(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="config")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        notes = record_notes(app)
        await edit_then_press(pilot, app, "train.num_train_epochs", "5", "f6")
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        for key, what in (("l", "load its config"), ("n", "start a new config from it")):
            await pilot.press(key)
            await pilot.pause()
            assert app.active_panel == "runs" and app.config_panel.config.train.num_train_epochs == 5
            assert notes[-1] == (
                f"1 unsaved change(s) (train.num_train_epochs) in Config: {key} again drops them to {what};"
                " ctrl+s there saves them"
            )
        await pilot.press("n")
        await pilot.pause()
        assert app.active_panel == "config" and app.config_panel.config.output.parent == two_runs[1]
        assert app.config_panel.config.train.num_train_epochs != 5


async def test_an_opened_run_names_the_runs_it_descends_from(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], workbench_config: RunConfig
) -> None:
    child = "20240104-100000-classification-minilm"
    summary = {**summary_for(workbench_config, started=1_704_362_400, best=0.9), "parent": two_runs[1]}
    write_run(Path("runs"), child, workbench_config, run_script(f"runs/{child}"), summary)
    (Path("runs") / two_runs[1] / "summary.json").write_text(
        json.dumps({**summary_for(workbench_config, started=1_704_189_600, best=0.8), "parent": two_runs[0]})
    )
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 3, "the runs list")
        await pilot.press("enter")
        await until(pilot, lambda: app.runs_panel.opened == [child], "the run opens")
        assert text_of(app, "#runs-detail-title").endswith(f"from {two_runs[1]} ← {two_runs[0]}")


async def test_an_opened_failed_run_says_why_it_failed(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], workbench_config: RunConfig
) -> None:
    failed = "20240105-100000-classification-minilm"
    why = "loss became NaN at step 3; lower train.learning_rate (now 1e+06)"
    summary = {**summary_for(workbench_config, started=1_704_448_800, best=0.5), "status": "failed", "error": why}
    write_run(Path("runs"), failed, workbench_config, run_script(f"runs/{failed}", epochs=1), summary)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 3, "the runs list")
        await pilot.press("enter")
        await until(pilot, lambda: app.runs_panel.opened == [failed], "the failed run opens")
        title = app.query_one("#runs-detail-title")
        assert text_of(app, "#runs-detail-title").endswith(f"\nfailed: {why}")
        assert title.has_class("-lines-under") and title.size.height >= 2, "why shows on a line of its own"
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.runs_panel.opened == [two_runs[1]], "a finished run opens")
        assert "failed" not in text_of(app, "#runs-detail-title") and not title.has_class("-lines-under")
        note = "stopped early at step 8: eval_loss did not improve by more than 0 for 2 evaluations in a row"
        summary_path = Path("runs") / two_runs[0] / "summary.json"
        summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "note": note}))
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.runs_panel.opened == [two_runs[0]], "an early-stopped run opens")
        assert text_of(app, "#runs-detail-title").endswith(f"\n{note}") and title.has_class("-lines-under")


async def test_c_compares_marked_runs_and_x_swaps_the_chart_to_the_eval_metric(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    from tui.compare import CompareScreen

    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        notes = record_notes(app)
        await pilot.press("c")  # nothing marked, no parent, no sweep
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)
        assert any("mark two or more runs" in n for n in notes)
        await pilot.press("m", "down", "m", "c")
        await until(pilot, lambda: getattr(app.screen, "comparison", None) is not None, "the comparison")
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.comparison is not None
        diff = screen.query_one("#compare-diff", DataTable)
        assert [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)] == ["learning_rate"]
        legends = screen.comparison.legends  # newest first, as listed
        assert legends == ["lr=2e-4", "lr=1e-4"]
        chart = screen.query_one("#compare-chart", LossChart)
        assert set(chart.series) == set(legends) and len(chart.series["lr=2e-4"].points) == 24
        evals = screen.query_one("#compare-evals", DataTable)
        last = [str(cell) for cell in evals.get_row_at(2)]  # eval loss at epoch 3: only the longer run has it
        assert last[1:] == ["3", "0.3000 ★", "-"]
        await pilot.press("x")
        assert [p[0] for p in chart.series["lr=2e-4"].points] == [8, 16, 24]  # eval loss at each evaluation
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen) and app.active_panel == "runs"


async def compare_the_two_runs(app: WorkbenchApp, pilot: Any) -> Any:
    """Mark the Runs panel's two runs and compare them: the CompareScreen, once it has read them."""
    from tui.compare import CompareScreen

    await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
    await pilot.press("m", "down", "m", "c")
    await until(pilot, lambda: getattr(app.screen, "comparison", None) is not None, "the comparison")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, CompareScreen) and screen.comparison is not None
    return screen


async def test_two_runs_of_one_config_compare_with_every_value_on_screen_and_a_tie_shares_first(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    """Same config, same results: the legends are long folder names, and the evaluations still fit at 140."""
    for i, name in enumerate(["20240101-100000-classification-minilm", "20240101-100500-classification-minilm"]):
        summary = summary_for(workbench_config, started=1_704_103_200 + 300 * i, best=0.7)
        write_run(Path("runs"), name, workbench_config, run_script(f"runs/{name}", epochs=2), summary)
    app = make_app(panel="runs")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await compare_the_two_runs(app, pilot)
        evals = screen.query_one("#compare-evals", DataTable)
        assert len(evals.columns) == 4 and evals.virtual_size.width <= evals.scrollable_content_region.width
        rows = [[str(cell) for cell in evals.get_row_at(i)][2:] for i in range(evals.row_count)]
        assert any(a == b and a.endswith(" ★") for a, b in rows), rows  # the same best value, starred in both
        ranking = str(screen.query_one("#compare-ranking", Static).render())
        assert ranking.count("1. ") == 2 and "2. " not in ranking, ranking


async def test_runs_with_long_legends_compare_with_their_evaluations_whole_at_120_columns(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    """Runs that differ in four settings have legends of 30 cells: as the titles of the evaluations' and settings'
    columns, they pushed the second run's values out of sight."""
    from tui.compare import RUN_TITLE

    for i, (lr, epochs, length, size) in enumerate([(1e-4, 2, 32, 64), (3e-4, 3, 64, 128)]):
        cfg = workbench_config
        for key, value in (("train.learning_rate", lr), ("train.num_train_epochs", epochs)):
            cfg = validate_field(cfg, key, value)
        for key, value in (("data.max_length", length), ("data.train_size", size)):
            cfg = validate_field(cfg, key, value)
        name = f"2024010{i + 1}-100000-classification-minilm"
        summary = summary_for(cfg, started=1_704_103_200 + 86_400 * i, best=0.7)
        write_run(Path("runs"), name, cfg, run_script(f"runs/{name}", epochs=2), summary)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await compare_the_two_runs(app, pilot)
        assert screen.comparison is not None
        assert all(len(legend) > RUN_TITLE for legend in screen.comparison.legends)
        evals = screen.query_one("#compare-evals", DataTable)
        assert evals.virtual_size.width <= evals.scrollable_content_region.width
        titles = [str(column.label) for column in evals.columns.values()][2:]
        assert len(set(titles)) == 2 and all(t.endswith("…") for t in titles), titles  # cut, and still apart
        diff = screen.query_one("#compare-diff", DataTable)
        assert diff.region.right < evals.region.x, "a cell between the settings and the evaluations"
        # the settings' run columns are titled alike: whole legends pushed the second run's values out of sight
        assert diff.virtual_size.width <= diff.scrollable_content_region.width
        assert [str(column.label) for column in diff.columns.values()][1:] == titles


def test_evaluation_titles_cut_from_long_legends_still_tell_the_runs_apart() -> None:
    from tui.compare import RUN_TITLE, run_titles

    legends = ["lr=1e-4 epochs=2 n_train=256 …", "lr=1e-4 epochs=2 n_train=64 …", "lr=3e-4 epochs=3 …", "#4"]
    titles = run_titles(legends, [8, 8, 8, 8])
    assert len({title for title, _ in titles}) == 4
    assert [width for _, width in titles] == [27, 27, 18, 8]  # apart at n_train=2… / n_train=6…, no wider
    assert titles[0][0] == "lr=1e-4 epochs=2 n_train=2…" and titles[2][0] == legends[2] and titles[3][0] == "#4"
    cut = "…".rjust(RUN_TITLE, "a"), "…".rjust(RUN_TITLE, "b")
    assert run_titles(["a" * 30, "b" * 30], [8, 12]) == [(cut[0], RUN_TITLE), (cut[1], RUN_TITLE)]


async def test_c_on_a_run_with_a_parent_compares_it_with_its_parent(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], workbench_config: RunConfig
) -> None:
    from tui.compare import CompareScreen

    child = "20240104-100000-classification-minilm"
    cfg = validate_field(workbench_config, "train.learning_rate", 1e-4)  # as two_runs[0]
    cfg = validate_field(cfg, "output.parent", two_runs[0])
    cfg = validate_field(cfg, "train.num_train_epochs", 9)
    summary = {**summary_for(cfg, started=1_704_362_400, best=0.9), "parent": two_runs[0]}
    write_run(Path("runs"), child, cfg, run_script(f"runs/{child}"), summary)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 3, "the runs list")
        await pilot.press("c")
        await until(pilot, lambda: getattr(app.screen, "comparison", None) is not None, "the comparison")
        assert isinstance(app.screen, CompareScreen)
        c = app.screen.comparison
        assert c is not None and [r.name for r in c.runs] == [two_runs[0], child]
        assert [row.key for row in c.diff] == ["train.num_train_epochs"]  # lineage aside


async def test_queued_entries_list_under_live_runs_and_k_j_x_reorder_and_remove_them(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], workbench_config: RunConfig
) -> None:
    from engine import queue

    for lr in (1e-5, 2e-5, 3e-5):
        queue.add("runs", validate_field(workbench_config, "train.learning_rate", lr), f"lr {lr}")
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.rows) == 5, "the runs and the queue")
        table = app.query_one("#runs-table", RunsTable)

        def names() -> list[str]:
            return [table.cells_at(i)[1] for i in range(table.row_count)]

        assert names() == ["#1 lr 1e-05", "#2 lr 2e-05", "#3 lr 3e-05", *reversed(two_runs)]
        assert [table.cells_at(i)[2] for i in range(3)] == ["queued 1", "queued 2", "queued 3"]
        assert "3 queued, no runner (Q starts it)" in text_of(app, "#runs-title")
        await pilot.press("J")  # #1 goes after #2
        await until(pilot, lambda: names()[:2] == ["#2 lr 2e-05", "#1 lr 1e-05"], "the move")
        assert [e.id for e in queue.list_queue("runs")] == ["2", "1", "3"]
        assert app.runs_panel.current_entry() is not None and app.runs_panel.current_entry().id == "1"
        await pilot.press("K", "K")  # back to the top, and no further
        await until(pilot, lambda: names()[0] == "#1 lr 1e-05", "the moves")
        await pilot.press("down", "x")
        await until(pilot, lambda: len(app.runs_panel.rows) == 4, "the removal")
        assert [e.id for e in queue.list_queue("runs")] == ["1", "3"]
        sets = "data.train_size=32 data.eval_size=16 train.num_train_epochs=1 train.learning_rate=3e-5"
        queue.add("runs", workbench_config, f"quickstart-classify.yaml {sets}")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: len(app.runs_panel.rows) == 5, "the new entry")
        # a run name's width at most: the file and the last settings, which tell one entry from the next
        assert names()[2] == "#4 quickstart-classify.yaml … learning_rate=3e-5"
        await pilot.press("home", "down", "down")
        assert text_of(app, "#runs-detail-title").endswith(sets)  # the whole label, on the line above


def test_a_sweeps_heading_counts_its_runs_still_going_and_queued() -> None:
    """Its heading said "2 runs · 2 finished" while the sweep's two other runs trained and waited above."""
    from engine import queue
    from engine.runs import RunInfo
    from tui.panels.runs import SweepRow, list_rows, row_cells

    def run(name: str, status: str) -> RunInfo:
        info = RunInfo(Path("runs") / name, name, status, "classification", "minilm", 0.0, None, None, None)
        info.sweep = "4f2a01"
        return info

    ended = [run("20240103-a2", "finished"), run("20240102-a1", "finished")]
    waiting = queue.QueueEntry("4", "base.yaml seed=4", 0.0, {}, sweep="4f2a01")
    claimed = queue.QueueEntry("3", "base.yaml seed=3", 0.0, {}, sweep="4f2a01", state="claimed", run="20240104-a3")
    failed = queue.QueueEntry("5", "base.yaml seed=5", 0.0, {}, sweep="4f2a01", state="failed")
    rows = list_rows([run("20240104-a3", "running"), *ended], [claimed, waiting, failed])
    heading = next(row for row in rows if isinstance(row, SweepRow))
    assert heading.runs == ended
    cells = row_cells(rows)[rows.index(heading)]
    assert cells[:2] == ("sweep 4f2a01: 5 runs", "2 finished, 1 running, 1 queued, 1 failed to start")


async def test_a_sweeps_runs_list_together_under_a_heading_that_compares_them(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    from tui.compare import CompareScreen
    from tui.panels.runs import SweepRow

    days = {"a1": 1, "b": 2, "a2": 3}  # another run between the sweep's two
    for name, day in days.items():
        sweep = "4f2a01" if name.startswith("a") else None
        cfg = validate_field(workbench_config, "train.learning_rate", 1e-5 * day)
        summary = {**summary_for(cfg, started=1_704_103_200 + 86_400 * day, best=0.5 + day / 10), "sweep": sweep}
        folder = f"2024010{day}-100000-{name}"
        write_run(Path("runs"), folder, cfg, run_script(f"runs/{folder}"), summary)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.rows) == 4, "the runs list")
        table = app.query_one("#runs-table", RunsTable)
        shown = [table.cells_at(i)[1] for i in range(table.row_count)]
        assert shown == ["sweep 4f2a01: 2 runs", "  20240103-100000-a2", "  20240101-100000-a1", "20240102-100000-b"]
        assert isinstance(app.runs_panel.rows[0], SweepRow)
        assert table.cells_at(0)[3] == "acc 0.8000"  # the sweep's best
        await pilot.press("down", "down", "down", "m", "up", "m", "up", "up")  # b and a1 marked; the heading again
        assert app.runs_panel.marked == {"20240102-100000-b", "20240101-100000-a1"}
        await pilot.press("enter")  # the sweep highlighted, not the marks
        await until(pilot, lambda: getattr(app.screen, "comparison", None) is not None, "the comparison")
        assert isinstance(app.screen, CompareScreen)
        c = app.screen.comparison
        assert c is not None and [r.name for r in c.runs] == ["20240101-100000-a1", "20240103-100000-a2"]
        assert c.ranking_metric == "eval_loss" and len(c.ranking) == 2
        await pilot.press("escape")
        await pilot.pause()
        notes = record_notes(app)
        await pilot.press("e", "r")  # keys for a run, on the sweep's heading: said, not silently dropped
        await pilot.pause()
        assert notes == [
            "e (export) acts on a run: highlight one, not a queued entry or a sweep",
            "r (resume) acts on a run: highlight one, not a queued entry or a sweep",
        ]


async def test_run_keys_on_an_empty_runs_folder_say_there_is_no_run_yet(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="runs")
    notes = record_notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.runs_panel.runs == []
        await pilot.press("e", "m")
        await pilot.pause()
        assert notes == [
            "e (export) acts on a run: runs/ has none yet; s on the Train panel (F4) starts one",
            "m (mark) acts on a run: runs/ has none yet; s on the Train panel (F4) starts one",
        ]


async def test_e_exports_the_highlighted_runs_model_to_the_folder_given(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    from tui.dialogs import ExportScreen

    model = Path("runs") / two_runs[1] / "model"
    model.mkdir()
    (model / "config.json").write_text('{"id2label": {"0": "bad", "1": "good"}}')
    (model / "model.safetensors").write_bytes(b"weights")
    app = make_app(panel="runs")
    notes = record_notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        assert not app.screen.query_one("#export-merge").display  # not a LoRA run: nothing to merge
        out = app.screen.query_one("#export-out", Input)
        assert out.value == f"exports/{two_runs[1]}"
        out.value = "exports/mine"
        await pilot.press("enter")
        await until(pilot, lambda: any(n.startswith("exports/mine: the model of") for n in notes), "the export")
        assert (Path("exports/mine") / "model.safetensors").read_bytes() == b"weights"
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-out", Input).value = "exports/mine"
        await pilot.press("enter")
        # the dialog again, with the path as typed and why: the box to tick is named
        await until(pilot, lambda: isinstance(app.screen, ExportScreen), "the dialog again")
        assert app.screen.query_one("#export-out", Input).value == "exports/mine"
        assert str(app.screen.query_one("#export-error", Static).render()) == (
            "exports/mine holds a model already: tick “replace the model already there”, or pick another folder"
        )
        await pilot.press("tab", "space", "enter")  # ticked, enter on the box exports (its own enter would untick)
        await until(pilot, lambda: not isinstance(app.screen, ExportScreen), "the export replaces it")
        await until(pilot, lambda: sum(n.startswith("exports/mine: the model of") for n in notes) == 2, "done")
        await pilot.press("e")
        await pilot.pause()
        Path("exports/notes").mkdir()
        Path("exports/notes/notes.txt").write_text("mine")
        app.screen.query_one("#export-out", Input).value = "exports/notes"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.query_one("#export-out", Input).value == "exports/notes", "the dialog")
        assert str(app.screen.query_one("#export-error", Static).render()) == (
            "exports/notes holds notes.txt, not an exported model; export into a new or empty folder"
        )
        assert sum(n.startswith("exporting") for n in notes) == 2, "no “exporting…” for the exports refused"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ExportScreen)
        await pilot.press("down", "e")  # the other run, which has no model: no folder to ask for
        await pilot.pause()
        assert not isinstance(app.screen, ExportScreen)
        assert notes[-1].startswith(f"{two_runs[0]} has no model: its process ended before writing model/")


@pytest.fixture
def stopped_run(workbench_config: RunConfig) -> str:
    """A run stopped at step 12 of 24, as the engine leaves it on disk."""
    name = "20240103-100000-classification-minilm"
    script = run_script(f"runs/{name}")
    events = script[: 1 + next(i for i, e in enumerate(script) if isinstance(e, StepLogged) and e.step == 12)]
    summary = summary_for(workbench_config, started=1_704_276_000, best=0.6, status="stopped")
    write_run(Path("runs"), name, workbench_config, events, summary)
    return name


class ScriptedResume:
    """A resume factory: the scripted run picks up at step 12, holding after RunStarted until ``gate`` opens."""

    def __init__(self, cfg: RunConfig, gate: threading.Event) -> None:
        self.cfg = cfg
        self.gate = gate
        self.folders: list[Path] = []

    def __call__(self, run_dir: Path, subscribers: list[Emit]) -> ScriptedRunner:
        self.folders.append(run_dir)
        script = [
            dataclasses.replace(e, start_step=12) if isinstance(e, RunStarted) else e
            for e in run_script(str(run_dir))
            if not isinstance(e, StepLogged) or e.step > 12
        ]
        return ScriptedRunner(self.cfg, script, subscribers, self.gate)


async def test_r_resumes_a_stopped_run_on_the_train_panel_from_its_step(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, stopped_run: str
) -> None:
    gate = threading.Event()
    resume = ScriptedResume(workbench_config, gate)
    app = make_app(panel="runs")
    app.resume_factory = resume
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 1, "the runs list")
        await pilot.press("r")
        await reach(app, "training")
        assert resume.folders == [Path("runs") / stopped_run]
        assert app.active_panel == "train"
        assert "step 12/24" in app.train_panel.progress_text()
        assert app.query_one("#train-progress", ProgressBar).progress == 12
        chart = app.query_one("#train-chart", LossChart)
        assert [x for x, _ in chart.series["train loss (step)"].points] == list(range(1, 13))  # read back
        gate.set()
        await reach(app, "finished")
        await pilot.pause()
        assert app.controller.run_dir == str(Path("runs") / stopped_run)
        assert [x for x, _ in chart.series["train loss (step)"].points] == list(range(1, 25))


async def test_r_on_a_finished_run_shows_the_engine_reason_and_starts_nothing(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        notes = record_notes(app)
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        await pilot.press("r")
        await pilot.pause()
        assert len(notes) == 1 and "already finished" in notes[0] and two_runs[1] in notes[0]
        assert "Traceback" not in notes[0]
        assert (app.controller.state, app.active_panel) == ("idle", "runs")


async def test_r_is_refused_while_another_run_is_active(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, stopped_run: str
) -> None:
    gate = threading.Event()
    resume = ScriptedResume(workbench_config, gate)
    app = make_app(panel="train", engine=ScriptedEngine("runs/gated", gate=gate))
    app.resume_factory = resume
    async with app.run_test(size=(120, 40)) as pilot:
        notes = record_notes(app)
        await pilot.press("s")
        await reach(app, "training")
        await pilot.press("f6")
        await until(pilot, lambda: len(app.runs_panel.runs) == 1, "the runs list")
        await pilot.press("r")
        await pilot.pause()
        assert resume.folders == []
        assert notes[-1] == f"a run is in progress; x on the Train panel (F4) stops it, then r resumes {stopped_run}"
        app.controller.run_dir = str(Path("runs") / stopped_run)  # as if the run training were the one highlighted
        await pilot.press("r")
        await pilot.pause()
        assert notes[-1] == f"{stopped_run} trains already; the Train panel (F4) shows it"
        gate.set()
        await reach(app, "finished")


def test_scripted_runner_follows_the_run_contract() -> None:
    """The fake engine behaves like the loop at step boundaries, so the key tests mean something."""
    gate = threading.Event()
    events: list[object] = []
    runner = ScriptedEngine("runs/x", gate=gate)(from_dict({}), [events.append])
    worker = threading.Thread(target=runner.run)
    worker.start()
    runner.stop()
    worker.join(10)
    assert not worker.is_alive()
    assert [type(e).__name__ for e in events][-2:] == ["StopRequested", "RunFinished"]


async def test_the_loss_chart_draws_its_series_axes_and_legend_in_braille() -> None:
    from textual.app import App, ComposeResult

    class ChartApp(App[None]):
        def compose(self) -> ComposeResult:
            yield LossChart(empty_text="no steps yet")

    async with ChartApp().run_test(size=(60, 12)) as pilot:
        chart = pilot.app.query_one(LossChart)
        check_loss_chart(chart)


def check_loss_chart(chart: LossChart) -> None:
    assert "no steps yet" in "\n".join(s.text for s in chart.draw(40, 8))
    chart.set_series("train loss (step)", [(float(i), 2.0 - i / 100) for i in range(1, 101)])
    chart.set_series("eval loss", [(50.0, 1.0), (100.0, 0.5)], marker="dot")
    rows = [s.text for s in chart.draw(60, 12)]
    assert all(len(r) == 60 for r in rows)
    assert "train loss (step)" in rows[0] and "eval loss" in rows[0]
    plot = rows[1:-2]
    # the line falls from the top left to the bottom right: its first dots on the first row, its last on the last
    first = next(i for i, c in enumerate(plot[0]) if "\u2800" < c <= "\u28ff")
    last = max(i for i, c in enumerate(plot[-1]) if "\u2800" < c <= "\u28ff" or c == "•")
    assert first < 10 and last > 50
    assert sum(r.count("•") for r in plot) == 2
    assert "┤" in "".join(plot) and "100" in rows[-1] and "┬" in rows[-2]
    # four runs compared, each named by its settings: the legend takes more rows, no name is cut
    names = [f"lr={lr} epochs={n} n_train=64 …" for lr, n in (("1e-4", 3), ("1e-4", 2), ("3e-4", 2), ("3e-4", 3))]
    for name in names:
        chart.set_series(name, [(1.0, 1.0), (2.0, 0.5)])
    rows = [s.text for s in chart.draw(80, 20)]
    assert all(name in "".join(rows[:3]) for name in ["train loss (step)", "eval loss", *names])
    assert rows[3].lstrip()[0] in "0123456789│" and len(rows) == 20
    # a short chart keeps a row for the legend, and counts the names it leaves out
    rows = [s.text for s in chart.draw(80, 8)]
    assert "train loss (step)" in rows[0] and rows[0].rstrip().endswith("+3 more") and "│" in rows[1]


async def test_a_run_of_one_logged_step_shows_as_a_point_no_other_line_covers() -> None:
    """Compared with a long run, a run of four steps logs one point; drawn as one braille dot, it took the colour
    of the long run's line through the same cell and vanished."""
    from textual.app import App, ComposeResult

    class ChartApp(App[None]):
        def compose(self) -> ComposeResult:
            yield LossChart(empty_text="no steps yet")

    async with ChartApp().run_test(size=(60, 12)) as pilot:
        chart = pilot.app.query_one(LossChart)
        chart.set_series("long", [(float(i), 2.0 - i / 100) for i in range(1, 101)])
        chart.set_series("short", [(4.0, 1.96)])
        rows = [s.text for s in chart.draw(60, 12)]
        assert "• short" in rows[0] and "━ long" in rows[0]
        assert sum(r.count("•") for r in rows[1:-2]) == 1


async def test_a_long_log_line_wraps_to_the_log_width(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="train")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        log = app.query_one("#train-log", Log)
        line = "warning: " + " ".join(f"word{i}" for i in range(60))
        app.train_panel.write_log(line)
        width = log.scrollable_content_region.width
        assert len(log.lines) > 1 and all(len(shown) <= width for shown in log.lines)
        assert " ".join(" ".join(log.lines).split()) == line
        log.clear()
        app.train_panel.write_log('error: boom\nTraceback (most recent call last):\n  File "x.py", line 1')
        assert list(log.lines) == ["error: boom", "Traceback (most recent call last):", '  File "x.py", line 1']


async def test_the_log_follows_new_lines_after_a_resize(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="train")
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        log = app.query_one("#train-log", Log)
        for i in range(60):
            app.train_panel.write_log(f"line {i}")
        await pilot.pause()
        assert log.is_vertical_scroll_end
        await pilot.resize_terminal(80, 24)  # a smaller log: its end moves down past what it shows
        await pilot.pause()
        app.train_panel.write_log("the newest line")
        await pilot.pause()
        assert log.is_vertical_scroll_end and log.max_scroll_y > 0, "it still shows the newest line"
        await pilot.resize_terminal(140, 40)
        await pilot.pause()
        app.train_panel.write_log("and the next")
        await pilot.pause()
        assert log.is_vertical_scroll_end
        log.scroll_home(animate=False, immediate=True)  # scrolled back by the user: it stays there
        await pilot.pause()
        await pilot.resize_terminal(100, 30)
        app.train_panel.write_log("one more")
        await pilot.pause()
        assert log.scroll_offset.y == 0


async def test_the_step_count_of_a_run_that_started_over_is_its_new_sessions(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    """Attached to a run killed at step 10 and started again from 0, the bar kept the first session's 10."""
    from textual.widgets import ProgressBar

    from engine.events import RunStarted, StepDone, StepLogged
    from tests.tui.fakes import run_script

    app = make_app(panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        script = run_script("runs/r")
        panel = app.train_panel
        panel.handle(next(e for e in script if isinstance(e, RunStarted)))
        first = [e for e in script if isinstance(e, StepLogged)][:10]
        panel.add_steps([*first, *first[:3]])  # as an attach replays both sessions' events
        await pilot.pause()
        assert app.query_one("#train-progress", ProgressBar).progress == 3
        panel.add_steps([first[3], StepDone(step=5, total_steps=24)])
        await pilot.pause()
        assert app.query_one("#train-progress", ProgressBar).progress == 5


async def test_the_progress_bar_counts_optimizer_steps_between_logged_steps(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    from textual.widgets import ProgressBar

    from engine.events import Paused, RunStarted, StepDone, StepLogged
    from tests.tui.fakes import run_script

    app = make_app(panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        script = run_script("runs/r")  # 24 steps, a StepLogged for each
        panel = app.train_panel
        panel.handle(next(e for e in script if isinstance(e, RunStarted)))
        logged = next(e for e in script if isinstance(e, StepLogged) and e.step == 10)
        panel.add_steps([logged, *(StepDone(step=n, total_steps=24) for n in range(11, 15))])
        await pilot.pause()
        assert "step 14/24" in panel.progress_text() and f"loss {logged.loss:.4f}" in panel.progress_text()
        assert app.query_one("#train-progress", ProgressBar).progress == 14
        panel.set_state(RunState.TRAINING)
        full = panel.progress_text()
        assert full.endswith(" samples/s") and panel.progress_text(len(full)) == full
        short = panel.progress_text(len(full) - 1)  # an 80-column terminal: the same figures, in fewer letters
        assert short.startswith("ep 2/3 · 14/24 ·") and short.endswith("/s") and len(short) < len(full)
        panel.handle(Paused(step=15))  # a follower's StepDone for it may come from the beacon after the pause
        assert "step 15/24" in panel.progress_text()
        assert app.query_one("#train-progress", ProgressBar).progress == 15
        # Paused, the last step's speed and ETA would be stale: they go, and come back with the run.
        panel.set_state(RunState.PAUSED, "at step 15; space resumes")
        assert "ETA" not in text_of(app, "#train-speed") and "samples/s" not in text_of(app, "#train-speed")
        assert f"loss {logged.loss:.4f}" in text_of(app, "#train-speed")
        panel.set_state(RunState.TRAINING)
        assert "ETA" in text_of(app, "#train-speed") and "samples/s" in text_of(app, "#train-speed")
        speed = text_of(app, "#train-speed")
        assert speed.index("loss") < speed.index("ETA"), "the loss stays in view where a narrow terminal cuts the line"
        # Ended, they would be stale for good.
        panel.set_state(RunState.STOPPED, "at step 15")
        assert "ETA" not in text_of(app, "#train-speed") and "samples/s" not in text_of(app, "#train-speed")
        assert "step 15/24" in text_of(app, "#train-speed")
        panel.reset(panel.cfg)
        panel.set_state(RunState.FAILED)  # before its first step
        assert text_of(app, "#train-speed") == "it ended before its first step"
        panel.reset(panel.cfg)  # the next run, cleared while the last one's state still shows
        panel.set_state(RunState.LOADING)
        assert text_of(app, "#train-speed") == "preparing…"


async def test_a_run_that_ends_between_step_readings_shows_its_last_step(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    """An SFT run shorter than its logging_steps (4 steps, logging every 5) reads no StepLogged, and its last
    StepDone may not come before its end: the bar stood at 2/4 under a finished epoch."""
    from engine.events import RunFinished, StepDone

    app = make_app(panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.train_panel
        panel.handle(run_started(num_train_samples=8, num_eval_samples=2, num_epochs=1, batch_size=2, total_steps=4))
        panel.add_steps([StepDone(step=2, total_steps=4)])
        panel.handle(RunFinished(status="finished", step=4, duration_seconds=3.0, model_dir=None))
        await pilot.pause()
        assert "step 4/4" in text_of(app, "#train-speed")


async def test_a_live_run_keeps_one_refresh_pending_however_often_the_list_is_read(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import time

    record = {"pid": 1, "host": "another-host", "state": "running", "heartbeat": time.time(), "step": [3, 9]}
    (Path("runs") / two_runs[0] / "summary.json").unlink()  # no summary: a run still training, on another host
    (Path("runs") / two_runs[0] / "live.json").write_text(json.dumps(record))
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: [r.status for r in app.runs_panel.runs] == ["running", "finished"], "the list")
        scheduled: list[Any] = []
        set_timer = app.runs_panel.set_timer
        monkeypatch.setattr(app.runs_panel, "set_timer", lambda *a, **k: scheduled.append(a) or set_timer(*a, **k))
        for _ in range(3):  # the key, the tab, a run's end: each lists the runs again
            app.runs_panel.refresh_runs()
            await settle(pilot)
        assert scheduled == []  # the re-listing already pending serves them all
        assert app.runs_panel.runs[0].status_text.startswith("running 3/9")


async def test_the_run_bar_names_a_run_that_trains_in_the_runs_folder_while_the_workbench_is_idle(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue runner's run, or another terminal's, trains in the same folder: the bar says so, not just "idle"."""
    import json
    import time

    import tui.panels.runs

    monkeypatch.setattr(tui.panels.runs, "WATCH_SECONDS", 0.05)
    live = Path("runs") / two_runs[0] / "live.json"
    record = {"pid": 1, "host": "another-host", "state": "running", "heartbeat": time.time(), "step": [3, 9]}
    (Path("runs") / two_runs[0] / "summary.json").unlink()  # no summary: still training, on another host
    live.write_text(json.dumps(record))
    app = make_app(panel="data")
    async with app.run_test(size=(160, 40)) as pilot:

        def bar() -> str:
            return text_of(app, "#data .run-bar")

        async def shows(text: str, what: str) -> None:  # the folder is looked at on a timer: wait in time
            for _ in range(100):
                if text in bar():
                    return
                await pilot.pause(0.05)
            raise AssertionError(f"never happened: {what} ({bar()})")

        await shows(f"{two_runs[0]} trains in runs/ (step 3/9", "the bar names the run")
        assert bar().startswith("○ idle · ") and bar().endswith("· F6 lists it")
        app.controller.run_dir = str(Path("runs") / two_runs[0])  # as if the workbench's own run, just ended
        app.training.render_run_bar()
        assert two_runs[0] not in bar()
        app.controller.run_dir = None
        live.unlink()  # it ended
        await shows("· s on the Train panel (F4) starts a run", "the bar forgets it")
        later = Path("runs") / "20240103-100000-classification-minilm"
        later.mkdir()  # a new run folder, as a run's process makes it: its config at once, its live record later
        (later / "config.yaml").write_text((Path("runs") / two_runs[0] / "config.yaml").read_text())
        await pilot.pause(0.1)
        (later / "live.json").write_text(json.dumps({**record, "state": "paused", "heartbeat": time.time()}))
        await shows(f"{later.name} is paused in runs/ (step 3/9)", "the bar names the new run")


def many_runs(workbench_config: RunConfig, count: int) -> list[str]:
    """``count`` finished run folders, config and summary only, newest last."""
    names = []
    for i in range(count):
        name = f"2024{i // 100 + 1:02d}{i % 100:02d}-100000-classification-minilm"
        folder = Path("runs") / name
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(workbench_config.to_yaml())
        (folder / "summary.json").write_text(json.dumps(summary_for(workbench_config, started=1e9 + i, best=0.5)))
        names.append(name)
    return names


async def test_the_runs_list_draws_only_the_rows_on_screen(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = many_runs(workbench_config, 300)
    drawn: set[str] = set()
    cells = RunsPanel._cells

    def counted(panel: RunsPanel, line: Any) -> tuple[str, ...]:
        drawn.add(line.cells[0])
        return cells(panel, line)

    monkeypatch.setattr(RunsPanel, "_cells", counted)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.rows) == 300, "the runs list")
        await settle(pilot)
        table = app.query_one("#runs-table", RunsTable)
        assert names[-1] in drawn and drawn <= set(names[-table.size.height :])  # the newest: a screenful
        await pilot.press("end")
        await settle(pilot)
        assert names[0] in drawn and len(drawn) <= 2 * table.size.height


async def test_the_live_refresh_keeps_the_cursor_the_scroll_and_the_marks(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    names = many_runs(workbench_config, 60)
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.rows) == 60, "the runs list")
        await pilot.press("pagedown", "pagedown", "m", "down")
        table = app.query_one("#runs-table", RunsTable)
        cursor, top = table.cursor, table.scroll_offset.y
        assert cursor > table.size.height and top > 0
        app.runs_panel.refresh_runs()
        await settle(pilot)
        assert (table.cursor, table.scroll_offset.y) == (cursor, top)
        assert app.runs_panel.marked == {names[-cursor]}  # newest first: the row above the cursor's
        assert table.cells_at(cursor - 1)[0] == "✓" and table.cells_at(cursor)[0] == " "
        current = app.runs_panel.current()
        assert current is not None and current.name == names[-cursor - 1]


async def test_left_and_right_scroll_the_runs_columns_that_do_not_fit(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str]
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
        table = app.query_one("#runs-table", RunsTable)
        assert table.render_line(0).text.startswith("    run ") and "memory" not in table.render_line(0).text
        await pilot.press("right", "right")
        await until(pilot, lambda: table.render_line(0).text.startswith("  run "), "the columns scroll")
        await pilot.press("left")
        await until(pilot, lambda: table.render_line(0).text.startswith("   run "), "the columns scroll back")


async def test_the_cursor_stays_on_its_run_when_a_new_run_lists_above_it(
    make_app: Callable[..., WorkbenchApp], two_runs: list[str], workbench_config: RunConfig
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.runs_panel.rows) == 2, "the runs list")
        await pilot.press("down")
        newest = Path("runs") / "20240103-100000-classification-minilm"
        newest.mkdir()
        (newest / "config.yaml").write_text(workbench_config.to_yaml())
        (newest / "summary.json").write_text(json.dumps(summary_for(workbench_config, started=1e9, best=0.5)))
        app.runs_panel.refresh_runs()
        await until(pilot, lambda: len(app.runs_panel.rows) == 3, "the new run listed")
        current = app.runs_panel.current()
        assert current is not None and current.name == two_runs[0]
        assert app.query_one("#runs-table", RunsTable).cursor == 2
