"""Translation data from local files: `dataset: {name: translation, root: DIR, src: de, tgt: en}`.

The usual preprocessed layout (e.g. fairseq's IWSLT'14 preparation, after BPE):
ROOT/train.de and ROOT/train.en, ROOT/test.de and ROOT/test.en (ROOT/valid.* too, checked
when present but not used: ddsweep's test metrics are on test), one tokenised sentence per
line, tokens separated by spaces; line i of a split's two files is a sentence pair.

- Vocabulary, per language: ROOT/dict.de.txt when present (fairseq's format, one "token
  count" per line, in the file's order), else every token of the language's training file,
  most frequent first (ties by token). Four special tokens come first, fairseq's ids:
  <s> = 0 (begin), <pad> = 1, </s> = 2 (end), <unk> = 3 (tokens not in a dictionary).
- A sample is a sentence pair; n_train takes the first n pairs of a seeded permutation of
  the training pairs (nested subsets, ddsweep.data.noise), the test split is the test set.
- Each pair is one int32 row [source | target]: the source's tokens and </s>, padded with
  <pad> to the longest source; then <s>, the target's tokens and </s>, padded likewise.
  The decoder reads <s> t1 .. tn and predicts t1 .. tn </s>. The whole set sits on the
  device; each batch is cut to its longest sentences there (ddsweep.models.transformer),
  so padding costs only up to the longest sentence of a batch.
- No label noise: a text grid asking for it is refused at plan time (ddsweep.grid).

Planning checks the files without torch (missing or misaligned files, i.e. a split whose
two files have different line counts, are one line); the loaded tensors are cached in
$DDSWEEP_CACHE keyed by every file's path, size and modification time.

`synthetic_translation` is the same pipeline on files generated procedurally
(ddsweep.data.synthetic_text), so the Transformer trains without downloads.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ddsweep.errors import UserError

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPLITS = ("train", "valid", "test")
REQUIRED_SPLITS = ("train", "test")
TEXT_DATASETS = ("translation", "synthetic_translation")


@dataclass(frozen=True)
class TextInfo:
    """How a text dataset's rows are laid out, and its vocabularies."""

    src_len: int  # columns of a row holding the source (tokens, </s>, padding)
    tgt_len: int  # columns holding the target (<s>, tokens, </s>, padding)
    src_vocab: int
    tgt_vocab: int


def is_text(name: str) -> bool:
    return name in TEXT_DATASETS


def languages(spec: dict) -> tuple[str, str]:
    if spec["name"] == "synthetic_translation":
        return "src", "tgt"
    return spec.get("src") or "de", spec.get("tgt") or "en"


def text_root(spec: dict) -> Path:
    if spec["name"] == "synthetic_translation":
        from ddsweep.data.synthetic_text import synthetic_root

        return synthetic_root(spec)
    return Path(spec["root"]).expanduser()


def split_files(root: Path, split: str, langs: tuple[str, str]) -> tuple[Path, Path]:
    return root / f"{split}.{langs[0]}", root / f"{split}.{langs[1]}"


def count_lines(path: Path) -> int:
    """Lines as a text editor counts them: a last line without a newline counts too."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


# ----------------------------------------------------------------------------- planning (no torch)


def spec_problem(spec: dict) -> tuple[str, str] | None:
    """(key, problem) when the dataset section has knobs that do not apply to a text dataset."""
    name = spec["name"]
    if name == "translation":
        for key in ("pool", "test", "seed"):
            if spec.get(key) is not None:
                return key, "applies to generated datasets (mnist1d, synthetic_translation), not to files"
        if not spec.get("root"):
            return "root", "translation needs dataset.root: a folder with train.SRC, train.TGT, test.SRC, test.TGT"
        if (spec.get("src") or "de") == (spec.get("tgt") or "en"):
            return "tgt", "the target language must differ from the source language"
    elif spec.get("root") is not None or spec.get("src") is not None or spec.get("tgt") is not None:
        key = next(k for k in ("root", "src", "tgt") if spec.get(k) is not None)
        return key, "applies to name: translation (files); synthetic_translation is generated"
    for key, default in (("download", False), ("verify", True), ("augment", False)):
        if spec.get(key, default) != default:
            return key, "applies to the image datasets only"
    return None


def availability_problem(spec: dict) -> str | None:
    """Why the translation files cannot be used (one line), or None. Generated sets are always there."""
    if spec["name"] != "translation":
        return None
    root, langs = text_root(spec), languages(spec)
    if not root.is_dir():
        return f"translation data: no folder {root}"
    for split in SPLITS:
        paths = split_files(root, split, langs)
        present = [p.exists() for p in paths]
        if split not in REQUIRED_SPLITS and not any(present):
            continue
        for p, there in zip(paths, present):
            if not there:
                return f"translation data: {p} is missing (a split needs both {paths[0].name} and {paths[1].name})"
        counts = [count_lines(p) for p in paths]
        if counts[0] != counts[1]:
            return (f"translation data: {paths[0].name} has {counts[0]} lines but {paths[1].name} has {counts[1]}: "
                    "line i of both files must be one sentence pair")
        if counts[0] == 0:
            return f"translation data: {paths[0]} is empty"
    for lang in langs:
        problem = _dict_problem(root / f"dict.{lang}.txt")
        if problem:
            return problem
    return None


def pool_size(spec: dict) -> int:
    """Training sentence pairs (lines of the source's training file)."""
    if spec["name"] == "synthetic_translation":
        from ddsweep.data.synthetic_text import SYNTHETIC_DEFAULTS

        return int(spec.get("pool") or SYNTHETIC_DEFAULTS["pool"])
    return count_lines(split_files(text_root(spec), "train", languages(spec))[0])


def _dict_problem(path: Path) -> str | None:
    if not path.exists():
        return None
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            return f"{path}: line {i} is not 'token count' (fairseq's dictionary format): {line[:60]!r}"
    return None


# ----------------------------------------------------------------------------- loading


def read_dict(path: Path) -> list[str]:
    """A fairseq dictionary's tokens in file order (counts and flags ignored), without the specials."""
    tokens = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for t in tokens if t not in SPECIALS]


