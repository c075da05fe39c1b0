"""Data panel on a generated 1,000,000-row dataset: page down 200 times, jump to the end, filter.

The bench writes a local parquet file (text + label, ~1% of rows mention "zebra"), points the workbench's
config at it and opens the real app on the Data panel with Pilot (headless, 120x40; frames are also turned
into terminal bytes, see uilib.FrameProbe). Each key is timed until the frame that shows it. RSS is read
once the first page is on screen and again after the browsing; the datasets cache goes to a temporary
folder, so nothing is left behind.

    python bench/data_browsing.py            # ~15 seconds on 2 CPU cores
    python bench/data_browsing.py --smoke    # 20,000 rows, 20 page downs
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import Spread, machine_line, parse_args, print_table, ratio_line, rss_mb, scratch_dir
from uilib import FrameProbe

PAGE_GOAL_MS = 50.0
RSS_GOAL_MB = 100.0
QUERY = "zebra"
LABELS = ["one star", "two stars", "three stars", "four stars", "five stars"]
WORDS = [
    "the",
    "a",
    "food",
    "was",
    "service",
    "great",
    "terrible",
    "slow",
    "friendly",
    "cold",
    "warm",
    "staff",
    "table",
    "wait",
    "price",
    "menu",
    "dessert",
    "coffee",
    "pasta",
    "pizza",
    "salad",
    "burger",
    "fries",
    "noodles",
    "soup",
    "bread",
    "wine",
    "beer",
    "music",
    "loud",
    "quiet",
    "clean",
    "dirty",
    "room",
    "hotel",
    "bed",
    "view",
    "pool",
    "breakfast",
    "lunch",
    "dinner",
    "late",
    "early",
    "again",
    "never",
    "always",
    "best",
    "worst",
    "place",
    "town",
    "city",
]


@dataclass
class Browse:
    rows: int
    open_seconds: float = 0.0
    page_ms: list[float] = field(default_factory=list)
    end_ms: float = 0.0
    filter_ms: float = 0.0
    filtered_rows: int = 0
    rss_start_mb: float = 0.0
    rss_loaded_mb: float = 0.0
    rss_after_mb: float = 0.0
    anon_loaded_mb: float = 0.0
    anon_after_mb: float = 0.0
    #: Time of each page read from the dataset (100 rows) during the page downs: the data side of a key.
    page_read_ms: list[float] = field(default_factory=list)


def anon_mb() -> float:
    """Anonymous (heap) resident memory in MiB: RSS without the memory-mapped Arrow file pages."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def write_parquet(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` short reviews with a label; about 1% contain the filter word."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS)
    lengths = rng.integers(8, 30, size=rows)
    words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
    rare = rng.random(rows) < 0.01
    texts = []
    at = 0
    for i, n in enumerate(lengths):
        sentence = " ".join(words[at : at + n])
        texts.append(f"{sentence} {QUERY}" if rare[i] else sentence)
        at += n
    labels = np.array(LABELS)[rng.integers(0, len(LABELS), size=rows)]
    pq.write_table(pa.table({"text": texts, "label": labels}), path)
    return path


def cursor_moved(table: Any, before: int) -> bool:
    return bool(table.cursor != before)


