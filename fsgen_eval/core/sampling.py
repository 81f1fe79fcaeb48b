"""Distributions on next-token log-probabilities: warping, picking a token, uncertainty statistics.

All functions take log-probabilities ``[N, V]`` (N rows, V = the tokenizer's vocabulary) and are pure.
"""

from __future__ import annotations

import torch
from torch import Tensor


def warp(logp: Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering; returns renormalised log-probs ``[N, V]``.

    ``temperature`` must be > 0 here (greedy decoding never warps). Filtered tokens get ``-inf``.
    """
    x = logp / temperature
    if top_k and top_k < x.shape[-1]:
        kth = x.topk(top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = x.sort(dim=-1, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        # drop a token when the mass *before* it already reaches top_p, so the top token always survives
        drop_sorted = (cum - sorted_x.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x.log_softmax(-1)


def pick(logp: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None) -> Tensor:
    """One token per row ``[N]``: argmax at temperature 0, else a sample of the warped distribution."""
    if temperature == 0:
        return logp.argmax(-1)
    probs = warp(logp, temperature, top_k, top_p).exp()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def stats(logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Entropy (nats), top-1 probability and top-1 minus top-2 probability of each row, each ``[N]``.

    Statistics are of the model's own distribution (temperature 1), so they do not change with the
    sampling settings of a run.
    """
    p = logp.exp()
    # -sum p log p; a masked (-inf) token gives 0 * -inf = NaN, which is its 0 (special.entr does the same
    # at about 4x the cost on a CPU)
    entropy = -torch.nan_to_num(p * logp, nan=0.0).sum(-1)
    top2 = p.topk(2, dim=-1).values
    return entropy, top2[..., 0], top2[..., 0] - top2[..., 1]
