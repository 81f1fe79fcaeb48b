"""A resumable single-model trainer: deterministic batches, atomic checkpoints, a per-step loss log.

Bit-for-bit resumption: the batch at step s is a pure function of (seed, s), and a checkpoint holds the
model, the AdamW state, the step (the data position), elapsed time and every RNG state. With the same thread
count (matmul reduction order depends on it) a killed run resumed from its last checkpoint ends with exactly
the weights of an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from fsgen_eval.experiments.zoo.family import FamilyConfig, ModelSpec, llama_config

CKPT = "checkpoint.pt"
LOSS_LOG = "loss.csv"
LOG_FIELDS = ("step", "tokens", "lr", "loss", "grad_norm", "elapsed_s")


@dataclass
class TrainResult:
    model: LlamaForCausalLM  # fp32, eval mode, the final weights
    steps: int  # optimizer steps taken in total (over all resumptions)
    tokens: int  # training tokens seen = steps * tokens_per_step
    elapsed_s: float  # training wall time summed over all resumptions (excludes time lost to kills)


def lr_at(step: int, total: int, peak: float, family: FamilyConfig) -> float:
    """Linear warmup to ``peak``, then cosine decay to ``min_lr_ratio * peak`` at the last step."""
    if step < family.warmup_steps:
        return peak * (step + 1) / family.warmup_steps
    progress = (step - family.warmup_steps) / max(1, total - family.warmup_steps)
    floor = family.min_lr_ratio * peak
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_at(data: torch.Tensor, step: int, family: FamilyConfig) -> torch.Tensor:
    """The ``(B, T+1)`` token block of ``step``: chunks in a fresh seeded permutation every epoch.

    A pure function of the step, so the data position in a checkpoint is just the step number.
    """
    T, B = family.seq_len, family.batch_size
    n_chunks = (len(data) - 1) // T
    if n_chunks < 1:
        raise ValueError(f"corpus of {len(data)} tokens is shorter than one sequence of {T + 1}")
    rows = []
    for pos in range(step * B, (step + 1) * B):
        epoch, idx = divmod(pos, n_chunks)
        gen = torch.Generator().manual_seed(family.seed * 1_000_003 + epoch)
        chunk = int(torch.randperm(n_chunks, generator=gen)[idx])
        rows.append(data[chunk * T : chunk * T + T + 1])
    return torch.stack(rows).long()  # (B, T+1)


def new_model(spec: ModelSpec, family: FamilyConfig, eos_id: int) -> LlamaForCausalLM:
    """A freshly initialised fp32 Llama for ``spec`` (seeded by the family, so reruns start alike)."""
    torch.manual_seed(family.seed)  # same init seed for every run of this spec
    return LlamaForCausalLM(llama_config(spec, family, eos_id)).float()


def new_optimizer(model: torch.nn.Module, spec: ModelSpec, family: FamilyConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only."""
    # Decay matrices only: decaying RMSNorm gains towards zero would fight the normalisation.
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": family.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=family.betas, foreach=False)


def lm_loss(model: LlamaForCausalLM, block: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy of a ``(B, T+1)`` block (inputs ``[:, :-1]``, targets ``[:, 1:]``)."""
    logits = model(input_ids=block[:, :-1]).logits  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), block[:, 1:].reshape(-1))


def _fingerprint(spec: ModelSpec, family: FamilyConfig) -> dict:
    # Everything that shapes the weights; a checkpoint from a different setup must not be resumed.
    fam = family.as_dict()
    fam.pop("models")
    fam.pop("checkpoint_every")
    fam.pop("heldout_tokens")
    return {"spec": asdict(spec), "family": fam}


def save_checkpoint(path: Path, model, opt, step: int, elapsed: float, fingerprint: dict) -> None:
    """Write to a temporary file, then rename: a kill mid-write leaves the previous checkpoint intact."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "fingerprint": fingerprint,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt, fingerprint: dict) -> tuple[int, float]:
    """Restore model, optimiser and RNG states from ``path``; returns (step, seconds trained so far).
    ``ValueError`` if the checkpoint was made with another setup (its ``fingerprint`` differs)."""
    state = torch.load(path, weights_only=False)
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint {path} was made with another model or training setup; delete it to restart")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    return state["step"], state["elapsed_s"]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows of steps the checkpoint does not contain (they will be redone identically)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) < step]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def train_model(
    spec: ModelSpec,
    family: FamilyConfig,
    data: np.ndarray,
    work_dir: Path,
    eos_id: int,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult | None:
    """Train ``spec`` on the token stream ``data``, resuming from ``work_dir/checkpoint.pt`` if present.

    ``stop_after`` ends this call after that many steps *without* checkpointing, as a kill would (tests use
    it); the call then returns None. The per-step loss goes to ``work_dir/loss.csv``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt, log_path = work_dir / CKPT, work_dir / LOSS_LOG
    tokens = torch.from_numpy(data.astype(np.int64))
    model, fp = new_model(spec, family, eos_id), _fingerprint(spec, family)
    opt = new_optimizer(model, spec, family)
    step, elapsed = (load_checkpoint(ckpt, model, opt, fp) if ckpt.exists() else (0, 0.0))
    if step:
        log(f"{spec.name}: resuming at step {step}/{family.steps}")
    _truncate_log(log_path, step)
    model.train()
    with open(log_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if f.tell() == 0:
            writer.writeheader()
        start, done_here = time.perf_counter() - elapsed, 0
        while step < family.steps:
            if stop_after is not None and done_here >= stop_after:
                return None
            loss, norm, lr = _train_step(model, opt, tokens, step, spec, family)
            step, done_here = step + 1, done_here + 1
            elapsed = time.perf_counter() - start
            writer.writerow({"step": step - 1, "tokens": step * family.tokens_per_step, "lr": f"{lr:.6g}",
                             "loss": f"{loss:.6f}", "grad_norm": f"{norm:.4f}", "elapsed_s": f"{elapsed:.2f}"})
            if step % family.checkpoint_every == 0 or step == family.steps:
                f.flush()  # the log must hold every step the checkpoint holds
                save_checkpoint(ckpt, model, opt, step, elapsed, fp)
            if step % 25 == 0 or step == family.steps:
                log(f"{spec.name}: step {step}/{family.steps} loss {loss:.4f} ({elapsed:.0f}s)")
    return TrainResult(model.eval(), step, step * family.tokens_per_step, elapsed)


def _train_step(model, opt, tokens: torch.Tensor, step: int, spec: ModelSpec, family: FamilyConfig) -> tuple[float, float, float]:
    lr = lr_at(step, family.steps, spec.lr, family)
    for group in opt.param_groups:
        group["lr"] = lr
    loss = lm_loss(model, batch_at(tokens, step, family))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), family.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), norm.item(), lr


@torch.no_grad()
def heldout_loss(model: LlamaForCausalLM, data: np.ndarray, seq_len: int, max_tokens: int, batch_size: int = 4) -> tuple[float, int]:
    """Mean next-token NLL (nats) over the first ``max_tokens`` of ``data`` in non-overlapping windows.

    Returns (loss, number of scored tokens). Every model is scored on the same windows, so losses compare.
    """
    model.eval()
    tokens = torch.from_numpy(data[: max_tokens + 1].astype(np.int64))
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"held-out text of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
    blocks = torch.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)])  # (n, T+1)
    total = 0.0
    for i in range(0, n, batch_size):
        block = blocks[i : i + batch_size]
        total += lm_loss(model, block).item() * block.shape[0]
    return total / n, n * seq_len