def build_vocab(lines: list[str]) -> list[str]:
    """Every token of `lines`, most frequent first, ties by token (the specials excluded)."""
    counts = Counter(t for line in lines for t in line.split())
    for s in SPECIALS:
        counts.pop(s, None)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def vocabulary(root: Path, lang: str, train_lines: list[str]) -> list[str]:
    """The language's vocabulary, specials first: from dict.LANG.txt when present, else the training file."""
    path = root / f"dict.{lang}.txt"
    tokens = read_dict(path) if path.exists() else build_vocab(train_lines)
    return list(SPECIALS) + tokens


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_translation(spec: dict):
    """The sentence pairs as Tensors (x: int32 rows [source | target], y: zeros), cached on disk."""
    import torch

    from ddsweep.data.mnist1d import cache_dir
    from ddsweep.data.tensors import Tensors

    problem = availability_problem(spec)
    if problem:
        raise UserError(problem)
    root, langs = text_root(spec), languages(spec)
    files = [p for split in SPLITS for p in split_files(root, split, langs)]
    files += [root / f"dict.{lang}.txt" for lang in langs]
    h = hashlib.sha256(f"{root.resolve()}|{langs}".encode())
    for p in files:
        if p.exists():
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = cache_dir() / f"translation-{h.hexdigest()[:20]}.pt"
    d = None
    if cache.exists():
        try:
            d = torch.load(cache, weights_only=True)
        except Exception:
            d = None  # a truncated cache file is rebuilt below
    if d is None:
        d = _tensorize(root, langs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(d, tmp)
        os.replace(tmp, cache)  # atomic: workers starting together never read a torn file
    info = TextInfo(*(int(v) for v in d["info"].tolist()))
    n_pool, n_test = len(d["x_pool"]), len(d["x_test"])
    return Tensors(d["x_pool"], torch.zeros(n_pool, dtype=torch.int64), d["x_test"],
                   torch.zeros(n_test, dtype=torch.int64), info.tgt_vocab, text=info)


def _tensorize(root: Path, langs: tuple[str, str]) -> dict:
    import torch

    src_train, tgt_train = (_read_lines(p) for p in split_files(root, "train", langs))
    src_test, tgt_test = (_read_lines(p) for p in split_files(root, "test", langs))
    ids = []
    for lang, train in zip(langs, (src_train, tgt_train)):
        vocab = vocabulary(root, lang, train)
        ids.append({t: i for i, t in enumerate(vocab)})
    src_len = 1 + max(len(s.split()) for s in src_train + src_test)  # + </s>
    tgt_len = 2 + max(len(s.split()) for s in tgt_train + tgt_test)  # <s> + </s>

    def rows(src_lines, tgt_lines):
        x = torch.full((len(src_lines), src_len + tgt_len), PAD, dtype=torch.int32)
        for i, (s, t) in enumerate(zip(src_lines, tgt_lines)):
            a = [ids[0].get(tok, UNK) for tok in s.split()] + [EOS]
            b = [BOS] + [ids[1].get(tok, UNK) for tok in t.split()] + [EOS]
            x[i, :len(a)] = torch.tensor(a, dtype=torch.int32)
            x[i, src_len:src_len + len(b)] = torch.tensor(b, dtype=torch.int32)
        return x

    info = torch.tensor([src_len, tgt_len, len(ids[0]), len(ids[1])])
    return {"x_pool": rows(src_train, tgt_train), "x_test": rows(src_test, tgt_test), "info": info}


@dataclass(frozen=True)
class TextShape:
    """What sizing a pack needs to know of a text dataset, read without torch."""

    src_vocab: int
    tgt_vocab: int
    src_tokens: float  # mean tokens per training row, </s> (and <s>) included
    tgt_tokens: float
    row: int  # tokens per stored row (source and target, padded)


def text_shape(spec: dict) -> TextShape:
    """Vocabulary sizes and sentence lengths of a text dataset (the training files scanned once per process)."""
    root, langs = text_root(spec), languages(spec)
    paths = split_files(root, "train", langs) + split_files(root, "test", langs)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists())
    return _text_shape(str(root), langs, stamp)


@functools.lru_cache(maxsize=8)
def _text_shape(root: str, langs: tuple[str, str], stamp) -> TextShape:
    root = Path(root)
    vocab, means, longest = [], [], []
    for lang, extra in zip(langs, (1, 2)):
        train = _read_lines(root / f"train.{lang}")
        test = _read_lines(root / f"test.{lang}")
        vocab.append(len(vocabulary(root, lang, train)))
        lengths = [len(line.split()) for line in train]
        means.append(extra + sum(lengths) / max(1, len(lengths)))
        longest.append(extra + max(lengths + [len(line.split()) for line in test]))
    return TextShape(vocab[0], vocab[1], means[0], means[1], sum(longest))
