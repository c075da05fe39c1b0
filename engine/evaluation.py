"""The loop engine's evaluation: eval loss with accuracy, macro-F1 and the confusion matrix (classification), or
perplexity and token accuracy (language models), reduced over every process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.faults import kill_point
from engine.metrics import macro_f1
from engine.stepping import perplexity_of

if TYPE_CHECKING:
    import torch

    from engine.loop import Setup


def evaluate(s: Setup, task: str, seed: int) -> dict[str, Any]:
    """Eval loss plus accuracy, macro-F1 and the confusion matrix (classification), or perplexity and token
    accuracy (LMs)."""
    import torch

    assert s.eval_loader is not None
    acc = s.accelerator
    model = s.model
    model.eval()
    loss_sum, weight_sum = (torch.zeros((), device=acc.device, dtype=torch.float64) for _ in range(2))
    correct, counted = (torch.zeros((), device=acc.device, dtype=torch.long) for _ in range(2))
    num_labels = len(s.data.label_names) or 1
    confusion = torch.zeros((num_labels, num_labels), device=acc.device, dtype=torch.long)
    # Masks for LM eval are random: fix them so epochs compare fairly, without disturbing training RNG.
    many = acc.num_processes > 1
    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        for batch in s.eval_loader:
            out = model(**batch)
            kill_point("evaluate")
            labels = batch["labels"]
            if many:
                # Per-sample sums, gathered without the samples the last batches repeat to even out the
                # processes: every eval sample counts once, and each process ends with the same totals.
                sample_loss, sample_hits, sample_n, preds, gold = _per_sample(out.logits, labels, task)
                sample_loss, sample_hits, sample_n, preds, gold = acc.gather_for_metrics(
                    (sample_loss, sample_hits, sample_n, preds, gold)
                )
                loss_sum += sample_loss.sum()
                weight_sum += sample_n.sum()
                correct += sample_hits.sum()
                counted += sample_n.sum()
                if task == "classification":
                    confusion += torch.bincount(gold * num_labels + preds, minlength=confusion.numel()).view_as(
                        confusion
                    )
                continue
            if task == "classification":
                preds, labels = acc.gather_for_metrics((out.logits.argmax(-1), labels))
                hits, n = preds == labels, labels.numel()
                confusion += torch.bincount(labels * num_labels + preds, minlength=confusion.numel()).view_as(confusion)
            else:
                logits = out.logits
                if task == "causal-lm":
                    logits, labels = logits[:, :-1], labels[:, 1:]
                mask = labels != -100
                hits, n = (logits.argmax(-1) == labels) & mask, mask.sum()
            correct += hits.sum()
            counted += n
            loss_sum += out.loss.double() * n
            weight_sum += n
    model.train()
    if not many:
        loss_sum, weight_sum, correct, counted = (
            acc.reduce(x, "sum") for x in (loss_sum, weight_sum, correct, counted)
        )
    eval_loss = (loss_sum / weight_sum.clamp(min=1)).item()
    accuracy = (correct.double() / counted.clamp(min=1)).item()
    if task == "classification":
        counts = confusion.tolist()
        return {"eval_loss": eval_loss, "accuracy": accuracy, "macro_f1": macro_f1(counts), "confusion": counts}
    return {"eval_loss": eval_loss, "perplexity": perplexity_of(eval_loss), "accuracy": accuracy}


def _per_sample(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, ...]:
    """(loss sum, hits, counted tokens or 1, prediction, label) per sample of a batch; prediction and label only
    mean something for classification (a classifier's loss is a mean over samples, a language model's over its
    labelled tokens, as the model computes it)."""
    import torch
    import torch.nn.functional as F

    if task == "classification":
        loss = F.cross_entropy(logits.float(), labels, reduction="none").double()
        preds = logits.argmax(-1)
        return loss, (preds == labels).long(), torch.ones_like(labels), preds, labels
    if task == "causal-lm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    token_loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    hits = ((logits.argmax(-1) == labels) & mask).sum(-1)
    zeros = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
    return token_loss.double().sum(-1), hits, mask.sum(-1), zeros, zeros
