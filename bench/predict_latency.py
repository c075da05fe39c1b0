"""Prediction latency: ``engine.predict`` fill-mask against a direct ``pipeline("fill-mask")`` call.

Both sides use the same loaded model object and tokenizer (the MiniLM encoder with a masked-LM head) and
the same texts, so the difference is only the engine's own work around the model: validation, the cut to
the model's token limit, and turning the pipeline's rows into result objects. Calls alternate engine and
pipeline per text, with the order flipped every round, after a warm-up; latency is wall time per call.

    python bench/predict_latency.py            # ~30 seconds on 2 CPU cores
    python bench/predict_latency.py --smoke
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from benchlib import (
    Spread,
    machine_line,
    make_bert,
    median,
    parse_args,
    print_table,
    quiet_transformers,
    ratio_line,
    run_in_thread,
    scratch_dir,
)

GOAL = 1.1

TEXTS = [
    "This is a [MASK] movie!",
    "The food was [MASK] and the staff were friendly.",
    "I would [MASK] recommend this place to anyone who likes quiet evenings.",
    "The plot was thin, the acting was [MASK], and the ending came far too late.",
    "After two hours of waiting we finally got our table, and the [MASK] was worth it.",
    "A [MASK] film about memory, loss and the small things that hold a family together over many years.",
    "The hotel room was clean, the bed was comfortable, but the [MASK] outside kept us awake all night long.",
    "Honestly one of the most [MASK] experiences I have had at a restaurant in this city, and I have eaten at "
    "most of them over the last ten years, from the fancy places downtown to the food trucks by the river.",
]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(predictor: Any, direct: Any, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Milliseconds per call for each text: (engine, pipeline). Runs in a worker thread, as the TUI's
    predictions do."""
    # Same answers, or the comparison is void.
    for text in TEXTS:
        ours = [t.token for t in predictor.fill_mask(text, top_k=5).masks[0]]
        theirs = [int(r["token"]) for r in direct(text, top_k=5)]
        assert ours == theirs, (text, ours, theirs)
    engine_ms: dict[str, list[float]] = {t: [] for t in TEXTS}
    pipeline_ms: dict[str, list[float]] = {t: [] for t in TEXTS}
    for n in range(rounds):
        for text in TEXTS:
            calls = [
                (engine_ms, functools.partial(predictor.fill_mask, text, top_k=5)),
                (pipeline_ms, functools.partial(direct, text, top_k=5)),
            ]
            for store, call in calls if n % 2 == 0 else calls[::-1]:
                store[text].append(timed(call))
    return engine_ms, pipeline_ms


def main() -> None:
    args = parse_args(__doc__ or "")
    quiet_transformers()
    print(machine_line())
    import torch
    from transformers import pipeline

    from engine.predict import clear_cache, load_predictor

    rounds = 2 if args.smoke else 15
    with scratch_dir("predict") as tmp:
        if args.smoke:
            model = str(make_bert(tmp / "model", "tiny"))
            label = "random tiny BERT"
        else:
            model = "minilm"
            label = "minilm (all-MiniLM-L6-v2, masked-LM head newly initialized)"
        predictor = load_predictor(model, task="masked-lm", device="cpu")
        make_pipeline: Any = pipeline  # its overloads do not list every tokenizer class
        direct = make_pipeline(
            "fill-mask", model=predictor.model, tokenizer=predictor.tokenizer, device=torch.device("cpu")
        )
        print(f"model: {label}; {len(TEXTS)} texts, {rounds} rounds, top_k 5, torch threads {torch.get_num_threads()}")
        engine_ms, pipeline_ms = run_in_thread(functools.partial(measure, predictor, direct, rounds))
        clear_cache()

    rows = []
    for text in TEXTS:
        e, p = Spread.of(engine_ms[text]), Spread.of(pipeline_ms[text])
        tokens = len(predictor.tokenizer(text)["input_ids"])
        rows.append([tokens, e.p50, p.p50, e.p50 / p.p50])
    print_table(["tokens", "engine p50 ms", "pipeline p50 ms", "engine/pipeline"], rows)
    all_e = Spread.of([x for v in engine_ms.values() for x in v])
    all_p = Spread.of([x for v in pipeline_ms.values() for x in v])
    print_table(
        ["side", "calls", "p50 ms", "p95 ms", "max ms"],
        [
            ["engine.predict", all_e.n, all_e.p50, all_e.p95, all_e.max],
            ["pipeline", all_p.n, all_p.p50, all_p.p95, all_p.max],
        ],
    )
    # Each text's median ratio, then the median over texts: long and short texts weigh the same.
    ratio = median([r[3] for r in rows])
    ratio_line("predict_engine_vs_pipeline", ratio, GOAL, higher_is_better=False)


if __name__ == "__main__":
    main()
