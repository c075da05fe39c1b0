"""The TRL engine: ``trl.SFTTrainer`` for masked-LM (encoders such as BERT) and causal-LM (decoders) fine-tuning.

SFTTrainer is built for decoders. For an encoder it is made to train a real masked LM:

1. batches come from ``DataCollatorForLanguageModeling(mlm=True)`` (engine.data.build_collator), so
   ``train.mlm_probability`` of the non-special tokens are masked and every other label is -100;
2. the loss is the model's MLM cross-entropy over the masked positions, with no label shift (TRL's fused
   head shifts labels for next-token prediction and skips BERT's prediction transform);
3. the dataset is tokenized once by engine.data (one [CLS] ... [SEP], no appended EOS), and TRL's dataset
   preparation and column pruning are skipped, so ``attention_mask`` and ``token_type_ids`` reach the model;
4. bf16/fp16 follow engine.models.pick_precision (SFTConfig would default to bf16, which fails on a CPU);
5. the n-th training batch is masked from (seed, n) alone (engine.data.BatchSeededMasking), so a resumed run
   masks exactly as an uninterrupted one; evaluation masks with its own fixed seed.

Checkpoints are the Trainer's files written as the loop engine writes its own (engine.checkpoint): into a
temporary folder, with the event callback's state beside them, marked complete, then renamed into place. So
both engines have one rule for a complete checkpoint, and a kill mid-save never leaves one that looks whole.

Causal LM keeps TRL's own SFT path: next-token loss, labels built from the tokenized text plus an EOS.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import adapters
from engine.callbacks import STATE_FILE, EventCallback, new_event_callback
from engine.checkpoint import write_checkpoint
from engine.config import RunConfig, best_direction, eval_every, needs_evaluations
from engine.control import RunControl
from engine.data import BatchSeededMasking, PreparedData, build_collator, prepare
from engine.errors import CheckpointError, ModelError
from engine.events import FIRST_STAGE, RunStarted, Status
from engine.faults import kill_point
from engine.models import (
    COLLECTIVE_TIMEOUT_SECONDS,
    base_name,
    check_compile,
    check_model_options,
    launched_processes,
    load_model,
    load_tokenizer,
    parameter_fields,
    quantization_kwargs,
    resolve_backend,
    save_final_model,
    set_up_device,
    trainable_text,
    untrained_head_warning,
)
from engine.runner import Emit, Outcome
from engine.runs import RunDir
from engine.stepping import (
    Progress,
    checkpoint_to_resume,
    evaluation_due,
    guard_memory,
    perplexity_of,
    run_started,
    samples_per_step,
)

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("tunebench.sft")


def masked_lm_parts(model: Any) -> tuple[Any, Any] | None:
    """(encoder, head) of a masked LM whose head maps each position on its own: BERT-style ``cls`` or
    RoBERTa-style ``lm_head`` over ``base_model``. None for anything else, for a model wrapped for
    distributed training (calling its parts would bypass the wrapper's gradient hooks), and for a model with
    hooks on its own forward (they must see every call)."""
    if not type(model).__name__.endswith("ForMaskedLM") or model._forward_hooks or model._forward_pre_hooks:
        return None
    encoder = getattr(model, "base_model", None)
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if encoder is None or encoder is model or head is None:
        return None
    return encoder, head


def sft_config(cfg: RunConfig, run_dir: RunDir, device: torch.device, precision: str, has_eval: bool) -> Any:
    """SFTConfig from the run config: the loop's hyperparameter names, mapped one to one."""
    from trl import SFTConfig

    t = cfg.train
    metric, greater = best_direction(t)
    settings: dict[str, Any] = dict(
        output_dir=str(run_dir.checkpoints_dir),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler_type,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must reach the logs (and fail the run), not be averaged away
        eval_strategy=t.eval_strategy if has_eval else "no",
        eval_steps=eval_every(t),
        load_best_model_at_end=t.load_best_model_at_end and has_eval,
        # the best model and early stopping (EarlyStoppingCallback) go by this metric; the trainer's log adds the
        # eval_perplexity and eval_accuracy that the loop engine also reports
        metric_for_best_model=f"eval_{metric}" if has_eval else None,
        greater_is_better=greater if has_eval else None,
        restore_callback_states_from_checkpoint=True,  # a resumed run keeps its early-stopping count
        prediction_loss_only=True,  # never gather (batch x length x vocab) logits; metrics come from compute_loss
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,  # applied by engine.checkpoint.write_checkpoint (see the trainer)
        max_length=cfg.data.max_length,
        dataset_text_field=cfg.data.text_field,
        # masked LM: tokenized by engine.data; TRL's preparation would add an EOS and a copy-the-input label
        dataset_kwargs={"skip_prepare_dataset": True} if cfg.task == "masked-lm" else None,
        # keep attention_mask, token_type_ids and special_tokens_mask for the collator and the model
        remove_unused_columns=cfg.task != "masked-lm",
        disable_tqdm=True,
        report_to="none",
        dataloader_pin_memory=device.type == "cuda",
        torch_compile=t.torch_compile,
        # under a launcher (launch.num_processes > 1): the process group's backend and timeout; a backend given
        # to one process alone would have the trainer look for a process group that is not there
        ddp_backend=resolve_backend(cfg.launch.backend, device.type) if launched_processes() > 1 else None,
        ddp_timeout=COLLECTIVE_TIMEOUT_SECONDS,
        **_activation_checkpointing(SFTConfig, t.gradient_checkpointing),
    )
    return SFTConfig(**settings)


def _activation_checkpointing(config_cls: type, on: bool) -> dict[str, Any]:
    """``train.gradient_checkpointing`` (SFTConfig would turn it on: small models on small machines want the
    speed instead), non-reentrant so that frozen layers under LoRA adapters still pass gradients on.

    transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns).
    """
    names = getattr(config_cls, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False}} if on else {name: False}


