"""One way to say "unknown name": a did-you-mean guess first, then the known names, kept to one short line.

Every place that refuses a name the user typed (a grid axis or key, a dataset, a metric, a column, a
sweep) calls `unknown()`, so the messages read alike and stay short however many names there are.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

# Past this many characters the list of known names is cut ("... and 12 more"): an error is one line.
_LIST_LIMIT = 160


def close_matches(word: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names the user probably meant: spelling neighbours, then initials (learning_rate -> lr)."""
    known = [str(k) for k in known]
    word = str(word)
    lowered = {k.lower(): k for k in known}
    found = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)]
    parts = [p for p in word.replace("-", "_").split("_") if p]
    initials = "".join(p[0] for p in parts).lower() if len(parts) > 1 else ""
    for k in known:
        if k not in found and (k.lower() == initials or (len(word) >= 3 and k.lower().startswith(word.lower()))):
            found.append(k)
    return found[:n]


def known_list(known: Iterable[str]) -> str:
    """The known names, comma-separated, cut short so that the error stays one readable line."""
    names = [str(k) for k in known]
    text, shown = "", 0
    for name in names:
        piece = name if not text else f", {name}"
        if len(text) + len(piece) > _LIST_LIMIT:
            break
        text += piece
        shown += 1
    if shown < len(names):
        text += f", ... and {len(names) - shown} more"
    return text


def hint(word, known: Iterable[str]) -> str:
    """`; did you mean lr?` when a guess is close, else ` (known: a, b, ...)`: the tail of an error line."""
    known = list(known)
    guesses = close_matches(str(word), known)
    if guesses:
        return f"; did you mean {' or '.join(guesses)}?"
    return f" (known: {known_list(known)})"


def unknown(what: str, word, known: Iterable[str]) -> str:
    """`unknown axis; did you mean lr?` or `unknown axis (known: ...)`: the problem part of an error line."""
    return f"unknown {what}{hint(word, known)}"


def no_such_sweep(sweep, db, names: Iterable[str]) -> str:
    """`--sweep mnist1d-mpl: no such sweep in results.duckdb; did you mean mnist1d-mlp?`: one message everywhere."""
    names = list(names)
    tail = hint(sweep, names) if names else " (it holds no sweep yet: plan a grid first)"
    return f"--sweep {sweep}: no such sweep in {db}{tail}"


def no_such_column(option: str, name, known: Iterable[str]) -> str:
    """`--x widht: no such column; did you mean width?` (or the known names, cut to one line)."""
    return f"{option} {name}: no such column{hint(name, sorted(str(k) for k in known))}"


def nearest(value: float, known: Iterable[float], n: int = 2) -> list:
    """The `n` known values closest to `value` (ties: the smaller first), in increasing order."""
    ranked = sorted(set(known), key=lambda k: (abs(k - value), k))
    return sorted(ranked[:n])


def not_evaluated(epoch: int, evaluated: Iterable[int]) -> str:
    """`--epoch 200: not an evaluated epoch; nearest evaluated: 189, 208 (of 53, 0 to 500)`."""
    have = sorted({int(e) for e in evaluated})
    if not have:
        return f"--epoch {epoch}: no epoch has been evaluated yet"
    near = ", ".join(map(str, nearest(epoch, have)))
    return f"--epoch {epoch}: not an evaluated epoch; nearest evaluated: {near} (of {len(have)}, {have[0]} to {have[-1]})"
