"""Predict panel: one text, the base model and the fine-tuned model side by side.

The engine is reached through a small adapter (``engine_backend``) that runs in the worker thread; torch and
transformers load there, with the first prediction (``engine.predict`` defers them). Tests pass a fake backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.validation import Integer
from textual.widgets import Input, Label, Static
from textual.worker import Worker, WorkerState, get_current_worker

from engine.config import PREDICT_MODES, RunConfig
from engine.errors import ConfigError, describe_failure
from engine.events import LogMessage
from engine.models import label_kwargs
from tui import heap
from tui.bridge import LibraryLog
from tui.panels import PANELS
from tui.panels.data import classes_key
from tui.widgets.in_order_input import InOrderInput
from tui.widgets.panel_bar import focus_now
from tui.widgets.score_bars import ScoreBars

TITLE = PANELS["predict"][1]
EXAMPLES = {
    "fill-mask": "This is a [MASK] movie!",
    "classify": "The food was wonderful and the staff were friendly.",
    "generate": "The movie was",
}


@dataclass(frozen=True)
class Option:
    """A whole-number setting typed beside the text: its input, its name in messages, and its range."""

    widget_id: str
    name: str
    default: int
    low: int
    high: int

    def parse(self, text: str) -> int:
        """The value of ``text``; ValueError with one line naming the setting and its range otherwise."""
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not self.low <= value <= self.high:
            raise ValueError(f"{self.name}: expected a whole number from {self.low} to {self.high}, got {text!r}")
        return value


TOP_K = Option("predict-top-k", "top-k", 5, 1, 50)
MAX_NEW_TOKENS = Option("predict-max-new", "max new tokens", 40, 1, 512)


@dataclass(frozen=True)
class ScoreGroup:
    """One set of bars: the candidates for one mask, or the label probabilities."""

    heading: str
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ModelView:
    """What one side of the panel shows for one model."""

    model: str
    mode: str
    groups: tuple[ScoreGroup, ...] = ()
    text: str = ""
    warnings: tuple[str, ...] = ()
    untrained_head: bool = False
    #: generate: the prompt ``text`` continues, as it was asked (the field may hold another text by now).
    prompt: str = ""


@dataclass(frozen=True)
class PredictRequest:
    text: str
    base: str
    tuned: str | None
    task: str
    device: str
    top_k: int = 5
    max_new_tokens: int = 40
    #: The labels of the base model's classifier as a run of the config starts it: the data's classes. Empty
    #: where they are not known yet: the checkpoint's own labels then.
    label_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PredictionView:
    base: ModelView
    tuned: ModelView | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


Backend = Callable[[PredictRequest], PredictionView]


def to_view(result: Any) -> ModelView:
    """An ``engine.predict`` result as plain text and scores."""
    mode = result.mode
    groups: tuple[ScoreGroup, ...] = ()
    text = ""
    if mode == "fill-mask":
        many = len(result.masks) > 1
        groups = tuple(
            ScoreGroup(
                f"{result.mask_token} {i} of {len(result.masks)}" if many else result.mask_token,
                tuple((t.token_str, t.score) for t in candidates),
            )
            for i, candidates in enumerate(result.masks, 1)
        )
    elif mode == "classify":
        groups = (ScoreGroup("labels", tuple((s.label, s.score) for s in result.labels)),)
    else:
        text = result.completion
    return ModelView(
        result.model,
        mode,
        groups,
        text,
        tuple(result.warnings),
        bool(result.untrained_head),
        prompt=getattr(result, "prompt", ""),
    )


def _label_names_of(model: str) -> list[str]:
    from engine import predict  # with the first set-aside run, not with the panel

    return predict.label_names_of(model)


def engine_backend(request: PredictRequest) -> PredictionView:
    """Predict through ``engine.predict`` (worker thread): both models when there is a fine-tuned one."""
    from engine import predict
    from engine.logs import quiet_libraries

    quiet_libraries()
    if request.tuned:
        pair = predict.compare(
            request.text,
            request.tuned,
            top_k=request.top_k,
            max_new_tokens=request.max_new_tokens,
            device=request.device,
        )
        return PredictionView(to_view(pair.base), to_view(pair.tuned))
    single = predict.load_predictor(
        request.base, task=request.task, device=request.device, label_names=list(request.label_names) or None
    )
    result = single.predict(request.text, top_k=request.top_k, max_new_tokens=request.max_new_tokens)
    return PredictionView(to_view(result), None)


class PredictPanel(Vertical):
    """Type a text, press Enter: predictions of the base and the fine-tuned model, side by side."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+t", "example", "Example", tooltip="Fill in an example text for this model's task"),
        Binding("ctrl+b", "base_only", "Base only", tooltip="Predict with the base model only; ctrl+b again: both"),
        Binding("ctrl+b", "both_models", "Both", tooltip="Predict with the fine-tuned run set aside again too"),
    ]

    class ClassesWanted(Message):
        """A base classifier is asked for before the Data panel has read the data's classes: read them."""

    class Predicted(Message):
        def __init__(
            self,
            request: PredictRequest,
            view: PredictionView,
            worker: Worker[None] | None = None,
        ) -> None:
            super().__init__()
            self.request = request
            self.view = view
            #: The worker that predicted it: only the latest request's answer shows.
            self.worker = worker

    def __init__(self, cfg: RunConfig, backend: Backend | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cfg = cfg
        self.backend: Backend = backend or engine_backend
        self.tuned: str | None = None
        self.tuned_origin = ""
        self.tuned_description = ""
        #: The fine-tuned run's config (its task and base model); None without a run, or when it is unreadable.
        self.tuned_config: RunConfig | None = None
        #: The run ctrl+b set aside (folder, origin), which ctrl+b brings back.
        self.set_aside: tuple[str, str] | None = None
        #: (base, fine-tuned, mode) the sides show results of, or hints for.
        self._models_shown: tuple[str, str | None, str, tuple[str, ...]] | None = None
        #: The classes of the data's label column, with the data config the Data panel read them for.
        self._data_classes: tuple[tuple[str, str | None, str, str | None], list[str]] | None = None
        #: The data config the Data panel last answered for, with classes or without (no label column, an error).
        self._classes_read_for: tuple[str, str | None, str, str | None] | None = None
        #: A text asked of the base classifier while its classes were being read: asked once they are.
        self._waits_for_classes: str | None = None
        #: The (base, fine-tuned, device, base labels) models predicted with so far: the first query of each loads
        #: them.
        self._loaded: set[tuple[str, str | None, str, tuple[str, ...]]] = set()
        self.result: PredictionView | None = None
        self.busy = False
        #: The worker of the latest request (earlier ones' answers and errors are dropped).
        self._worker: Worker[None] | None = None
        #: The text of the last prediction asked for.
        self._asked: str | None = None
        #: The status line shows a top-k or max-new-tokens message (cleared once the value is fixed).
        self.option_error = False

    @property
    def mode(self) -> str:
        """The fine-tuned run's task, which its base is compared on; else the config's."""
        task = self.tuned_config.task if self.tuned_config else self.cfg.task
        return PREDICT_MODES.get(task, "fill-mask")

    @property
    def base(self) -> str:
        """The model the base side predicts with: the run's starting model, else the config's."""
        return (self.tuned_config or self.cfg).model.name_or_path

    def _models(self) -> tuple[str, str | None, str, tuple[str, ...]]:
        """What the results shown answer for: the models, the task, and the classes the base is given."""
        return self.base, self.tuned, self.mode, tuple(self.base_classes())

    def compose(self) -> ComposeResult:
        yield Static(TITLE, id="predict-title", classes="panel-title")
        with Horizontal(id="predict-controls", classes="controls"):
            yield InOrderInput(placeholder=self._placeholder(), id="predict-input", compact=True)
            for option, label in ((TOP_K, "top-k"), (MAX_NEW_TOKENS, "max new")):
                yield Label(label, classes="option-key", id=f"{option.widget_id}-key")
                yield InOrderInput(
                    str(option.default),
                    type="integer",
                    max_length=len(str(option.high)),
                    validators=[Integer(option.low, option.high)],  # marks the field -invalid as it is typed
                    compact=True,
                    id=option.widget_id,
                    classes="predict-option",
                )
        yield Static("", id="predict-status")
        with Horizontal(id="predict-sides"):
            with Vertical(id="predict-base", classes="predict-side"):
                yield Static("", classes="side-title")
                yield Static("", classes="predict-warning warning")
                yield VerticalScroll(classes="predict-results")
            with Vertical(id="predict-tuned", classes="predict-side"):
                yield Static("", classes="side-title")
                yield Static("", classes="predict-warning warning")
                yield VerticalScroll(classes="predict-results")

    def _placeholder(self) -> str:
        return f"{self.mode}: type a text and press Enter, e.g. {EXAMPLES[self.mode]}"

    def on_mount(self) -> None:
        for warning in self.query(".predict-warning"):
            warning.display = False
        self._refresh_models()

    def _show_options(self) -> None:
        """top-k for fill-mask and classify; max new tokens for generation (greedy, so no top-k)."""
        generate = self.mode == "generate"
        for option, shown in ((TOP_K, not generate), (MAX_NEW_TOKENS, generate)):
            self.query_one(f"#{option.widget_id}").display = shown
            self.query_one(f"#{option.widget_id}-key").display = shown

    def focus_main(self) -> None:
        focus_now(self.query_one("#predict-input", Input))

    # -- models ---------------------------------------------------------------------------------------------
    def set_config(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._refresh_models()

    def _refresh_models(self) -> None:
        """Headings, placeholder and options for the models as they are now; results shown for other models
        (another run, base or task) are cleared, since they would read as these models' answers."""
        self.query_one("#predict-input", Input).placeholder = self._placeholder()
        self._show_options()
        self._render_headings()
        if self._models() != self._models_shown:
            asked = self._asked if self.busy else None
            self._clear_results()
            if asked is not None:  # asked of the models just replaced, and not answered yet: ask these
                self.predict(asked)

    def set_data_classes(self, key: tuple[str, str | None, str, str | None], classes: list[str] | None) -> None:
        """The classes the Data panel found for the data config ``key`` (``data.classes_key``); None: none."""
        self._data_classes = (key, classes) if classes else None
        self._classes_read_for = key
        text, self._waits_for_classes = self._waits_for_classes, None
        if text is not None:  # the config changed while its classes were read: predict() asks again
            self.predict(text)
        elif self.is_mounted:
            self._refresh_models()  # bars of the last classes would read as these classes' answer

    def _classes_unread(self) -> bool:
        """Whether the base alone would classify before the data's classes are known, as a 2-label model."""
        if self.mode != "classify" or self.tuned or (self.set_aside and _label_names_of(self.set_aside[0])):
            return False
        return self._classes_read_for != classes_key(self.cfg.data)

    def base_classes(self) -> list[str]:
        """The labels of the base model's classifier as a run of this config starts it (``label_kwargs``: the
        data's classes, and ``model.num_labels`` beyond them). [] where they are not known for this config, for
        another task, or where ``model.num_labels`` is too small for them (a run refuses that)."""
        known = self._data_classes
        if self.cfg.task != "classification" or known is None or known[0] != classes_key(self.cfg.data):
            return []
        try:
            return list(label_kwargs(self.cfg.task, known[1], self.cfg.model.num_labels)["id2label"].values())
        except ConfigError:
            return []

    def _base_labels(self) -> list[str]:
        """The base's classes: those of the run ctrl+b set aside (as the base beside it had them), else those a
        run of this config would start with."""
        if self.set_aside is not None and self.cfg.task == "classification":
            return _label_names_of(self.set_aside[0]) or self.base_classes()
        return self.base_classes()

    def set_tuned(self, run_dir: str | None, origin: str = "") -> None:
        """Use ``run_dir`` (a run folder) as the fine-tuned side; None = base model only."""
        self.tuned = run_dir
        self.tuned_origin = origin
        # "adapter on minilm": read from one small file, so the heading says it before the model loads
        if run_dir:
            from engine import predict  # with the first run the panel names, not with the panel

            self.tuned_description, self.tuned_config = predict.describe(run_dir), predict.run_config_of(run_dir)
            self.set_aside = None
        else:
            self.tuned_description, self.tuned_config = "", None
        self._refresh_models()
        self.refresh_bindings()  # ctrl+b: "Base only" or "Both"

    def _render_headings(self) -> None:
        if self.tuned:
            tuned = Path(self.tuned).name
        elif self.set_aside:
            tuned = f"{Path(self.set_aside[0]).name} set aside (ctrl+b)"
        else:
            tuned = "none yet"
        self.query_one("#predict-title", Static).update(
            Content(f"{TITLE} · {self.mode} · base {self.base} · fine-tuned {tuned}")
        )
        self.query_one("#predict-base .side-title", Static).update(Content(f"base · {self.base}"))
        notes = [n for n in (self.tuned_description, self.tuned_origin) if n] if self.tuned else []
        heading = f"fine-tuned · {tuned}" + (f" ({', '.join(notes)})" if notes else "")
        self.query_one("#predict-tuned .side-title", Static).update(Content(heading))

    def _clear_results(self) -> None:
        """Empty both sides; the fine-tuned side says how to get a result."""
        self.result = None
        self._models_shown = self._models()
        if self._worker is not None:  # an answer on its way is for what is being cleared: it will be dropped
            self._worker = None
            self.busy = False
        if not self.option_error:  # what it said was about the results cleared (a mistake in an option stays)
            self._status("")
        self._fill_side("#predict-base", None)
        if self.tuned:
            hint = "press Enter to predict with this run and its base"
        elif self.set_aside:
            hint = f"base only: ctrl+b predicts with {Path(self.set_aside[0]).name} again"
        else:
            hint = "train a run (F4, s) or pick one in Runs (F6, p)"
        self._fill_side("#predict-tuned", None, hint)

    # -- prediction -----------------------------------------------------------------------------------------
    @on(Input.Submitted, "#predict-input")
    def _on_submit(self, event: Input.Submitted) -> None:
        self.predict(event.value)

    @on(Input.Submitted, ".predict-option")
    def _on_option_submit(self, event: Input.Submitted) -> None:
        self.predict(self.query_one("#predict-input", Input).value)

    @on(Input.Changed, ".predict-option")
    def _on_option_changed(self, event: Input.Changed) -> None:
        option = TOP_K if event.input.id == TOP_K.widget_id else MAX_NEW_TOKENS
        try:
            option.parse(event.value)
        except ValueError as exc:
            self.option_error = True
            self._status(str(exc), error=True)
            return
        if self.option_error:
            self.option_error = False
            self._status("")

    def option_value(self, option: Option) -> int:
        """The value typed for ``option``; ValueError (one line) when it is not a whole number in range."""
        return option.parse(self.query_one(f"#{option.widget_id}", Input).value)

    def predict(self, text: str) -> None:
        if not text.strip():
            self._clear_results()
            self._status("type a text first; ctrl+t fills in an example", error=True)
            return
        shown = MAX_NEW_TOKENS if self.mode == "generate" else TOP_K
        try:
            value = self.option_value(shown)
        except ValueError as exc:
            self._status(f"not predicted: {exc}", error=True)
            focus_now(self.query_one(f"#{shown.widget_id}", Input))
            return
        if self._classes_unread():
            self._waits_for_classes = text
            self._status(f"reading the classes of {self.cfg.data.source} first…")
            self.post_message(self.ClassesWanted())
            return
        # The hidden setting does not apply to this mode; its default fills the request.
        top_k = value if shown is TOP_K else TOP_K.default
        max_new_tokens = value if shown is MAX_NEW_TOKENS else MAX_NEW_TOKENS.default
        request = PredictRequest(
            text=text,
            base=self.base,
            tuned=self.tuned,
            task=self.cfg.task,
            device=self.cfg.train.device,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            label_names=tuple(self._base_labels()),
        )
        self.busy = True
        self._asked = text
        self._models_shown = self._models()  # what its answer will be shown for
        both = "both models" if self.tuned else self.cfg.model.name_or_path
        self._status(f"predicting with {both}… (the first query loads the models)")
        self._worker = self._run(request)

    @work(thread=True, exclusive=True, group="predict", exit_on_error=False, description="predict")
    def _run(self, request: PredictRequest) -> None:
        view = self.backend(request)
        models = (request.base, request.tuned, request.device, request.label_names)
        if models not in self._loaded:
            self._loaded.add(models)
            heap.freeze()  # the models just loaded stay while they are the ones predicted with
        self.post_message(self.Predicted(request, view, get_current_worker()))

    @on(Predicted)
    def _on_predicted(self, message: Predicted) -> None:
        if message.worker is not self._worker:
            return  # an earlier request's, or one for models since replaced (_clear_results forgot it)
        self.busy = False
        self.result = message.view
        self._status(" · ".join(message.view.notes))
        self._fill_side("#predict-base", message.view.base)
        if message.view.tuned is not None:
            self._fill_side("#predict-tuned", message.view.tuned)

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state != WorkerState.ERROR:
            return  # another group's, or an earlier request's
        self.busy = False
        assert event.worker.error is not None
        message, tb = describe_failure(event.worker.error)
        self._clear_results()
        if self.tuned and message.startswith("model: "):  # the run's model failed: the base can answer alone
            message += "; ctrl+b asks the base alone"
        self._status(message, error=True)
        if tb:
            self.post_message(LibraryLog(LogMessage("error", f"{message}\n{tb}", "tunebench.tui")))

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#predict-status", Static)
        status.update(Content(text))
        status.set_class(error, "error")

    def _fill_side(self, side: str, view: ModelView | None, empty: str = "") -> None:
        warning = self.query_one(f"{side} .predict-warning", Static)
        results = self.query_one(f"{side} .predict-results", VerticalScroll)
        if not results.is_attached:  # the app is closing
            return
        results.remove_children()
        if view is None:
            warning.display = False
            results.mount(Static(Content(empty), classes="hint"))
            return
        warnings = view.warnings
        if view.untrained_head and not warnings:
            warnings = ("this model's head is untrained, so its predictions are random",)
        warning.update(Content("⚠ " + "; ".join(warnings)) if warnings else "")
        warning.display = bool(warnings)
        widgets: list[Static | ScoreBars] = []
        for group in view.groups:
            widgets.append(Static(Content(group.heading), classes="group-title"))
            bars = ScoreBars()
            bars.set_scores(list(group.scores))
            widgets.append(bars)
        if view.mode == "generate":
            widgets.append(Static(Content.assemble((view.prompt, "dim"), view.text), classes="generated"))
        results.mount_all(widgets)

    def action_example(self) -> None:
        field_ = self.query_one("#predict-input", Input)
        field_.value = EXAMPLES[self.mode]
        focus_now(field_)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """ctrl+b sets the fine-tuned run aside, and brings it back: one of the two shows at a time."""
        if action == "base_only":  # greyed while there is no run to set aside
            return True if self.tuned else (False if self.set_aside else None)
        if action == "both_models":
            return self.tuned is None and self.set_aside is not None
        return True

    def action_base_only(self) -> None:
        if self.tuned:
            shown = self._shown_text()
            self.set_aside = (self.tuned, self.tuned_origin)
            self.set_tuned(None)
            self._ask_again(shown)

    def action_both_models(self) -> None:
        if self.set_aside:
            shown = self._shown_text()
            self.set_tuned(*self.set_aside)
            self._ask_again(shown)

    def _shown_text(self) -> str | None:
        """The text whose answer shows, which a ctrl+b asks again of the models it switches to."""
        return self._asked if self.result is not None else None

    def _ask_again(self, text: str | None) -> None:
        if text is not None and not self.busy:  # busy: _refresh_models asked these models already
            self.predict(text)