@functools.cache
def _trainer_classes() -> tuple[type, type]:
    """(causal-LM trainer, masked-LM trainer), built on first use so that trl loads with the run."""
    import torch
    from transformers.trainer import TRAINER_STATE_NAME
    from trl import SFTTrainer

    from engine.data import length_grouped_sampler

    class EpochSeeded:
        """A sampler whose generator is seeded with (seed + epoch) before each pass; accelerate's data loader
        calls ``set_epoch`` with the Trainer's epoch, also on the loader that skips a resumed epoch's batches."""

        def __init__(self, sampler: Any, seed: int) -> None:
            self.sampler, self.seed, self.epoch = sampler, seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return len(self.sampler)

        def __iter__(self) -> Any:
            self.sampler.generator.manual_seed(self.seed + self.epoch)
            return iter(self.sampler)

    class TunebenchSFTTrainer(SFTTrainer):
        """SFTTrainer that feeds the event callback and evaluates with fixed random masks."""

        events: EventCallback | None = None
        eval_seed: int = 0
        #: Masks evaluation batches; the training collator is batch-seeded and must not advance during eval.
        eval_collator: Any = None
        #: What the trainer is doing and its last step, for the out-of-memory message.
        progress: Progress | None = None
        #: While a checkpoint is written: the temporary folder that stands in for the output folder.
        staging: str | None = None
        #: The base model a LoRA adapter's folders name (engine.models.base_name).
        base: str = ""
        #: train.group_by_length: the seed of the length-grouped order (None: the Trainer's own shuffle).
        group_by_length_seed: int | None = None

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            # Not the Trainer's train_sampling_strategy="group_by_length": its sampler draws each epoch's order
            # from the global RNG when the epoch starts, which a resumed run has not restored yet, and it would
            # group evaluation batches too. This one draws epoch e's order from (seed, e), as the Trainer's
            # seedable random sampler does, so a run resumed in any epoch gets the same batches.
            seed = self.group_by_length_seed
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if seed is None or dataset is None:
                return super()._get_train_sampler(train_dataset)
            a = self.args
            step_batch = a.per_device_train_batch_size * a.world_size * a.gradient_accumulation_steps
            return EpochSeeded(length_grouped_sampler(dataset, step_batch, torch.Generator()), seed)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "eval_loss" in logs:  # the metrics the loop engine reports too, for metric_for_best_model
                logs.setdefault("eval_perplexity", perplexity_of(logs["eval_loss"]))
                if "eval_mean_token_accuracy" in logs:
                    logs.setdefault("eval_accuracy", logs["eval_mean_token_accuracy"])
            super().log(logs, start_time)

        def _get_output_dir(self, trial: Any) -> str:
            return self.staging or super()._get_output_dir(trial)

        def best_checkpoint(self, saving: int | None = None) -> Path | None:
            """The best evaluation's checkpoint under the run's checkpoints folder (``saving``: the step being
            written now, which counts as there); None when there is none."""
            step = self.state.best_global_step
            if not step:
                return None
            path = Path(self.args.output_dir or ".") / f"checkpoint-{step}"
            return path if step == saving or path.is_dir() else None

        def _load_best_model(self) -> None:
            # The best evaluation may come after the checkpoint of its own step was written (an epoch's last
            # step under eval_strategy: steps), when the Trainer has not yet pointed at it.
            best = self.best_checkpoint()
            if best is not None:
                self.state.best_model_checkpoint = str(best)
                super()._load_best_model()

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            """The Trainer's checkpoint plus the callback's state, renamed into place only when complete."""
            step = self.state.global_step
            best = self.best_checkpoint(saving=step)

            def stage_in(folder: Path) -> None:
                self.staging = str(folder)
                try:
                    super(TunebenchSFTTrainer, self)._save_checkpoint(model, trial)
                finally:
                    self.staging = None
                    # The Trainer points at the best checkpoint inside its output folder, here the staging folder
                    # that is gone after the rename: point at where the best one is kept instead, also in the
                    # saved state, which a resumed run reads. Not after a stop: the Trainer would then load the best
                    # model and, keeping one checkpoint, delete the newest, which the stopped run resumes from.
                    stopping = self.events is not None and self.events.stopped
                    self.state.best_model_checkpoint = str(best) if best is not None and not stopping else None
                written = folder / f"checkpoint-{step}"  # the Trainer's own name under its output folder
                if self.args.should_save:
                    self.state.save_to_json(str(written / TRAINER_STATE_NAME))
                unwrapped = self.accelerator.unwrap_model(model)
                if self.args.should_save and adapters.is_adapter_model(unwrapped):
                    # The Trainer writes the adapter alone: add the head and labels, and the base as the run names
                    # it, so that the checkpoint loads as a model (Predict while the run trains)
                    adapters.write_model_config(unwrapped, written)
                    adapters.set_base(written, self.base)
                    (written / "README.md").unlink(missing_ok=True)  # peft's empty model card template
                for item in written.iterdir():
                    os.replace(item, folder / item.name)
                written.rmdir()
                if self.events is not None:
                    state = self.events.checkpoint_state(self.state)
                    (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

            if self.args.should_save:
                write_checkpoint(
                    Path(self.args.output_dir or "."), step, stage_in, keep=self.args.save_total_limit, best=best
                )
            else:
                # Another process of a multi-process run: the model and optimizer are rank 0's to write, and so
                # is this rank's RNG state (_save_rng_state); what the Trainer writes here is not kept.
                with tempfile.TemporaryDirectory() as scratch:
                    stage_in(Path(scratch))

        def _save_rng_state(self, output_dir: str) -> None:
            super()._save_rng_state(output_dir)
            if self.args.world_size <= 1:
                return
            # Each process writes rng_state_<rank>.pth into its own folder, and only rank 0's folder is kept:
            # rank 0 writes every rank's, so that each resumes its own random streams (dropout, masking).
            import torch.distributed as dist

            folder = Path(output_dir)
            states: list[bytes | None] = [None] * self.args.world_size
            dist.all_gather_object(states, (folder / f"rng_state_{self.args.process_index}.pth").read_bytes())
            if self.args.should_save:
                for rank, state in enumerate(states):
                    assert state is not None
                    (folder / f"rng_state_{rank}.pth").write_bytes(state)

        def _send_telemetry(self) -> None:
            return  # a local workbench run reports nothing to the Hub

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return  # checkpoints/ holds checkpoints only; the run folder documents the run

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            if self.progress is not None:
                self.progress.step = self.state.global_step
            loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)
            if self.events is not None:
                self.events.record_loss(loss)
            return loss

        def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
            if self.eval_collator is None:
                return super().get_eval_dataloader(eval_dataset)
            train_collator = self.data_collator
            self.data_collator = self.eval_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = train_collator

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            # MLM eval masks are random: fix them so epochs compare fairly, without touching the training RNG.
            devices = [self.args.device] if self.args.device.type == "cuda" else []
            progress = self.progress or Progress()
            progress.stage = "evaluating"
            kill_point("evaluate")
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.eval_seed)
                result: dict[str, float] = super().evaluate(*args, **kwargs)
            progress.stage = "training"
            return result

    class MaskedLMSFTTrainer(TunebenchSFTTrainer):
        """Masked-LM loss and masked-token accuracy; no shift, no fused causal head."""

        loss_is_scaled_for_ga = True  # type: ignore[assignment]  # trl declares it as None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._mlm_sums: dict[str, torch.Tensor] = {}

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            labels = inputs["labels"]
            features = {k: v for k, v in inputs.items() if k != "labels"}
            masked = labels != -100
            count = masked.sum()
            split = masked_lm_parts(model)
            outputs: Any
            if split is not None:
                # The head maps each position on its own: run it on the masked positions only (about 15%),
                # not on every position as model(**features) does. Same loss and gradients, less work.
                # (Evaluation asks for outputs and drops them: prediction_loss_only; these are masked-only.)
                encoder, head = split
                # The parts are called around the prepared model, whose forward holds the mixed-precision
                # autocast: without this, a bf16 run computed in fp32.
                with self.accelerator.autocast():
                    logits = head(encoder(**features)[0][masked])
                targets = labels[masked]
                outputs = {"logits": logits}
            else:
                outputs = model(**features)
                logits = outputs.logits[masked]
                targets = labels[masked]
            # The cross-entropy BertForMaskedLM & co. compute, as a sum so that gradient accumulation weighs
            # every masked token the same (num_items_in_batch counts them over the accumulated micro-batches).
            loss_sum = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
            denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
            loss = loss_sum / denominator
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
            with torch.no_grad():
                correct = (logits.argmax(-1) == targets).sum()
                sums = torch.stack([loss_sum.detach().double(), correct.double(), count.double()])
            mode = "train" if model.training else "eval"
            self._mlm_sums[mode] = sums if mode not in self._mlm_sums else self._mlm_sums[mode] + sums
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            mode = "train" if self.model is not None and self.model.training else "eval"
            sums = self._mlm_sums.pop(mode, None)
            if sums is not None:
                loss_sum, correct, count = self.accelerator.reduce(sums, "sum").tolist()  # one sync per log
                if mode == "eval":
                    # token-weighted, like the loop's eval (Trainer would average per-batch means)
                    logs["eval_loss"] = loss_sum / max(count, 1.0)
                    logs["eval_accuracy"] = correct / max(count, 1.0)
                else:
                    logs["accuracy"] = correct / max(count, 1.0)
            super().log(logs, start_time)

    return TunebenchSFTTrainer, MaskedLMSFTTrainer


