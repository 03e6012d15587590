"""Tiny random-init causal LMs (smoke runs, tests) with a small byte-level BPE tokenizer trained offline.

The tokenizer is trained on the project's own prompt files (``data/*.jsonl``) so its vocabulary covers the prompts
the pipeline uses; with the same files, seed and size the result is identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from steerlimits.provenance import REPO_ROOT

__all__ = ["ARCHITECTURES", "build_random_model", "build_tokenizer", "tiny_config"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
ARCHITECTURES = ("llama", "qwen2", "gemma3_text", "gpt2", "gpt_neox")


def _corpus(data_dir: Path) -> list[str]:
    texts: list[str] = []
    for path in sorted(data_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                texts.extend(v for v in rec.values() if isinstance(v, str) and len(v) > 3)
    return texts or ["the quick brown fox jumps over the lazy dog"]


def build_tokenizer(vocab_size: int = 512, data_dir: Path | None = None) -> Any:
    """A byte-level BPE tokenizer with pad/bos/eos tokens and a minimal chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(_corpus(data_dir or REPO_ROOT / "data"), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|end|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(architecture: str, p: dict[str, Any], vocab_size: int) -> Any:
    """A transformers config of the given family with ``n_layers``, ``d_model``, ``n_heads`` from ``p``."""
    import transformers as tf

    n_layers, d, heads = int(p["n_layers"]), int(p["d_model"]), int(p.get("n_heads", 4))
    ffn = int(p.get("d_ff", 4 * d))
    common: dict[str, Any] = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if architecture in ("llama", "qwen2"):
        cls = tf.LlamaConfig if architecture == "llama" else tf.Qwen2Config
        return cls(
            hidden_size=d,
            intermediate_size=ffn,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=int(p.get("n_kv_heads", heads)),
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            **common,
        )
    if architecture == "gemma3_text":
        return tf.Gemma3TextConfig(
            hidden_size=d,
            intermediate_size=ffn,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=int(p.get("n_kv_heads", 1)),
            head_dim=d // heads,
            max_position_embeddings=2048,
            sliding_window=64,
            **common,
        )
    if architecture == "gpt2":
        return tf.GPT2Config(n_embd=d, n_layer=n_layers, n_head=heads, n_positions=2048, **common)
    if architecture == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=d,
            intermediate_size=ffn,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            max_position_embeddings=2048,
            **common,
        )
    raise ValueError(f"unknown tiny architecture '{architecture}' (one of {ARCHITECTURES})")


def build_random_model(architecture: str, p: dict[str, Any], data_dir: Path | None = None) -> tuple[Any, Any]:
    """Seeded random-init model and tokenizer; ``p`` has n_layers, d_model, n_heads, vocab_size, seed."""
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(int(p.get("vocab_size", 512)), data_dir)
    cfg = tiny_config(architecture, p, vocab_size=len(tok))
    torch.manual_seed(int(p.get("seed", 0)))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    if float(p.get("init_scale", 1.0)) != 1.0:  # optional: larger weights give less uniform outputs
        with torch.no_grad():
            for prm in model.parameters():
                if prm.dim() > 1:
                    prm.mul_(float(p["init_scale"]))
    return model, tok
