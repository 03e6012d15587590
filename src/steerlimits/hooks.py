"""The project's one residual-stream hook layer: locate decoder blocks, record and steer the residual stream.

Conventions (style §3, §5; paper A, decisions D2/D4)
----------------------------------------------------
* Blocks are indexed ``0 … L-1`` along the ModuleList found by :func:`resolve_blocks`.
* ``("resid_pre", l)`` is the *input* of block ``l``; ``("resid_post", l)`` is its *output*.
* ``outputs.hidden_states`` (``L + 1`` entries) relates to them as: ``hidden_states[0]`` = embeddings =
  ``resid_pre`` of block 0; ``hidden_states[l]`` = ``resid_pre`` of block ``l``; ``hidden_states[l + 1]`` =
  ``resid_post`` of block ``l`` for ``l < L - 1`` only: the last entry has the final norm applied.
* :func:`add_vector` steers at the input of block ``l`` (``resid_pre``). Under steering, Hugging Face's
  ``hidden_states[l]`` (``l >= 1``) still holds the *unsteered* output of block ``l - 1`` (the hook makes
  a new tensor), while for ``l = 0`` Hugging Face reads ``hidden_states[0]`` from block 0's (steered)
  input. Use :func:`record` with ``"resid_pre"`` to read the actual, steered, block input.

Blocks of transformers 5.x return a tensor; older ones returned a tuple whose first element is the hidden
state. :func:`unwrap` / :func:`rewrap` handle both. Everything is done with removable hooks inside context
managers; the model's parameters and modules are never modified.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

__all__ = [
    "LAYER_TABLE",
    "BlockLocation",
    "Positions",
    "Site",
    "SteerHandle",
    "add_vector",
    "directional_ablation",
    "forward_hidden",
    "model_device",
    "position_ids_from_mask",
    "record",
    "resolve_blocks",
    "rewrap",
    "unwrap",
]

logger = logging.getLogger(__name__)

Site = Literal["resid_pre", "resid_post"]
Positions = Literal["all", "last_prompt_and_generated"]

#: ``config.model_type`` -> dotted path of the decoder-block ModuleList in the *CausalLM* model.
LAYER_TABLE: dict[str, str] = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "mistral": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma3": "model.language_model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class BlockLocation:
    """Where the decoder blocks live: dotted ``path`` from the model, their number, and how it was found."""

    path: str
    n_blocks: int
    how: Literal["table", "guess", "override"]


# ---------------------------------------------------------------------------------- block resolution
def _num_layers(config: Any) -> int | None:
    configs = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        configs.insert(0, get_text())
    for cfg in configs:
        for key in _LAYER_COUNT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _module_list_at(model: nn.Module, path: str) -> nn.ModuleList | None:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, nn.ModuleList) else None


def resolve_blocks(model: nn.Module, layers_path: str | None = None) -> tuple[BlockLocation, nn.ModuleList]:
    """Find the ModuleList of decoder blocks.

    Order: ``layers_path`` (an override from the config) always wins; else :data:`LAYER_TABLE` by
    ``model.config.model_type`` (also tried without its first component, for a bare base model such as
    ``LlamaModel``); else a guess: the unique ModuleList whose length equals ``config.num_hidden_layers`` (or
    ``n_layer``), logged as a WARNING.

    Raises
    ------
    ValueError
        When the override does not name a ModuleList, or nothing (or more than one candidate) is found.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    hint = "set `layers_path` for this model in the config (e.g. `layers_path: model.layers`)"
    if layers_path is not None:
        blocks = _module_list_at(model, layers_path)
        if blocks is None:
            raise ValueError(
                f"layers_path={layers_path!r} does not name a torch.nn.ModuleList in {type(model).__name__} "
                f"(model_type={model_type!r})"
            )
        return BlockLocation(layers_path, len(blocks), "override"), blocks

    table_path = LAYER_TABLE.get(model_type) if isinstance(model_type, str) else None
    if table_path is not None:
        for path in (table_path, table_path.partition(".")[2]):
            blocks = _module_list_at(model, path) if path else None
            if blocks is not None:
                return BlockLocation(path, len(blocks), "table"), blocks
        logger.warning("model_type %r: table path %r not found; guessing", model_type, table_path)

    n_layers = _num_layers(config) if config is not None else None
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and (n_layers is None or len(module) == n_layers)
    ]
    if len(candidates) == 1:
        name, blocks = candidates[0]
        logger.warning(
            "model_type %r is not in LAYER_TABLE; guessed decoder blocks at %r (%d blocks); %s",
            model_type,
            name,
            len(blocks),
            hint,
        )
        return BlockLocation(name, len(blocks), "guess"), blocks
    found = "none" if not candidates else ", ".join(repr(name) for name, _ in candidates)
    raise ValueError(
        f"Cannot locate the decoder blocks of {type(model).__name__} (model_type={model_type!r}): not in "
        f"LAYER_TABLE and no unique torch.nn.ModuleList of length num_hidden_layers={n_layers} "
        f"(candidates: {found}); {hint}"
    )


