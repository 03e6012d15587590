"""Turn :class:`~steerlimits.data.Prompt` objects into token ids, once, and batch them with left padding.

Formats: ``chat`` applies the tokenizer's chat template exactly once (generation prompt appended); ``frame`` is a
plain-text frame for chat-style prompts on base models without a template; ``raw`` is the user text alone (paper B's
prompt stems). Ids are what every later stage uses: they are never decoded and re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from steerlimits.data import Prompt

__all__ = ["Format", "encode", "encode_all", "left_pad"]

Format = Literal["chat", "frame", "raw"]


def encode(tok: Any, prompt: Prompt, fmt: Format) -> list[int]:
    """Token ids of one prompt in the given format."""
    if fmt == "chat":
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": prompt.user})
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    if fmt == "frame":
        text = (f"{prompt.system}\n\n" if prompt.system else "") + f"User: {prompt.user}\nAssistant:"
    elif fmt == "raw":
        text = (f"{prompt.system}\n\n" if prompt.system else "") + prompt.user
    else:
        raise ValueError(f"unknown prompt format '{fmt}' (chat, frame, raw)")
    return [int(i) for i in tok(text, add_special_tokens=True)["input_ids"]]


def encode_all(tok: Any, prompts: Sequence[Prompt], fmt: Format) -> list[list[int]]:
    return [encode(tok, p, fmt) for p in prompts]


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, max_len), padded on the LEFT."""
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, seq in enumerate(batch):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


def pad_id(tok: Any) -> int:
    """The pad id (falls back to eos when a tokenizer has no pad token)."""
    pid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    return int(pid)
