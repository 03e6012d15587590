"""Seeds: every random draw is derived from the config's master seed and the names of the step that draws it."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(master: int, *names: object) -> int:
    """A per-step seed derived from the master seed and the step's names (stable across runs and machines)."""
    text = ":".join([str(master), *map(str, names)])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
