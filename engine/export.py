"""``tunebench export RUN OUT``: a run's model as a Hugging Face model folder of its own, optionally pushed to the Hub.

- A fully fine-tuned run: its ``model/`` as it is (weights, ``config.json`` with the label names, tokenizer).
- A LoRA run with ``--merge``: the adapter merged into the base's weights, saved as a plain model: the same
  predictions, loaded by ``transformers.pipeline`` with no peft and no Tunebench.
- A LoRA run without ``--merge``: the adapter alone, in peft's layout, naming a base that loads anywhere (the
  bundled ``minilm`` becomes its Hub id): a few MB instead of the whole model, for peft users and Hub pushes.

``OUT`` is written whole or not at all (``engine.runs.save_dir_atomically``); an earlier model folder there is
replaced only with ``--force``, and a folder that holds anything else is never replaced.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import adapters
from engine.errors import UserError, disk_fix, os_error_of
from engine.files import not_a_folder
from engine.runs import CONFIG_FILE, EVENTS_FILE, RUNS_DIR_HELP, RunDir, run_ref, save_dir_atomically

#: The files of a model folder that belong to its tokenizer (what ``save_pretrained`` of a tokenizer writes).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "chat_template.jinja",
)


class NotEmptyError(UserError):
    """The destination holds an earlier model folder, and replacing it was not asked for."""

    def __init__(self, out: Path) -> None:
        self.out = out
        super().__init__(f"export: {out} holds a model already; add --force to replace it, or pick another folder")


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote."""

    folder: Path
    #: "model" (a standalone model folder) or "adapter" (a LoRA adapter for peft)
    kind: str
    #: One line for the terminal: what the folder holds and how to load it.
    summary: str


def model_folder(run: RunDir) -> Path:
    """The run's ``model/``, or a UserError that says why there is none."""
    folder = run.model_dir
    if (folder / "config.json").is_file():
        return folder
    ref = run_ref(run)
    if run.live_state() is not None:
        raise UserError(
            f"export: {run.name} has no model yet (a run writes {folder.name}/ when it finishes or is stopped); "
            f"tunebench stop {ref} saves it, or export another run"
        )
    raise UserError(
        f"export: {run.name} has no model: its process ended before writing {folder.name}/; "
        f"tunebench run --resume {ref} continues it and writes one, or export another run"
    )


