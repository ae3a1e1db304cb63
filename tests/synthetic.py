"""Synthetic metric tables with known answers, shaped like `ddsweep.load_metrics()`."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def table(cells: dict, epochs=(0, 10, 100), seeds=(0,), noise=None, **fixed) -> pd.DataFrame:
    """One row per (cell, seed, epoch).

    cells: {(width, n_train, label_noise): fn(epoch) -> (test_error, train_error)}
    noise: fn(width, n_train, label_noise, seed, epoch) -> (d_test, d_train) added per seed
    """
    rows = []
    for (w, n, p), fn in cells.items():
        for s, e in itertools.product(seeds, epochs):
            te, tr = fn(e)
            if noise is not None:
                dte, dtr = noise(w, n, p, s, e)
                te, tr = te + dte, tr + dtr
            rows.append({"job_id": f"w{w}-n{n}-p{p}-s{s}", "width": w, "n_train": n, "label_noise": p, "seed": s,
                         "epoch": e, "test_error": te, "train_error": tr, **fixed})
    return pd.DataFrame(rows)


def model_wise(test_final, train_final, widths, n=1000, p=0.2, seeds=(0,), noise=None, test_early=None):
    """A model-wise sweep: final (epoch 100) errors per width as given; epoch 10 holds `test_early`
    (default: final + 0.05, so the early-stopped curve equals the final one) and epoch 0 0.9."""
    cells = {}
    for i, w in enumerate(widths):
        te, tr = test_final[i], train_final[i]
        early = test_early[i] if test_early is not None else te + 0.05

        def fn(e, te=te, tr=tr, early=early):
            return {0: (0.9, 0.9), 10: (early, min(0.9, tr + 0.2)), 100: (te, tr)}[e]

        cells[(w, n, p)] = fn
    return table(cells, seeds=seeds, noise=noise)


def grid_frame(widths, n_epochs: int, n_values=(1000,), noises=(0.2,), seeds=(0,)) -> pd.DataFrame:
    """A smooth double-descent-like map, vectorised (64 widths x 4000 epochs in a blink)."""
    widths = np.asarray(widths)
    epochs = np.arange(0, n_epochs + 1)
    W, N, P, S, E = (a.ravel() for a in np.meshgrid(widths, n_values, noises, seeds, epochs, indexing="ij"))
    cap = W * 40.0 / N  # capacity relative to n
    t = np.log1p(E) / np.log1p(n_epochs)
    train = np.clip(P * (1 - np.tanh(cap * t * 3)) + 0.5 * np.exp(-E / 4), 0, 1)
    test = np.clip(0.2 + P * np.exp(-((np.log(cap * (t + 0.05)) - 0.2) ** 2)) + 0.4 * np.exp(-E / 20), 0, 1)
    test = test + 0.01 * np.sin(S + E)
    ids = (pd.Series(W).astype(str) + "-" + pd.Series(N).astype(str) + "-" + pd.Series(P).astype(str) + "-"
           + pd.Series(S).astype(str))
    return pd.DataFrame({"job_id": ids, "width": W, "n_train": N, "label_noise": P, "seed": S, "epoch": E,
                         "test_error": test, "train_error": train})