async def browse(cfg: Any, config_path: Path, result: Browse, page_downs: int) -> None:
    from tui.app import WorkbenchApp
    from tui.widgets.paged_table import PagedTable

    app = WorkbenchApp(cfg, str(config_path), initial_panel="data")
    async with app.run_test(size=(120, 40)) as pilot:
        probe = FrameProbe(app)
        panel = app.data_panel
        opened = time.perf_counter()
        while panel.view is None or len(panel.view) != result.rows:
            if panel.error:
                raise RuntimeError(f"the Data panel failed to open the file: {panel.error}")
            await pilot.pause(0.02)
        table = panel.query_one(PagedTable)
        await pilot.pause()
        result.open_seconds = time.perf_counter() - opened
        result.rss_loaded_mb, result.anon_loaded_mb = rss_mb(), anon_mb()
        table.focus()
        await pilot.pause()

        source: Any = table._source  # the SplitView on screen; its page reads are timed on the instance
        read_page = source.page

        def timed_page(start: int, count: int) -> Any:
            began = time.perf_counter()
            try:
                return read_page(start, count)
            finally:
                result.page_read_ms.append((time.perf_counter() - began) * 1000)

        source.page = timed_page
        for _ in range(page_downs):
            moved = functools.partial(cursor_moved, table, table.cursor)
            result.page_ms.append(await probe.time_key("pagedown", moved))
        result.end_ms = await probe.time_key("end", lambda: table.cursor == result.rows - 1)
        del source.page

        await pilot.press("slash")
        for char in QUERY[:-1]:
            await pilot.press(char)
        await pilot.press(QUERY[-1])
        result.filter_ms = await probe.time_key(
            "enter",
            lambda: panel.view is not None and panel.view.query == QUERY and table.row_count == len(panel.view),
            timeout=120,
        )
        assert panel.view is not None
        result.filtered_rows = len(panel.view)
        result.rss_after_mb, result.anon_after_mb = rss_mb(), anon_mb()


def main() -> None:
    args = parse_args(__doc__ or "")
    rows = 20_000 if args.smoke else 1_000_000
    with scratch_dir("data-browsing") as tmp:
        os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf-datasets-cache")  # before datasets is imported
        print(machine_line(with_torch=False))
        from engine.config import from_dict, save_config

        start = time.perf_counter()
        # in a child process, so that the strings it builds do not count in this process's RSS
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            data_file = pool.submit(write_parquet, tmp / "reviews.parquet", rows).result()
        print(
            f"data: {rows:,} rows written to parquet in {time.perf_counter() - start:.1f} s "
            f"({data_file.stat().st_size / 2**20:.1f} MiB)"
        )
        cfg = from_dict(
            {
                "task": "classification",
                "model": {"name_or_path": "minilm"},
                "data": {"source": str(data_file), "eval_split": None, "max_length": 64},
                "train": {"device": "cpu"},
                "output": {"runs_dir": str(tmp / "runs")},
            }
        )
        config_path = tmp / "config.yaml"
        save_config(cfg, config_path)
        result = Browse(rows, rss_start_mb=rss_mb())
        asyncio.run(browse(cfg, config_path, result, 20 if args.smoke else 200))
    pages = Spread.of(result.page_ms)
    reads = Spread.of(result.page_read_ms)
    print(f"opened in the Data panel in {result.open_seconds:.1f} s (load, Arrow conversion, first page)")
    print_table(
        ["action", "n", "p50 ms", "p95 ms", "max ms"],
        [
            ["page down -> frame", pages.n, pages.p50, pages.p95, pages.max],
            ["  of which: page read (100 rows)", reads.n, reads.p50, reads.p95, reads.max],
            ["end (last row) -> frame", 1, result.end_ms, result.end_ms, result.end_ms],
            [
                f'filter "{QUERY}" -> frame ({result.filtered_rows:,} rows)',
                1,
                result.filter_ms,
                result.filter_ms,
                result.filter_ms,
            ],
        ],
    )
    growth = result.rss_after_mb - result.rss_loaded_mb
    print_table(
        ["memory", "MiB"],
        [
            ["RSS before the app", result.rss_start_mb],
            ["RSS, first page on screen", result.rss_loaded_mb],
            ["RSS after browsing and filter", result.rss_after_mb],
            ["RSS growth while browsing", growth],
            ["anonymous RSS growth (heap, not mapped file pages)", result.anon_after_mb - result.anon_loaded_mb],
        ],
    )
    page_ok = pages.p95 <= PAGE_GOAL_MS
    print(f"page p95 {pages.p95:.1f} ms (goal <= {PAGE_GOAL_MS:g}): {'PASS' if page_ok else 'FAIL'}")
    ratio_line("data_rss_growth_mb", growth, RSS_GOAL_MB, higher_is_better=False)
    ratio_line("data_page_p95_ms", pages.p95, PAGE_GOAL_MS, higher_is_better=False)


if __name__ == "__main__":
    main()