def check_destination(out: Path, source: RunDir, *, force: bool) -> None:
    """Refuse a destination that is a file or under one, holds the run itself, lies inside it (its checkpoints
    would go), is another run's folder or holds one, is the current folder or above it, or holds anything but a
    model folder (an earlier export, which ``force`` replaces)."""
    why = not_a_folder(out)
    if why is not None:
        raise UserError(f"export: {out} {why}; give a folder to export into")
    where, here = out.resolve(), Path.cwd()
    if source.path.resolve().is_relative_to(where):
        raise UserError(f"export: {out} holds the run {source.name} itself; pick another folder")
    if where.is_relative_to(source.path.resolve()):
        raise UserError(f"export: {out} is inside the run {source.name}; pick a folder outside it")
    if _is_run(out):
        raise UserError(f"export: {out} is the folder of the run {out.name}; pick another folder")
    inside = next((p for p in where.parents if _is_run(p)), None)
    if inside is not None:  # another run's model/ or a checkpoint: --force would replace a part of it
        raise UserError(f"export: {out} is inside the run {inside.name}; pick a folder outside it")
    held = next((c for c in out.iterdir() if _is_run(c)), None) if out.is_dir() else None
    if held is not None:  # a runs folder: --force would replace every run in it
        raise UserError(f"export: {out} holds the run {held.name}; pick a folder of its own")
    if here.is_relative_to(where):  # replaced, it would leave the shell in a deleted folder
        raise UserError(
            f"export: {out} is the folder you are in; export into a folder of its own, e.g. {out / 'model'}"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not _is_model_folder(out):  # --force replaces an earlier export, never a project's files
        held_names = sorted(f"{c.name}/" if c.is_dir() else c.name for c in out.iterdir())
        shown = ", ".join(held_names[:3]) + (f" and {len(held_names) - 3} more" if len(held_names) > 3 else "")
        raise UserError(f"export: {out} holds {shown}, not an exported model; export into a new or empty folder")
    if not force:
        raise NotEmptyError(out)


#: Files of weights: what makes a folder with a config.json a model's, not a project's that has one.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def _is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` is a model folder such as an earlier export: a config of a model or an adapter, its
    weights, and no subfolder."""
    has_config = (folder / "config.json").is_file() or (folder / adapters.ADAPTER_CONFIG).is_file()
    has_weights = any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES)
    return has_config and has_weights and not any(c.is_dir() for c in folder.iterdir())


def _is_run(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / EVENTS_FILE).is_file()


def export(source: RunDir, out: Path, *, merge: bool = False, force: bool = False) -> Exported:
    """Write ``source``'s model into ``out``; see the module's docstring for what each kind of run gives. A folder
    that cannot be written (a full disk, no permission) is a UserError, and leaves nothing behind."""
    try:
        return _export(source, out, merge=merge, force=force)
    except UserError:
        raise
    except Exception as exc:
        system = os_error_of(exc)  # an OSError, or a library's own error for one (safetensors')
        if system is None:
            raise
        raise UserError(f"export: cannot write {out} ({system.strerror or system}); {disk_fix(system)}") from None


def _export(source: RunDir, out: Path, *, merge: bool, force: bool) -> Exported:
    check_destination(out, source, force=force)
    state = source.live_state()
    if state is not None:  # its model/, if any, is an earlier session's, and its end would replace it mid-copy
        raise UserError(
            f"export: {source.name} is {'paused' if state == 'paused' else 'still training'}; stop it first "
            f"(tunebench stop {run_ref(source)} saves its model), or export it once it ends"
        )
    folder = model_folder(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not adapters.is_adapter_folder(folder):
        save_dir_atomically(out, lambda tmp: _copy_files(folder, tmp))
        note = " (nothing to merge: every weight was trained)" if merge else ""
        return Exported(out, "model", f"{out}: the model of {source.name}, for transformers{note}")
    if merge:
        described = _write_merged(folder, out)
        return Exported(out, "model", f"{out}: {described}, merged from {source.name}'s adapter, for transformers")
    base = _portable_base(folder)
    save_dir_atomically(out, lambda tmp: _write_adapter(folder, tmp, base))
    size = (out / adapters.ADAPTER_WEIGHTS).stat().st_size
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{max(size // 1024, 1)} KiB"  # a small one read 0.0 MB
    return Exported(
        out,
        "adapter",
        f"{out}: the LoRA adapter of {source.name} ({shown}) on {base}, for peft; --merge writes a standalone model",
    )


def _copy_files(folder: Path, tmp: Path) -> None:
    for item in folder.iterdir():
        if item.is_dir():
            shutil.copytree(item, tmp / item.name)
        else:
            shutil.copy2(item, tmp / item.name)


def _write_merged(folder: Path, out: Path) -> str:
    """Base plus adapter merged into one model (``engine.models.load_model`` does the merge), saved whole."""
    from engine.logs import capture_library_logs
    from engine.models import count_parameters, load_model, load_tokenizer
    from engine.predict import detect_task

    task = detect_task(str(folder))
    with capture_library_logs(lambda _event: None):  # load reports and progress bars stay off the terminal
        model = load_model(task, str(folder)).model
        tokenizer = load_tokenizer(str(folder))

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        save_dir_atomically(out, write)
    return f"{type(model).__name__}, {count_parameters(model) / 1e6:.1f} M parameters"


def _portable_base(folder: Path) -> str:
    """The adapter's base as something that loads outside Tunebench: a hub id, or a model folder on this machine."""
    from engine.models import MINILM_ALIAS, MINILM_HUB_ID, resolve_model_path

    base = str(adapters.read_adapter_config(folder)["base_model_name_or_path"])
    if base == MINILM_ALIAS:
        return MINILM_HUB_ID
    if not Path(base).is_absolute():
        return base  # a hub id
    resolved = resolve_model_path(base)  # a run folder: its model/
    if adapters.is_adapter_folder(resolved):
        raise UserError(
            f"export: the base of this adapter, {base}, is itself a LoRA run; export with --merge for a model "
            "that stands alone"
        )
    return resolved


def _write_adapter(folder: Path, tmp: Path, base: str) -> None:
    """peft's adapter files and the tokenizer; no ``config.json``: beside an adapter, transformers would take
    the folder for a whole model and look for its weights there."""
    for name in (adapters.ADAPTER_CONFIG, adapters.ADAPTER_WEIGHTS, *TOKENIZER_FILES):
        if (folder / name).is_file():
            shutil.copy2(folder / name, tmp / name)
    adapters.set_base(tmp, base)


# ---------------------------------------------------------------------------------------------------------
# The Hub


def check_push(repo_id: str) -> None:
    """Refuse a push that cannot happen, before anything is written: a malformed repo id, no token, no Hub."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from engine.hub import hub_reachable

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f'--push-to-hub: "{repo_id}" is not a repo id; use NAME or USER/NAME') from None
    missing = []
    if not get_token():
        missing.append("a Hugging Face token (run hf auth login, or set HF_TOKEN)")
    if not hub_reachable():
        missing.append("a connection to the Hugging Face Hub (offline?)")
    if missing:
        raise UserError(f"--push-to-hub: needs {' and '.join(missing)}; nothing was exported")


def push(folder: Path, repo_id: str, run_name: str) -> str:
    """Upload ``folder`` to the model repo ``repo_id`` (created if missing); returns the repo's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=f"Upload {run_name}"
        )
    except (HfHubHTTPError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"--push-to-hub: the upload to {repo_id} failed ({first}); {folder} is written, push it with "
            f"hf upload {repo_id} {folder}"
        ) from None
    return str(url)


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_parsers(sub: Any) -> None:
    """Add ``tunebench export`` to ``tunebench``'s subparsers, with ``handler`` set (see engine.cli)."""
    parser = sub.add_parser(
        "export", help="write a run's model as a standalone Hugging Face model folder, or push it to the Hub"
    )
    parser.add_argument("run", metavar="RUN", help="a run folder, its name in --runs-dir, or a unique prefix")
    parser.add_argument("out", metavar="OUT", help="the folder to write (created; replaced only with --force)")
    parser.add_argument(
        "--merge", action="store_true", help="LoRA runs: merge the adapter into the base (else: the adapter alone)"
    )
    parser.add_argument("--force", action="store_true", help="replace the model folder OUT holds (an earlier export)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="then upload OUT to this model repo")
    parser.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``tunebench export``; a user error raises, and ``engine.cli.main`` turns it into one line and exit 2."""
    from engine.live import resolve_run

    run = resolve_run(args.run, args.runs_dir)
    if args.push_to_hub:
        check_push(args.push_to_hub)
    done = export(run, Path(args.out).expanduser(), merge=args.merge, force=args.force)
    print(f"exported {done.summary}")
    if args.push_to_hub:
        print(f"pushing {done.folder} to {args.push_to_hub} ...", file=sys.stderr)
        print(f"pushed: {push(done.folder, args.push_to_hub, run.name)}")
    return 0