def _causal_dataset(ds: Dataset, eos_token_id: int | None) -> Dataset:
    """Token ids only, each text ending in EOS so the model learns where a text stops."""
    ds = ds.with_format(None).select_columns(["input_ids"])
    if eos_token_id is None:
        return ds

    def add_eos(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        return {
            "input_ids": [
                ids if ids and ids[-1] == eos_token_id else [*ids, eos_token_id] for ids in batch["input_ids"]
            ]
        }

    return ds.map(add_eos, batched=True, desc="adding EOS")


def _check_causal_tokenizer(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ModelError(
            f'model.name_or_path: the tokenizer of "{cfg.model.name_or_path}" has neither a pad nor an end-of-text '
            "token, so causal-LM batches cannot be padded; pick a decoder tokenizer that defines eos_token"
        )


def _callback_state(checkpoint: Path) -> dict[str, Any]:
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {checkpoint}: {STATE_FILE} is missing or unreadable ({exc}); delete that checkpoint "
            "folder to resume from an older one"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {checkpoint}: {STATE_FILE} holds no state; delete that checkpoint")
    return state


def run(cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir, *, resume: bool = False) -> Outcome:
    """Train ``cfg`` with SFTTrainer; see the run contract in ARCHITECTURE.md.

    Args:
        resume: Continue from the newest complete checkpoint in ``run_dir/checkpoints`` (model, optimizer,
            schedule, RNG and step); without one the run starts from the beginning, with a warning.
    """
    return guard_memory(cfg, functools.partial(_run_once, emit=emit, control=control, run_dir=run_dir, resume=resume))


def _run_once(
    cfg: RunConfig, progress: Progress, *, emit: Emit, control: RunControl, run_dir: RunDir, resume: bool
) -> Outcome:
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

    t = cfg.train
    device, precision = set_up_device(t)
    check_model_options(cfg.model, device)
    if t.torch_compile:
        check_compile(device)

    # 1. tokenizer and data (tokenized once, by the same code as the loop)
    emit(Status(FIRST_STAGE, cfg.model.name_or_path))
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    if cfg.task == "causal-lm":
        _check_causal_tokenizer(cfg, tokenizer)
    emit(Status("loading data", cfg.data.source))
    data: PreparedData = prepare(cfg.data, tokenizer, cfg.task, emit, needs_eval=needs_evaluations(t))
    train, evals = data.train, data.eval
    collator: BatchSeededMasking | None = None
    eval_collator = None
    if cfg.task == "masked-lm":
        eval_collator = build_collator(cfg.task, tokenizer, t.mlm_probability)
        collator = BatchSeededMasking(build_collator(cfg.task, tokenizer, t.mlm_probability), t.seed)
    else:
        train = _causal_dataset(train, tokenizer.eos_token_id)
        evals = _causal_dataset(evals, tokenizer.eos_token_id) if evals is not None else None

    # 2. model (seeded so that a fresh head is the same on every run)
    set_seed(t.seed)
    emit(Status("loading model", cfg.model.name_or_path))
    loaded = load_model(
        cfg.task,
        cfg.model.name_or_path,
        trust_remote_code=cfg.model.trust_remote_code,
        **quantization_kwargs(cfg.model, device, precision),
    )
    head_warning = untrained_head_warning(loaded.newly_initialized, cfg.task)
    if head_warning:
        log.warning("%s: %s", cfg.model.name_or_path, head_warning)
    model = loaded.model
    if cfg.task == "causal-lm" and model.config.pad_token_id is None:
        model.config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token is not None else tokenizer.eos_token_id
        )

    # LoRA through TRL's own peft_config: the trainer wraps the model
    lora = adapters.peft_config(model, cfg.model.lora, cfg.task, loaded.fresh) if cfg.model.lora else None

    # 3. trainer
    args = sft_config(cfg, run_dir, device, precision, evals is not None)
    if collator is not None:
        collator.rank = args.process_index
    # what trains: counted once the trainer has put the adapters on
    parameters: dict[str, Any] = {}

    def started(total_steps: int, start_step: int) -> RunStarted:
        return run_started(
            cfg,
            run_dir,
            data,
            total_steps,
            start_step,
            device=str(args.device),
            precision=precision,
            world_size=args.world_size,
            backend=args.ddp_backend or "",
            **parameters,
        )

    events = new_event_callback(
        emit, control, run_started=started, batch_size=samples_per_step(t, args.world_size), precision=precision
    )
    events.seeded_masking = collator
    causal_cls, masked_cls = _trainer_classes()
    trainer_cls = masked_cls if cfg.task == "masked-lm" else causal_cls
    early = (
        [EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold)]
        if t.early_stopping_patience is not None and evals is not None
        else []
    )
    with adapters.quiet_renames():
        trainer = trainer_cls(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train,
            eval_dataset=evals,
            processing_class=tokenizer,
            callbacks=[events, *early],
            peft_config=lora,
        )
    if lora is not None:
        emit(Status("adapters", trainable_text(trainer.model, cfg)))
    parameters.update(parameter_fields(trainer.model, cfg))
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    trainer.base = base_name(cfg.model.name_or_path)
    trainer.events = events
    trainer.eval_seed = t.seed
    trainer.eval_collator = eval_collator
    trainer.progress = progress
    trainer.group_by_length_seed = t.seed if t.group_by_length else None
    if evals is not None:

        def evaluate_after_epoch(step: int) -> None:
            # As the Trainer's own evaluations do: the best metric follows this one too.
            if evaluation_due(t, step, trainer.state.max_steps, epoch_end=True):
                trainer._determine_best_metric(trainer.evaluate(), None)

        events.evaluate = evaluate_after_epoch

    checkpoint = None
    if resume:
        main, barrier = trainer.is_world_process_zero(), trainer.accelerator.wait_for_everyone
        checkpoint = checkpoint_to_resume(run_dir.checkpoints_dir, main=main, barrier=barrier)
        if checkpoint is not None:
            events.restore(_callback_state(checkpoint))

    # 4. train (running out of memory is guard_memory's to report: the trainer and model go with this frame)
    emit(Status("training", f"resuming from {checkpoint.name}" if checkpoint else ""))
    progress.stage = "training"
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # 5. save what we have, also when stopped
    progress.stage = "saving the model"
    if trainer.is_world_process_zero():
        save_final_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, run_dir, emit, trainer.base)
    trainer.accelerator.wait_for_everyone()
    state = trainer.state
    patience_spent = bool(early) and early[0].early_stopping_patience_counter >= early[0].early_stopping_patience
    return Outcome(
        status="stopped" if events.stopped else "finished",
        step=state.global_step,
        model_dir=run_dir.model_dir,
        metrics=dict(events.last_metrics),
        stopped_early=patience_spent and not events.stopped and state.global_step < state.max_steps,
        # the Trainer loads the best checkpoint at the end when it knows one (load_best_model_at_end)
        model_step=state.best_global_step if args.load_best_model_at_end and state.best_model_checkpoint else None,
    )
