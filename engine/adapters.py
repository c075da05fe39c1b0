"""LoRA adapters (``peft``): which layers get them, wrapping a model, what trains, and adapter folders.

A LoRA run's ``model/``, and each of its checkpoints, is an adapter folder: peft's ``adapter_config.json`` and
``adapter_model.safetensors``, the fine-tuned model's ``config.json`` (its head and label names) and the
tokenizer. ``adapter_config.json`` names the base as the run's config does (``minilm`` stays ``minilm``; a local
folder is made absolute), and ``engine.models.load_model`` loads base and adapter wherever such a folder is given.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import AUTO
from engine.errors import CheckpointError, ConfigError, ModelError

if TYPE_CHECKING:
    import torch

    from engine.config import LoraConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INSTALL = "pip install 'tunebench[lora]'"

#: Leaf names of the query, key and value projections (apart or fused) in the architectures transformers ships.
ATTENTION_PROJECTIONS = (
    "query",  # BERT, RoBERTa, ELECTRA, MiniLM
    "key",
    "value",
    "q_proj",  # LLaMA, Mistral, Qwen, OPT, BART, GPT-J
    "k_proj",
    "v_proj",
    "q_lin",  # DistilBERT
    "k_lin",
    "v_lin",
    "query_proj",  # DeBERTa-v2
    "key_proj",
    "value_proj",
    "c_attn",  # GPT-2
    "query_key_value",  # GPT-NeoX, Falcon, BLOOM
    "qkv_proj",  # Phi-3
    "Wqkv",  # ModernBERT, MPT
    "W_pack",  # Baichuan
    "q",  # T5
    "k",
    "v",
)
#: Top-level modules that make up a sequence classifier's head.
HEAD_NAMES = ("pre_classifier", "classifier", "score", "classification_head")
#: peft's task type for each training task (masked LM has none: a plain PeftModel).
TASK_TYPES = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require_peft(key: str = "model.lora") -> None:
    """Refuse LoRA when peft is missing, with the command that installs it."""
    if not installed("peft"):
        raise ConfigError(key, f"LoRA needs peft, which is not installed; {INSTALL}")


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_adapter_model(model: Any) -> bool:
    """Whether ``model`` is wrapped by peft (if peft was never imported, nothing can be)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    """``adapter_config.json`` of an adapter folder, as a mapping."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path: {path} cannot be read ({exc}); save the adapter again") from None
    if not isinstance(data, dict) or not data.get("base_model_name_or_path"):
        raise ModelError(f"model.name_or_path: {path} does not name its base model (base_model_name_or_path)")
    return data


# ---------------------------------------------------------------------------------------------------------
# Which layers


def _layer_kinds() -> tuple[type, ...]:
    """The module types LoRA can adapt (bitsandbytes' quantized linears are ``torch.nn.Linear`` too)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    nn = torch.nn
    return (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv1D)


def adaptable_layers(model: torch.nn.Module) -> dict[str, list[str]]:
    """Leaf name -> the full names of the layers LoRA can adapt under it, in the model's order."""
    kinds = _layer_kinds()
    found: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if name and isinstance(module, kinds):
            found.setdefault(name.rpartition(".")[2], []).append(name)
    return found


def _matches(full_names: list[str], wanted: str) -> bool:
    """peft's rule: a name matches a module whose full name is it or ends with ``.`` + it."""
    return any(n == wanted or n.endswith("." + wanted) for n in full_names)


def target_modules(model: torch.nn.Module, lora: LoraConfig) -> list[str]:
    """``lora.target_modules`` for this model: ``auto`` made into its attention projections, names checked."""
    layers = adaptable_layers(model)
    everything = [n for names in layers.values() for n in names]
    has = ", ".join(layers)
    if lora.target_modules == [AUTO]:
        found = [name for name in layers if name in ATTENTION_PROJECTIONS]
        if not found:
            raise ConfigError(
                "model.lora.target_modules",
                f"auto found no attention projections in this model; name the layers to adapt; it has {has}",
            )
        return found
    for wanted in lora.target_modules:
        if not _matches(everything, wanted):
            raise ConfigError(
                "model.lora.target_modules",
                f'"{wanted}" is not a layer of this model that LoRA can adapt; it has {has}',
            )
    return list(lora.target_modules)


def fresh_modules(model: torch.nn.Module, fresh: Sequence[str]) -> list[str]:
    """The modules that hold the weights ``fresh`` (parameter names the checkpoint lacked), outermost only.

    Not one that holds the input embeddings: an MLM head's decoder shares them, and a copy to train would be a
    third of the model (its bias, zeros as initialized, stays as it is)."""
    modules = dict(model.named_modules())
    owners = sorted({name.rpartition(".")[0] for name in fresh} & (modules.keys() - {""}))
    owners = [o for o in owners if o not in _sharing_embeddings(model, owners)]
    return [o for o in owners if not any(o.startswith(other + ".") for other in owners)]


def _sharing_embeddings(model: torch.nn.Module, names: Sequence[str]) -> set[str]:
    """Those of the modules ``names`` that hold the model's input embeddings (an MLM head, its decoder)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    shared = getattr(get_embeddings() if callable(get_embeddings) else None, "weight", None)
    if shared is None:
        return set()
    modules = dict(model.named_modules())
    return {n for n in names if n in modules and any(p is shared for p in modules[n].parameters())}


def left_as_initialized(model: torch.nn.Module, fresh: Sequence[str]) -> list[str]:
    """The weights of ``fresh`` that a LoRA run leaves as the model initialized them (``fresh_modules``: those
    directly in a module that holds the input embeddings), which no adapter brings back and none needs to."""
    owners = {name: name.rpartition(".")[0] for name in fresh}
    sharing = _sharing_embeddings(model, list(owners.values()))
    return [name for name, owner in owners.items() if owner in sharing]


def modules_to_save(model: torch.nn.Module, lora: LoraConfig, task: str, fresh: Sequence[str] = ()) -> list[str]:
    """``lora.modules_to_save`` for this model: ``auto`` = a classifier's head, nothing for language models.

    Layers the base checkpoint lacks (``fresh``: freshly initialized, such as a pooler) are always added: frozen,
    they would stay random, and differ in every process that loads the base.
    """
    top = [name for name, _ in model.named_children()]
    if lora.modules_to_save == [AUTO]:
        chosen = [name for name in HEAD_NAMES if name in top] if task == "classification" else []
        if task == "classification" and not chosen:
            raise ConfigError(
                "model.lora.modules_to_save",
                f"auto found no classification head in this model; name it (top-level modules: {', '.join(top)})",
            )
    else:
        everything = [name for name, _ in model.named_modules() if name]
        for wanted in lora.modules_to_save:
            if not _matches(everything, wanted):
                raise ConfigError(
                    "model.lora.modules_to_save", f'"{wanted}" is not a module of this model; it has {", ".join(top)}'
                )
        chosen = list(lora.modules_to_save)
    inside = [m for m in fresh_modules(model, fresh) if not any(m == c or m.startswith(c + ".") for c in chosen)]
    return chosen + inside


def peft_config(model: torch.nn.Module, lora: LoraConfig, task: str, fresh: Sequence[str] = ()) -> Any:
    """The ``peft.LoraConfig`` for ``model``: what both engines train with (the SFT engine hands it to TRL).

    Args:
        fresh: Parameters the base checkpoint lacked (``LoadedModel.newly_initialized``).
    """
    require_peft()
    import peft
    from transformers.pytorch_utils import Conv1D

    targets = target_modules(model, lora)
    saved = modules_to_save(model, lora, task, fresh)
    _check_not_saved(model, targets, saved)
    # GPT-2's Conv1D keeps its weight transposed; peft needs telling (it would warn and do so itself)
    transposed = any(
        isinstance(module, Conv1D) and _matches([name], wanted)
        for name, module in model.named_modules()
        for wanted in targets
    )
    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=saved or None,
        task_type=TASK_TYPES.get(task),
        fan_in_fan_out=transposed,
    )


def _check_not_saved(model: torch.nn.Module, targets: list[str], saved: list[str]) -> None:
    """A target that is trained in full already (modules_to_save): peft would give it no adapter, without a
    word (or fail, where no target is left), so it is refused, naming the module."""

    def inside(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") or name.endswith("." + s) or f".{s}." in name for s in saved)

    layers = [n for names in adaptable_layers(model).values() for n in names]
    for wanted in targets:
        names = [n for n in layers if _matches([n], wanted)]
        if names and all(inside(n) for n in names):
            raise ConfigError(
                "model.lora.target_modules",
                f'"{wanted}" is trained in full already (modules_to_save: {", ".join(saved)}); adapt other '
                "layers, or set model.lora.modules_to_save yourself",
            )


@contextlib.contextmanager
def quiet_renames() -> Iterator[None]:
    """peft still calls transformers' names that 5.x renamed (``is_gradient_checkpointing``); their
    FutureWarnings say nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will be removed in v6.*", category=FutureWarning)
        yield


def wrap(model: torch.nn.Module, lora: LoraConfig, task: str, fresh: Sequence[str] = ()) -> Any:
    """``model`` with LoRA adapters on its layers; only the adapters and ``modules_to_save`` train."""
    import peft

    config = peft_config(model, lora, task, fresh)
    with quiet_renames():
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            # QLoRA: norms in fp32 and inputs that carry gradients through the frozen quantized layers
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return peft.get_peft_model(model, config)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, all) parameters; a 4-bit layer's packed weights count as what they stand for (peft's count)."""
    if is_adapter_model(model):
        trainable, total = model.get_nb_trainable_parameters()  # type: ignore[operator]
        return int(trainable), int(total)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------------------
# Adapter folders


def save_adapter(model: Any, folder: Path, base: str) -> None:
    """Write ``model``'s adapter into ``folder`` with ``base`` as its base model, and the fine-tuned model's
    ``config.json`` (head, label names) beside it."""
    config = model.peft_config[model.active_adapter]
    before = config.base_model_name_or_path
    config.base_model_name_or_path = base
    card = folder / "README.md"
    had_card = card.exists()
    try:
        # save_embedding_layers=False: "auto" asks the Hub whether the base's vocabulary changed (never here)
        model.save_pretrained(str(folder), save_embedding_layers=False)
    finally:
        config.base_model_name_or_path = before
    if not had_card:
        card.unlink(missing_ok=True)  # peft's model card template: headings with nothing under them
    write_model_config(model, folder)


def write_model_config(model: Any, folder: Path) -> None:
    """The fine-tuned model's ``config.json``, without the base's quantization: predictions load it in full."""
    base = model.get_base_model()
    base_config = copy.deepcopy(base.config)
    base_config.architectures = [type(base).__name__]  # what save_pretrained records: the head, for predict
    if hasattr(base_config, "quantization_config"):
        del base_config.quantization_config
    base_config.save_pretrained(str(folder))


def set_base(folder: Path, base: str) -> None:
    """Point an adapter folder written by someone else (the Trainer) at ``base``."""
    path = folder / ADAPTER_CONFIG
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_adapter_weights(folder: Path, model: Any) -> None:
    """Load a checkpoint's adapter (and modules_to_save) weights into the wrapped ``model`` (no code runs)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(folder / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {ADAPTER_WEIGHTS} cannot be read ({exc})") from None
    expected = get_peft_model_state_dict(model, save_embedding_layers=False)
    if state.keys() != expected.keys():
        missing, unexpected = len(expected.keys() - state.keys()), len(state.keys() - expected.keys())
        raise CheckpointError(
            f"checkpoint {folder} was written for another adapter ({missing} missing, {unexpected} unexpected "
            "weights); resume only with the run's own config.yaml"
        )
    set_peft_model_state_dict(model, state)


def attach(base: torch.nn.Module, folder: str | Path, *, merge: bool) -> Any:
    """``base`` with the adapter in ``folder``; merged into plain weights when ``merge`` (same outputs, no
    adapter left to compute)."""
    from peft import PeftModel

    with quiet_renames():
        model = PeftModel.from_pretrained(base, str(folder))
        if not merge:
            return model
        merged = model.merge_and_unload()
    # peft froze the base to load the adapter; merged, it is a plain model, trainable as any loaded one
    # (a full fine-tune that starts from a LoRA run)
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def restored_by_adapter(names: list[str], adapter: dict[str, Any]) -> list[str]:
    """The weights in ``names`` (fresh or re-initialized in the base) that the adapter does not bring: its
    ``modules_to_save``, and a classifier's head, which peft always trains."""
    saved = list(adapter.get("modules_to_save") or [])
    if adapter.get("task_type") == "SEQ_CLS":
        saved += ["classifier", "score"]
    return [n for n in names if not any(n == s or n.startswith(s + ".") or f".{s}." in f".{n}" for s in saved)]
