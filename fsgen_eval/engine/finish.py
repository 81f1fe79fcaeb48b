"""The finishing rule, once: where a generation ends (EOS, a stop string, the token budget) and how it is cut.

The decoding loop (``state.Finisher``) applies it column by column; replay (``engine.replay``) applies it to
given tokens. Both call these functions, so a trajectory replay re-creates ends where the loop ended.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def stop_window(stop: Sequence[str]) -> int:
    """Tokens decoded to look for a stop string: a stop string of n bytes spans at most n byte-level tokens;
    one more covers a split character."""
    return max((len(s.encode()) for s in stop), default=0) + 1


def stop_in(tokenizer: PreTrainedTokenizerBase, generated: Sequence[int], stop: Sequence[str]) -> bool:
    """Whether a stop string appears in the text of the last :func:`stop_window` of the ``generated`` tokens
    (special tokens skipped): checked after each emitted token, it ends the row at the token completing it."""
    if not stop:
        return False
    text = tokenizer.decode(list(generated[-stop_window(stop):]), skip_special_tokens=True)
    return any(s in text for s in stop)


def ends_at(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], n: int, eos: set[int],
            stop: Sequence[str], max_new_tokens: int) -> bool:
    """Whether the engine's ``Finisher`` ends a row at its ``n``-th emitted token ``ids[n - 1]`` (EOS, the
    token completing a stop string, or ``max_new_tokens``), given it did not end before."""
    return ids[n - 1] in eos or n >= max_new_tokens or stop_in(tokenizer, ids[:n], stop)


def finish_index(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], eos: Sequence[int],
                 stop: Sequence[str], max_new_tokens: int) -> int | None:
    """Where the engine's ``Finisher`` ends a row that emits ``ids``: the number of tokens emitted (EOS or
    the token completing a stop string included), or ``None`` if ``ids`` end before that."""
    eos_set = set(eos)
    return next((n for n in range(1, len(ids) + 1) if ends_at(tokenizer, ids, n, eos_set, stop, max_new_tokens)),
                None)


def trim_at_stop(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop: tuple[str, ...]) -> tuple[list[int], str]:
    """Cut the text before the earliest stop string, and the tokens to the fewest that still spell it."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s in text]
    if not cuts:
        return ids, text
    text = text[: min(cuts)]
    k = len(ids)
    while k > 0 and tokenizer.decode(ids[: k - 1], skip_special_tokens=True).startswith(text):
        k -= 1
    return ids[:k], text