# ---------------------------------------------------------------------------------- tensor plumbing
def unwrap(output: Any) -> Tensor:
    """The hidden state of a block output: the tensor (transformers 5.x) or a tuple's first element."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output).__name__}")


def rewrap(output: Any, hidden: Tensor) -> Any:
    """``output`` with its hidden state replaced by ``hidden``, keeping the container (tensor or tuple)."""
    if isinstance(output, Tensor):
        return hidden
    if isinstance(output, (tuple, list)) and output:
        return type(output)((hidden, *output[1:]))
    raise TypeError(f"cannot rewrap a block output of type {type(output).__name__}")


def _block_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, Tensor):
        raise TypeError("block input: expected a tensor as first positional or `hidden_states=` argument")
    return hidden


def _replace_block_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], hidden: Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids ``(batch, seq)`` from a 0/1 mask, correct under left padding.

    ``cumsum(mask) - 1``; pad positions are set to 1 exactly as ``GenerationMixin`` does (their value is
    irrelevant because they are masked out).
    """
    mask = attention_mask.long()
    position_ids = mask.cumsum(-1) - 1
    return position_ids.masked_fill(mask == 0, 1)


def forward_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
    """One forward pass returning ``outputs.hidden_states``: ``L + 1`` tensors ``(batch, seq, d_model)``.

    With a mask, ``position_ids`` are derived from it so that left-padded rows get the same positions as their
    unpadded single runs. No cache is built. Gradients are not disabled here; wrap the call in
    ``torch.inference_mode()`` when they are not needed.
    """
    device = model_device(model)
    kwargs: dict[str, Any] = {"output_hidden_states": True, "use_cache": False, "return_dict": True}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
        kwargs["position_ids"] = position_ids_from_mask(attention_mask).to(device)
    outputs = model(input_ids=input_ids.to(device), **kwargs)
    return tuple(outputs.hidden_states)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (inputs built on the CPU are moved there before a forward)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# ----------------------------------------------------------------------------------------- recording
def _check_layers(layers: Iterable[int], n_blocks: int) -> list[int]:
    layers = [operator.index(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_blocks]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_blocks} blocks (0 … {n_blocks - 1})")
    return layers


@contextmanager
def record(
    model: nn.Module,
    layers: Iterable[int],
    sites: Iterable[Site] = ("resid_pre",),
    layers_path: str | None = None,
) -> Iterator[dict[tuple[Site, int], list[Tensor]]]:
    """Record the residual stream at ``(site, layer)`` for every forward call inside the ``with`` block.

    Yields a dict ``{(site, layer): [tensor per call]}``, each tensor detached, shape
    ``(batch, seq, d_model)`` (``seq`` is the number of tokens of that call, e.g. 1 per step of a cached
    ``generate``). ``resid_pre`` is the actual input of the block (after any :func:`add_vector` at that
    block); ``resid_post`` is its output.
    The hooks are removed on exit, also on an exception.
    """
    _, blocks = resolve_blocks(model, layers_path)
    layers = _check_layers(layers, len(blocks))
    sites = list(sites)
    unknown = [site for site in sites if site not in get_args(Site)]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; expected one of {get_args(Site)}")
    store: dict[tuple[Site, int], list[Tensor]] = {(site, layer): [] for site in sites for layer in layers}
    handles = []

    def pre_hook(key: tuple[Site, int]) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            store[key].append(_block_input(args, kwargs).detach())

        return hook

    def post_hook(key: tuple[Site, int]) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            store[key].append(unwrap(output).detach())

        return hook

    try:
        for site, layer in store:
            if site == "resid_pre":
                hook = pre_hook((site, layer))
                handles.append(blocks[layer].register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(blocks[layer].register_forward_hook(post_hook((site, layer))))
        yield store
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------------------ steering
@dataclass
class SteerHandle:
    """State of one :func:`add_vector` context.

    ``start`` is the first absolute position steered (0 for ``"all"``, ``prompt_length - 1`` otherwise).
    ``calls[i] = (first absolute position, seq_len)`` of the i-th forward call through the block;
    ``changed[i]`` is a bool ``(seq_len,)`` mask of the positions that call actually modified (all False when
    ``alpha == 0``).
    """

    layer: int
    alpha: float
    positions: Positions
    start: int
    calls: list[tuple[int, int]] = field(default_factory=list)
    changed: list[Tensor] = field(default_factory=list)


def _cache_offset(args: tuple[Any, ...], kwargs: dict[str, Any], layer: int) -> int:
    """Absolute position of this call's first token: the length already cached for this block, else 0.

    The cache is any argument with ``get_seq_length`` (Llama/Qwen2/Gemma pass ``past_key_values=``, GPT-2
    passes it positionally, GPT-NeoX as ``layer_past=``); it is read for this block, before the block adds
    this call's tokens. A call without a cache is a full forward from 0.
    """
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, Tensor) and cache_position.numel() > 0:
        return int(cache_position.reshape(-1)[0])
    for value in (*kwargs.values(), *args[1:]):
        get_seq_length = getattr(value, "get_seq_length", None)
        if callable(get_seq_length) and not isinstance(value, Tensor):
            try:
                return int(get_seq_length(layer))
            except (TypeError, ValueError):
                return int(get_seq_length())
    return 0


