"""Predictions from a run's model or any model: fill-mask, classify, generate, and base vs fine-tuned side by side.

Models are loaded once per (folder, task, device) and kept; a query runs the transformers pipeline's own
stages (tokenize, forward, postprocess), so results equal ``transformers.pipeline(...)`` on the same folder
and cost no more than calling it (BENCHMARKS.md, predict_latency.py). Whether a prediction head is untrained
is read from the load report. Rendering for the terminal lives in ``engine.cli``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import adapters
from engine.checkpoint import latest_checkpoint
from engine.config import PREDICT_MODES
from engine.errors import ModelError, PredictError, UserError
from engine.models import (
    AUTO_CLASSES,
    label_kwargs,
    load_model,
    load_tokenizer,
    model_config,
    pick_device,
    resolve_model_path,
    untrained_head_warning,
)
from engine.runs import CHECKPOINTS_DIR, CONFIG_FILE, MODEL_DIR

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from engine.config import RunConfig

log = logging.getLogger("tunebench.predict")

#: Architecture-name endings -> task, checked in order.
_HEADS = (
    ("ForMaskedLM", "masked-lm"),
    ("ForPreTraining", "masked-lm"),
    ("ForSequenceClassification", "classification"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
)


# ---------------------------------------------------------------------------------------------------------
# Results: plain data, no tensors


@dataclass(frozen=True)
class TokenScore:
    """One candidate for a mask: the token as text and its probability."""

    token_str: str
    score: float
    token: int
    sequence: str


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class FillMaskResult:
    model: str
    text: str
    mask_token: str
    #: One list per mask in the text, left to right; each ordered by score, highest first.
    masks: tuple[tuple[TokenScore, ...], ...]
    untrained_head: bool = False
    warnings: tuple[str, ...] = ()
    mode: str = "fill-mask"
    #: How the model was made, when it is not a plain model folder: "adapter on minilm".
    description: str = ""


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    text: str
    #: Ordered by score, highest first.
    labels: tuple[LabelScore, ...]
    untrained_head: bool = False
    warnings: tuple[str, ...] = ()
    mode: str = "classify"
    #: How the model was made, when it is not a plain model folder: "adapter on minilm".
    description: str = ""


@dataclass(frozen=True)
class GenerateResult:
    model: str
    prompt: str
    completion: str
    untrained_head: bool = False
    warnings: tuple[str, ...] = ()
    mode: str = "generate"
    #: How the model was made, when it is not a plain model folder: "adapter on minilm".
    description: str = ""


PredictResult = FillMaskResult | ClassifyResult | GenerateResult


@dataclass(frozen=True)
class Comparison:
    """The same query on the base model and on the fine-tuned one, for side-by-side display."""

    base: PredictResult
    tuned: PredictResult


# ---------------------------------------------------------------------------------------------------------
# Which model, which head


def _as_predict_error(exc: UserError) -> PredictError:
    text = str(exc)
    for prefix in ("model.name_or_path: ", "train.device: "):
        if text.startswith(prefix):
            text = ("model: " if prefix.startswith("model") else "device: ") + text[len(prefix) :]
    return PredictError(text)


def resolve(model: str) -> str:
    """A loadable folder or hub id for a run folder, a model folder, a hub id, or ``minilm``."""
    if not model.strip():
        raise PredictError("model: no model given; name a run folder, a model folder, a hub id, or minilm")
    path = Path(model).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():  # a run folder
        latest = latest_checkpoint(path / CHECKPOINTS_DIR)
        if latest is not None and (latest / "config.json").is_file() and _newer_than_model(latest):
            # A run still training, or resumed and killed since its model/ was written: its latest weights are
            # in its latest checkpoint (marked as such), not in model/.
            return str(latest)
        if not (path / MODEL_DIR / "config.json").is_file():
            raise PredictError(
                f"model: the run {model} has no model or checkpoint yet (a run writes {MODEL_DIR}/ when it finishes "
                "or is stopped); wait for its first checkpoint or pick a finished run"
            )
    try:
        return resolve_model_path(model)
    except ModelError as exc:
        raise _as_predict_error(exc) from None


def run_config_of(run_folder: str) -> RunConfig | None:
    """The config a run was trained with, or None when ``run_folder`` is not a run (or its config is damaged)."""
    from engine.config import load_config

    path = Path(run_folder).expanduser() / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except UserError:
        return None


def base_model_of(run_folder: str) -> str | None:
    """The ``model.name_or_path`` a run was trained from, or None when ``run_folder`` is not a run."""
    cfg = run_config_of(run_folder)
    return None if cfg is None else cfg.model.name_or_path


def detect_task(path: str, *, trust_remote_code: bool = False) -> str:
    """masked-lm, classification or causal-lm, from the model's head (``config.architectures``)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = model_config(path, trust_remote_code)
    except ModelError as exc:
        raise _as_predict_error(exc) from None
    architectures = list(getattr(config, "architectures", None) or [])
    for arch in architectures:
        for suffix, task in _HEADS:
            if arch.endswith(suffix):
                return task
    # A bare encoder or decoder (e.g. "BertModel"): predict with the head its family is trained with.
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked-lm"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    raise PredictError(
        f"model: {path} ({', '.join(architectures) or config.model_type}) has no fill-mask, classification or "
        "text-generation head; pick a masked LM, a classifier or a causal LM"
    )


