"""A small synthetic translation task, generated procedurally: the Transformer's embedded default.

`dataset: {name: synthetic_translation, pool: 4000, test: 1000, seed: 42}` writes
ROOT/{train,test}.{src,tgt} into $DDSWEEP_CACHE (once per pool/test/seed) and reads them
through the same path as real translation files (ddsweep.data.translation).

The "language" (all choices fixed here, so a preset is reproducible from its seed):
- source sentences of 3..10 words from 40 words w0..w39, drawn with Zipf-like
  frequencies (p ~ 1/(rank+1)), as in natural text;
- the translation of a word depends on it and on the word before it (two senses: the
  parity of the previous word's index; the first word counts as after an even one), so
  there are 80 target words t0..t79, assigned to (word, sense) by a seeded permutation;
- the target sentence is the translated words in reverse order (a long-range reordering
  that needs attention over positions);
- noise: each target word is, with probability 0.1, replaced by a uniformly random target
  word, in training and test pairs alike. That is part of the language (its irreducible
  ambiguity, as real translation has), not label noise: it sets a floor of about 0.1 on
  the token error of the words and of about 0.75 nats on their per-token test loss (the
  entropy of 0.9 + 0.1/80 on the true word and 0.1/80 on each other); the end-of-sentence
  token is never noisy, so the averages over all tokens sit a little lower.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SYNTHETIC_DEFAULTS = {"pool": 4000, "test": 1000, "seed": 42}
WORDS, SENSES, MIN_LEN, MAX_LEN, NOISE = 40, 2, 3, 10, 0.1


def synthetic_root(spec: dict) -> Path:
    from ddsweep.data.mnist1d import cache_dir

    p, t, s = (int(spec.get(k) or d) for k, d in SYNTHETIC_DEFAULTS.items())
    root = cache_dir() / f"synthetic-translation-pool{p}-test{t}-seed{s}"
    if not (root / "test.tgt").exists():
        _write(root, p, t, s)
    return root


def generate(pool: int, test: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """split -> [(source sentence, target sentence)], deterministic in (pool, test, seed)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    freq = 1.0 / np.arange(1, WORDS + 1)
    freq /= freq.sum()
    sense_word = rng.permutation(WORDS * SENSES).reshape(WORDS, SENSES)  # (word, sense) -> target word
    pairs = []
    for _ in range(pool + test):
        n = rng.randint(MIN_LEN, MAX_LEN + 1)
        src = rng.choice(WORDS, size=n, p=freq)
        prev = np.concatenate([[0], src[:-1]])
        tgt = sense_word[src, prev % SENSES][::-1].copy()
        noisy = rng.rand(n) < NOISE
        tgt[noisy] = rng.randint(0, WORDS * SENSES, size=int(noisy.sum()))
        pairs.append((" ".join(f"w{w}" for w in src), " ".join(f"t{w}" for w in tgt)))
    return {"train": pairs[:pool], "test": pairs[pool:]}


def _write(root: Path, pool: int, test: int, seed: int) -> None:
    from filelock import FileLock

    from ddsweep.data.writers import write_translation

    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):  # workers starting together generate once
        if (root / "test.tgt").exists():
            return
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_translation(tmp, generate(pool, test, seed), "src", "tgt")
        os.replace(tmp, root)  # atomic: the folder appears whole