@contextmanager
def add_vector(
    model: nn.Module,
    layer: int,
    vector: Tensor,
    alpha: float,
    positions: Positions = "all",
    prompt_length: int | None = None,
    layers_path: str | None = None,
) -> Iterator[SteerHandle]:
    """Add ``alpha * vector`` to the input of block ``layer`` (``resid_pre``) for forward calls in the block.

    Parameters
    ----------
    vector
        ``(d_model,)``, or ``(batch, d_model)`` for one vector per batch row (rows of a call must match);
        cast to the hidden state's dtype/device on each call (autograd is kept: if it requires grad,
        gradients flow to it).
    positions
        ``"all"``: every position of every call. ``"last_prompt_and_generated"``: absolute positions
        ``>= prompt_length - 1`` (with left padding the last prompt token is at ``prompt_length - 1`` in
        every row). The absolute position of a call's first token is the length already in the KV cache
        for this block (0 without a cache), so a full forward over prompt + generated tokens and a cached
        ``generate()`` steer the same positions.

    With ``alpha == 0`` the hook returns the input unchanged (bit-identical outputs). The hook is
    prepended, so it runs before other pre-hooks on the block (a :func:`record` ``resid_pre`` sees the
    steered input). Removed on exit, also on an exception.
    """
    if positions not in get_args(Positions):
        raise ValueError(f"unknown positions {positions!r}; expected one of {get_args(Positions)}")
    if positions == "last_prompt_and_generated" and (prompt_length is None or prompt_length < 1):
        raise ValueError("positions='last_prompt_and_generated' needs prompt_length >= 1")
    if vector.ndim not in (1, 2):
        raise ValueError(f"vector must have shape (d_model,) or (batch, d_model), got {tuple(vector.shape)}")
    _, blocks = resolve_blocks(model, layers_path)
    (layer,) = _check_layers([layer], len(blocks))
    first = 0 if positions == "all" else int(prompt_length) - 1  # type: ignore[arg-type]
    handle = SteerHandle(layer=layer, alpha=float(alpha), positions=positions, start=first)

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = _block_input(args, kwargs)
        if hidden.shape[-1] != vector.shape[-1]:
            raise ValueError(f"vector has size {vector.shape[-1]} but the hidden state has {hidden.shape[-1]}")
        if vector.ndim == 2 and vector.shape[0] != hidden.shape[0]:
            raise ValueError(f"{vector.shape[0]} per-row vectors for a batch of {hidden.shape[0]} rows")
        seq_len = hidden.shape[1]
        offset = _cache_offset(args, kwargs, layer)
        handle.calls.append((offset, seq_len))
        mask = torch.arange(offset, offset + seq_len) >= first
        if alpha == 0 or not bool(mask.any()):
            handle.changed.append(torch.zeros(seq_len, dtype=torch.bool))
            return None
        handle.changed.append(mask)
        vec = vector.to(device=hidden.device, dtype=hidden.dtype)
        steered = hidden + alpha * (vec if vec.ndim == 1 else vec[:, None, :])
        if not bool(mask.all()):  # keep untouched positions bit-identical
            steered = torch.where(mask.to(hidden.device)[None, :, None], steered, hidden)
        return _replace_block_input(args, kwargs, steered)

    removable = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    try:
        yield handle
    finally:
        removable.remove()


def _contribution_modules(block: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are added to the residual stream: attention and MLP outputs, or (Gemma-style
    sandwich norms) the post-attention and post-feed-forward norms."""
    if hasattr(block, "post_feedforward_layernorm") and hasattr(block, "post_attention_layernorm"):
        return [block.post_attention_layernorm, block.post_feedforward_layernorm]  # type: ignore[list-item]
    found = [getattr(block, name) for name in ("self_attn", "attn", "attention", "mlp") if hasattr(block, name)]
    if len(found) != 2:
        raise ValueError(f"cannot find the attention and MLP outputs of {type(block).__name__} for ablation")
    return found


@contextmanager
def directional_ablation(model: nn.Module, vector: Tensor, layers_path: str | None = None) -> Iterator[None]:
    """Remove a direction everywhere: ``h ↦ h − (h·v̂)v̂`` at every block input and every attention / MLP output
    (Arditi et al. 2024, arXiv 2406.11717). Hooks are removed on exit, also on an exception."""
    _, blocks = resolve_blocks(model, layers_path)
    unit = vector / vector.norm()

    def project(h: Tensor) -> Tensor:
        u = unit.to(device=h.device, dtype=h.dtype)
        return h - (h @ u)[..., None] * u

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _replace_block_input(args, kwargs, project(_block_input(args, kwargs)))

    def post(module: nn.Module, args: Any, output: Any) -> Any:
        return rewrap(output, project(unwrap(output)))

    handles = []
    try:
        for block in blocks:
            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            handles += [mod.register_forward_hook(post) for mod in _contribution_modules(block)]
        yield
    finally:
        for h in handles:
            h.remove()
