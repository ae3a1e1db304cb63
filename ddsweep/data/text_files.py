"""Write sentence pairs in the layout ddsweep.data.translation reads (for tests, examples, generated sets)."""

from __future__ import annotations

from pathlib import Path


def write_translation(root, pairs: dict[str, list[tuple[str, str]]], src: str = "de", tgt: str = "en") -> Path:
    """Write split -> [(source, target)] as ROOT/SPLIT.SRC and ROOT/SPLIT.TGT (for tests and examples)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, items in pairs.items():
        for lang, side in ((src, 0), (tgt, 1)):
            (root / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in items), encoding="utf-8")
    return root
