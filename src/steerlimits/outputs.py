"""The one writer of outputs: tables, text, JSON, JSONL, tensors and figures, each with its provenance sidecar.

Every writer moves a finished temporary file into place (:func:`steerlimits.provenance.atomic_path`), so a
finished-looking file is never partial, and writes ``<file>.meta.json`` beside it: the job's record
(:func:`steerlimits.provenance.record`: code version, rule, config hash, stage settings and their hash) plus the
``meta`` the step adds (model sha256, sizes, notes, timings). Figures are written without timestamps, so that a
rerun gives identical bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlimits.provenance import (
    atomic_path,
    atomic_write_json,
    record,
    sidecar_path,
    without_timings,
    write_with_sidecar,
)

__all__ = [
    "read_sidecar",
    "write_figure",
    "write_json",
    "write_jsonl",
    "write_safetensors",
    "write_table",
    "write_text",
]

Meta = Mapping[str, Any] | None

#: Float format of every CSV table: six significant digits (stable across platforms for `make verify`).
FLOAT_FORMAT = "%.6g"


def _meta(meta: Meta) -> dict[str, Any]:
    return record(**dict(meta or {}))


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of ``path`` (empty if there is none)."""
    p = sidecar_path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def write_table(path: str | Path, df: Any, meta: Meta = None, *, index: bool = False) -> None:
    """A pandas DataFrame as CSV (floats with :data:`FLOAT_FORMAT`)."""
    write_with_sidecar(path, lambda tmp: df.to_csv(tmp, index=index, float_format=FLOAT_FORMAT), _meta(meta))


def write_text(path: str | Path, text: str, meta: Meta = None) -> None:
    write_with_sidecar(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), _meta(meta))


def write_json(path: str | Path, obj: Any, meta: Meta = None) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n", meta)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], meta: Meta = None) -> None:
    """One JSON object per line (``rows`` may be a DataFrame's records)."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in rows)
    write_text(path, text, meta)


def write_safetensors(path: str | Path, tensors: Mapping[str, Any], meta: Meta = None) -> None:
    """Tensors (contiguous float copies are the caller's choice); the record, without its timings (so that a
    rerun writes identical bytes), is also stored in the file's header."""
    from safetensors.torch import save_file

    rec = _meta(meta)
    header = {"meta": json.dumps(without_timings(rec), default=str, sort_keys=True)}
    data = {k: t.contiguous() for k, t in tensors.items()}
    write_with_sidecar(path, lambda tmp: save_file(data, str(tmp), metadata=header), rec)


def write_figure(fig: Any, paths: Sequence[str | Path], meta: Meta = None) -> None:
    """A matplotlib figure to each path (format from the suffix: png, pdf, svg), without timestamps."""
    rec = _meta(meta)
    for path in paths:
        fmt = Path(path).suffix.lstrip(".")
        stamp = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}.get(fmt)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=stamp)
        atomic_write_json(sidecar_path(path), rec)