def _token_limit(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable) if usable else 512


# ---------------------------------------------------------------------------------------------------------
# A loaded model


@dataclass
class Predictor:
    """A model, its tokenizer and pipeline, loaded once; ``load_predictor`` hands out cached instances."""

    name: str
    path: str
    task: str
    device: torch.device
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pipe: Any
    head_warning: str | None = None
    token_limit: int = 512
    #: "adapter on minilm" for a LoRA model (loaded as its base with the adapter merged in), else "".
    description: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def mode(self) -> str:
        return PREDICT_MODES[self.task]

    @property
    def untrained_head(self) -> bool:
        return self.head_warning is not None

    def _warnings(self, *extra: str | None) -> tuple[str, ...]:
        # Said anew with every result: what a run's checkpoint holds against its model/ changes as the run goes.
        return tuple(w for w in (self.head_warning, checkpoint_note(self.path), *extra) if w)

    def _encode(self, text: str) -> tuple[Any, str | None]:
        """Tokenize like the pipeline does; over-long text is cut to the model's limit, with a warning."""
        if not text.strip():
            raise PredictError("text: the text is empty; type a sentence to predict on")
        inputs = self.tokenizer(text, return_tensors="pt")
        length = int(inputs["input_ids"].shape[1])
        if length <= self.token_limit:
            return inputs, None
        note = f"the text is {length} tokens; only the first {self.token_limit} were read"
        log.warning("%s: %s", self.name, note)
        return self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.token_limit), note

    def predict(self, text: str, *, top_k: int = 5, max_new_tokens: int = 40) -> PredictResult:
        """Fill-mask, classify or generate, whichever this model's head does."""
        if self.task == "masked-lm":
            return self.fill_mask(text, top_k=top_k)
        if self.task == "classification":
            return self.classify(text, top_k=top_k)
        return self.generate(text, max_new_tokens=max_new_tokens)

    def fill_mask(self, text: str, *, top_k: int = 5) -> FillMaskResult:
        """The ``top_k`` most likely tokens for every mask token in ``text``."""
        mask = self.tokenizer.mask_token
        if self.task != "masked-lm" or mask is None:
            raise PredictError(f"model: {self.name} is not a masked language model; it can {self.mode}")
        if top_k < 1:
            raise PredictError(f"top-k: expected at least 1, got {top_k}")
        inputs, note = self._encode(text)
        if not bool((inputs["input_ids"] == self.tokenizer.mask_token_id).any()):
            if note is not None and mask in text:
                raise PredictError(
                    f"text: every {mask} is past the first {self.token_limit} tokens this model reads; "
                    "move it earlier or shorten the text"
                )
            other = next((m for m in ("[MASK]", "<mask>", "[mask]") if m in text and m != mask), None)
            hint = f" (this model's mask token is {mask}, not {other})" if other else ""
            raise PredictError(
                f"text: no {mask} in the text{hint}; type {mask} where the model should fill in a word, "
                f'e.g. "This is a {mask} movie!"'
            )
        with self._lock:
            outputs = self.pipe.forward(inputs)
            # A top-k past the vocabulary lists every token, as a classifier's lists every label.
            rows = self.pipe.postprocess(outputs, top_k=min(top_k, outputs["logits"].shape[-1]))
        if rows and isinstance(rows[0], dict):
            rows = [rows]  # one mask: the pipeline returns a flat list
        masks = tuple(
            tuple(TokenScore(r["token_str"], float(r["score"]), int(r["token"]), r["sequence"]) for r in row)
            for row in rows
        )
        return FillMaskResult(
            self.name, text, mask, masks, self.untrained_head, self._warnings(note), description=self.description
        )

    def classify(self, text: str, *, top_k: int | None = None) -> ClassifyResult:
        """Label names with probabilities, highest first (all labels when ``top_k`` is None)."""
        if self.task != "classification":
            raise PredictError(f"model: {self.name} is not a classifier; it can {self.mode}")
        if top_k is not None and top_k < 1:
            raise PredictError(f"top-k: expected at least 1, got {top_k}")
        inputs, note = self._encode(text)
        with self._lock:
            outputs = self.pipe.forward(inputs)
            rows = self.pipe.postprocess(outputs, top_k=top_k, _legacy=False)
        labels = tuple(LabelScore(str(r["label"]), float(r["score"])) for r in rows)
        return ClassifyResult(
            self.name, text, labels, self.untrained_head, self._warnings(note), description=self.description
        )

    def generate(
        self,
        text: str,
        *,
        max_new_tokens: int = 40,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> GenerateResult:
        """Continue ``text``: greedy by default, or sampled (``do_sample``) with a temperature and nucleus."""
        import torch

        if self.task != "causal-lm":
            raise PredictError(f"model: {self.name} is not a causal language model; it can {self.mode}")
        if max_new_tokens < 1:
            raise PredictError(f"max-new-tokens: expected at least 1, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise PredictError(f"temperature: expected a positive number, got {temperature}")
        limit = self.token_limit
        if max_new_tokens >= limit:
            raise PredictError(
                f"max-new-tokens: {self.name} reads at most {limit} tokens, the prompt's and the new ones; "
                f"give fewer than {limit}"
            )
        if not text.strip():
            raise PredictError("text: the text is empty; type a sentence to predict on")
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        eos = self.tokenizer.eos_token_id
        if eos is not None and ids.shape[1] > 1 and int(ids[0, -1]) == eos:
            ids = ids[:, :-1]  # a prompt that ends in end-of-text gives the model nothing to continue
        room = limit - max_new_tokens
        note = None
        if ids.shape[1] > room:  # the end of a prompt is what its continuation follows
            note = f"the prompt is {ids.shape[1]} tokens; only its last {room} were read, leaving room for new ones"
            log.warning("%s: %s", self.name, note)
            ids = ids[:, -room:]
        settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos,
        }
        if do_sample:
            settings.update(temperature=temperature, top_p=top_p)
        else:
            settings.update(temperature=None, top_p=None, top_k=None)  # silence the sampling-only defaults
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            ids = ids.to(self.device)
            generate: Any = self.model.generate
            out = generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
        completion = _continuation(self.tokenizer, out[0], ids.shape[1])
        return GenerateResult(
            self.name, text, completion, self.untrained_head, self._warnings(note), description=self.description
        )


def _continuation(tokenizer: Any, ids: Any, prompt_length: int) -> str:
    """What follows the prompt in ``ids`` (prompt and new tokens), as text that follows the prompt's own: the
    whole decoded less the prompt decoded, as transformers' text-generation pipeline does. Decoded alone, the
    new tokens lose the space before them (WordPiece, SentencePiece): "the cafe wasdigital"."""
    prompt = str(tokenizer.decode(ids[:prompt_length], skip_special_tokens=True))
    whole = str(tokenizer.decode(ids, skip_special_tokens=True))
    if whole.startswith(prompt):
        return whole[len(prompt) :]
    alone = str(tokenizer.decode(ids[prompt_length:], skip_special_tokens=True))
    return alone if not alone or alone[0].isspace() else " " + alone


_CACHE: dict[tuple[Any, ...], Predictor] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded model (frees their memory once no caller holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build(name: str, path: str, task: str, device: torch.device, trust_remote_code: bool, **kwargs: Any) -> Predictor:
    import torch
    from transformers import pipeline

    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
        # A head missing from the checkpoint is initialized at random: seed it so the same (untrained) model
        # gives the same answers in every process, without touching the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            loaded = load_model(task, path, trust_remote_code=trust_remote_code, **kwargs)
    except ModelError as exc:
        raise _as_predict_error(exc) from None
    model: Any = loaded.model
    model = model.to(device).eval()
    make_pipeline: Any = pipeline  # its overloads do not know every tokenizer class
    pipe = None
    if task == "masked-lm":
        pipe = make_pipeline("fill-mask", model=model, tokenizer=tokenizer, device=device)
    elif task == "classification":
        pipe = make_pipeline("text-classification", model=model, tokenizer=tokenizer, device=device)
    return Predictor(
        name=name,
        path=path,
        task=task,
        device=device,
        model=model,
        tokenizer=tokenizer,
        pipe=pipe,
        head_warning=untrained_head_warning(loaded.newly_initialized, task),
        token_limit=_token_limit(tokenizer, model),
        description=describe(path),
    )


def label_names_of(model: str) -> list[str]:
    """The class names of a classifier's head, by class id, from the ``config.json`` of ``model`` (a run folder,
    model folder or checkpoint); [] when it has none or cannot be read. Reads one small file, no weights."""
    import json

    try:
        config = json.loads((Path(resolve(model)) / "config.json").read_text(encoding="utf-8"))
        return _by_class_id(config.get("id2label") or {})
    except (UserError, OSError, ValueError, AttributeError):
        return []


def _by_class_id(id2label: dict[Any, Any]) -> list[str]:
    """A head's class names in class-id order (config.json's keys are strings: "10" comes after "9")."""
    return [str(name) for _, name in sorted(id2label.items(), key=lambda item: int(item[0]))]


def describe(model: str) -> str:
    """ "adapter on minilm" when ``model`` (a run folder, model folder or checkpoint) holds a LoRA adapter, else "";
    reads one small file, so a front can show it before the model loads."""
    try:
        path = resolve(model)
    except PredictError:
        return ""
    if not adapters.is_adapter_folder(path):
        return ""
    try:
        base = str(adapters.read_adapter_config(path)["base_model_name_or_path"])
    except UserError:
        return ""
    return f"adapter on {Path(base).name if Path(base).is_absolute() else base}"


def _newer_than_model(checkpoint: Path) -> bool:
    """Whether a run's checkpoint was written after its model/ (or the run has no model/ yet)."""
    model = checkpoint.parent.parent / MODEL_DIR
    if not (model / "config.json").is_file():
        return True
    return checkpoint.stat().st_mtime > model.stat().st_mtime


def checkpoint_note(path: str) -> str | None:
    """What a run's checkpoint folder holds against the run's model/, said beside its predictions: "checkpoint-40:
    the run has no model yet; this is its latest checkpoint", and so on."""
    folder = Path(path)
    if folder.parent.name != CHECKPOINTS_DIR:
        return None
    if not (folder.parent.parent / MODEL_DIR / "config.json").is_file():
        from engine.runs import RunDir

        live = RunDir(folder.parent.parent).live_state()
        why = f"it is {live}" if live else "it ended without one: killed? tunebench run --resume RUN finishes it"
        return f"{folder.name}: the run has no model yet ({why}); this is its latest checkpoint"
    if _newer_than_model(folder):
        return (
            f"{folder.name}: written after the run's {MODEL_DIR}/ (it was resumed and has not ended since); these "
            "are its latest weights"
        )
    return f"{folder.name}: a checkpoint of the run; its {MODEL_DIR}/ holds the weights it ended with"


def load_predictor(
    model: str,
    *,
    task: str | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
    label_names: list[str] | None = None,
) -> Predictor:
    """The model behind ``model`` (run folder, model folder, hub id or ``minilm``), loaded once and cached.

    Args:
        task: Load with this head instead of the model's own (used to put a base model beside a fine-tune).
        device: auto | cpu | cuda | cuda:N | mps.
        label_names: For a classification head that is not in the checkpoint: its labels, index = class id.
    """
    try:
        placed = pick_device(device)
    except ModelError as exc:
        raise _as_predict_error(exc) from None
    # A live run deletes its older checkpoints as it saves newer ones (save_total_limit): one that went while it
    # was picked or loaded gives way to the newest.
    for _ in range(_ROTATION_TRIES):
        try:
            path = resolve(model)
        except FileNotFoundError:  # the latest checkpoint went as it was looked at
            continue
        try:
            return _load_cached(model, path, task, placed, trust_remote_code, label_names)
        except Exception:
            if Path(path).parent.name != CHECKPOINTS_DIR or not _replaced(model, path):
                raise
    raise PredictError(
        f"model: {model} replaced its checkpoints faster than they loaded; ask again, or wait for the run to end"
    )


#: Loads of a live run's latest checkpoint before giving up, each after the one before was rotated away.
_ROTATION_TRIES = 3


def _replaced(model: str, checkpoint: str) -> bool:
    """Whether ``checkpoint``, ``model``'s latest when it was picked, is gone or is no longer its latest."""
    try:
        return not Path(checkpoint).exists() or resolve(model) != checkpoint
    except (UserError, OSError):
        return True  # the next try says what is wrong, if anything


def _load_cached(
    model: str,
    path: str,
    task: str | None,
    placed: torch.device,
    trust_remote_code: bool,
    label_names: list[str] | None,
) -> Predictor:
    task = task or detect_task(path, trust_remote_code=trust_remote_code)
    if task not in AUTO_CLASSES:
        raise PredictError(f"task: expected one of {', '.join(AUTO_CLASSES)}, got {task}")
    config_file = Path(path) / "config.json"
    # a run folder's model/ is replaced when the run saves again: a new file means a new model
    stamp = config_file.stat().st_mtime_ns if config_file.is_file() else None
    key = (path, stamp, task, str(placed), trust_remote_code, tuple(label_names or ()))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            # Other labels on the same model file replace the model loaded with the ones before (a base queried
            # before and after its data's classes were known), so that no stale copy stays in memory.
            for stale in [k for k in _CACHE if k[:5] == key[:5]]:
                del _CACHE[stale]
            kwargs = label_kwargs(task, label_names, None) if label_names else {}  # as a run names its classes
            hit = _CACHE[key] = _build(model, path, task, placed, trust_remote_code, **kwargs)
    return hit


def predict(model: str, text: str, *, top_k: int = 5, max_new_tokens: int = 40, device: str = "auto") -> PredictResult:
    """One query on ``model``, with whatever its head does (fill-mask, classify or generate)."""
    return load_predictor(model, device=device).predict(text, top_k=top_k, max_new_tokens=max_new_tokens)


def compare(
    text: str,
    tuned: str,
    base: str | None = None,
    *,
    top_k: int = 5,
    max_new_tokens: int = 40,
    device: str = "auto",
) -> Comparison:
    """The same query on the base model and the fine-tuned one; ``base`` defaults to the run's starting model.

    The base is loaded with the fine-tuned model's head type, so an untrained base head is flagged as such.
    """
    fine = load_predictor(tuned, device=device)
    base = base or base_model_of(tuned)
    if base is None:
        raise PredictError(f"model: {tuned} is not a run folder, so its base model is unknown; name the base model")
    labels = None
    if fine.task == "classification":
        labels = _by_class_id(dict(fine.model.config.id2label or {}))
    original = load_predictor(base, task=fine.task, device=device, label_names=labels)
    return Comparison(
        base=original.predict(text, top_k=top_k, max_new_tokens=max_new_tokens),
        tuned=fine.predict(text, top_k=top_k, max_new_tokens=max_new_tokens),
    )
