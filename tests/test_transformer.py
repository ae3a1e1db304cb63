"""The packed Transformer and translation data: against torch.nn.Transformer, pack == alone, through the CLI."""

from __future__ import annotations

import copy
import hashlib
import random
from pathlib import Path

import duckdb
import pytest
import torch
import torch.nn.functional as F

from ddsweep.data.noise import seeded_generator
from ddsweep.data.translation import BOS, EOS, PAD, load_translation
from ddsweep.data.writers import write_translation
from ddsweep.grid import expand, parse_grid
from ddsweep.models.reference import TransformerReference
from ddsweep.models.transformer import PackedTransformer
from ddsweep.models.transformer_arch import transformer
from ddsweep.train.loop import train_pack
from ddsweep.workers.events import Metrics
from tests.conftest import write_grid


def pairs(n: int, seed: int, words: int = 12) -> list[tuple[str, str]]:
    """Toy sentence pairs: the target is the source reversed, each word upper-cased."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [f"w{rng.randrange(words)}" for _ in range(rng.randint(1, 7))]
        out.append((" ".join(src), " ".join(w.upper() for w in reversed(src))))
    return out


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_translation(tmp_path / "iwslt", {"train": pairs(120, 0), "valid": pairs(10, 1),
                                                  "test": pairs(40, 2)})


def grid_dict(root: Path, **train) -> dict:
    return {
        "name": "tfm",
        "dataset": {"name": "translation", "root": str(root), "src": "de", "tgt": "en"},
        "model": {"name": "transformer", "layers": 1, "heads": 2},
        "train": {"optimizer": "adam", "lr": 3.0e-3, "batch_size": 16, "steps": 24, "schedule": "inverse_sqrt",
                  "inv_sqrt_steps": 8, "warmup": 8, "label_smoothing": 0.1, **train},
        "eval": {"every": 1},
        "grid": {"width": [8, 16], "n_train": [60], "seed": [0]},
    }


def batch(B: int = 5, S: int = 7, T: int = 8, vs: int = 11, vt: int = 13, seed: int = 0) -> torch.Tensor:
    """Rows [source | target] of random lengths, laid out as ddsweep.data.translation writes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((B, S + T), PAD, dtype=torch.int32)
    for i in range(B):
        ls = int(torch.randint(1, S, (1,), generator=g))
        lt = int(torch.randint(1, T - 1, (1,), generator=g))
        x[i, :ls] = torch.randint(4, vs, (ls,), generator=g, dtype=torch.int32)
        x[i, ls] = EOS
        x[i, S] = BOS
        x[i, S + 1:S + 1 + lt] = torch.randint(4, vt, (lt,), generator=g, dtype=torch.int32)
        x[i, S + 1 + lt] = EOS
    return x


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("embeddings", ["tied", "separate"])
def test_member_equals_torch_nn_transformer(norm, embeddings):
    """Parameter count, logits, loss with label smoothing and gradient of each member against a plain
    model built from nn.TransformerEncoderLayer / nn.TransformerDecoderLayer holding its weights."""
    arch = transformer(16, 11, 13, layers=2, heads=4, ffn_ratio=3, norm=norm, embeddings=embeddings)
    refs = [TransformerReference(16, 11, 13, 2, 4, 3, norm, embeddings) for _ in range(3)]
    assert arch.size == sum(p.numel() for p in refs[0].parameters())
    m = PackedTransformer(3, arch, 7, 8)
    m.configure([{"label_smoothing": eps} for eps in (0.0, 0.1, 0.3)])
    for k in range(3):
        m.init_member(k, seeded_generator("init", k))
    x = torch.stack([batch(seed=k) for k in range(3)])
    per_member = m.loss_and_grad(x)
    src, tgt_in, tgt_out = m.split(x)
    for k, (ref, eps) in enumerate(zip(refs, (0.0, 0.1, 0.3))):
        W = m._weights(m.flat)
        ref.load_state_dict({name: W[name][k] for name in W})
        logits = ref(src[k].long(), tgt_in[k].long())
        torch.testing.assert_close(m(x)[k], logits.detach(), rtol=1e-5, atol=1e-5)
        loss = F.cross_entropy(logits.reshape(-1, 13), tgt_out[k].reshape(-1).long(), ignore_index=PAD,
                               label_smoothing=eps)
        loss.backward()
        torch.testing.assert_close(per_member[k], loss.detach(), rtol=1e-5, atol=1e-6)
        grads = m._weights(m.grad)
        for name, p in ref.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_nn_transformer_parameter_count_at_paper_scale():
    """fairseq's IWSLT shape (6+6 layers, d_model 512, 4 heads, ffn 1024, tied decoder embedding)
    counts the same as nn.Transformer's layers around two embeddings."""
    arch = transformer(512, 8848, 6632, layers=6, heads=4, ffn_ratio=2)
    ref = TransformerReference(512, 8848, 6632, 6, 4, 2)
    assert arch.size == sum(p.numel() for p in ref.parameters())
    # nn.Transformer itself (its post-norm stacks carry a final LayerNorm each) plus the two embeddings
    plain = torch.nn.Transformer(512, 4, 6, 6, 1024, dropout=0.0)
    extra = 2 * 2 * 512  # nn.Transformer's encoder.norm and decoder.norm, which post-norm does without
    assert arch.size == sum(p.numel() for p in plain.parameters()) - extra + (8848 + 6632) * 512


def test_padding_cut_changes_nothing():
    """A sentence's logits do not depend on how long its batch-mates are (masks, not truncation)."""
    arch = transformer(8, 11, 13, layers=1, heads=2)
    m = PackedTransformer(1, arch, 7, 8)
    m.init_member(0, seeded_generator("init", 0))
    x = batch(B=6, seed=3).unsqueeze(0)
    alone = m(x[:, :1])
    together = m(x)[:, :1, :alone.shape[2]]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def _train(jobs) -> dict:
    events = []
    train_pack([{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": j.horizons}
                for j in jobs], emit=events.append)
    return {(r["job_id"], r["epoch"]): r for e in events if isinstance(e, Metrics) for r in e.rows}


def test_pack_member_equals_the_job_alone(corpus):
    """Three jobs of one width (their own seeds, subsets, label smoothing) as one pack, and each alone."""
    g = grid_dict(corpus, steps=12)
    g["grid"] = {"width": [8], "n_train": [60], "seed": [0, 1], "label_smoothing": [0.0, 0.2]}
    jobs = expand(parse_grid(g))
    assert len(jobs) == 4 and len({j.config["train"].get("label_smoothing") for j in jobs}) == 2
    packed = _train(jobs)
    alone = {}
    for j in jobs:
        alone.update(_train([j]))
    assert packed.keys() == alone.keys() and len(packed) == 4 * 4  # 60 / 16 -> 4 steps per epoch: epochs 0..3
    for key, row in packed.items():
        for col in ("train_loss", "train_error", "test_loss", "test_error", "weight_norm"):
            assert row[col] == pytest.approx(alone[key][col], rel=1e-5, abs=1e-7), (key, col)
    first = {r["test_loss"] for (j, e), r in packed.items() if e == 0}
    last = {r["test_loss"] for (j, e), r in packed.items() if e == max(e for _, e in packed)}
    assert len(first) == 2 and min(first) > max(last)  # two seeds start apart; every job learns


def test_vocabulary_from_files_and_from_fairseq_dicts(corpus):
    data = load_translation({"name": "translation", "root": str(corpus), "src": "de", "tgt": "en"})
    assert data.text.src_vocab == 4 + 12 and data.text.tgt_vocab == 4 + 12  # specials + the 12 words
    assert data.x_pool.shape == (120, data.text.src_len + data.text.tgt_len)
    row = data.x_pool[0]
    assert (row[data.text.src_len] == BOS) and (row == EOS).sum() == 2
    # a dictionary in fairseq's format sets the order (and the unknown words become <unk>)
    (corpus / "dict.en.txt").write_text("W3 100\nW1 50\n#fairseq:overwrite 1\n")
    with_dict = load_translation({"name": "translation", "root": str(corpus), "src": "de", "tgt": "en"})
    assert with_dict.text.tgt_vocab == 4 + 3
    targets = with_dict.x_pool[:, with_dict.text.src_len:]
    assert set(targets.unique().tolist()) <= {0, 1, 2, 3, 4, 5, 6}


def test_translation_trains_through_the_cli(tmp_path, corpus, cli):
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", grid_dict(corpus)), "--db", db)
    assert r.exit_code == 0, r.output
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0 and "done 2, failed 0" in r.output, r.output
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select width, depth, epoch, step, train_loss, test_loss, train_error, test_error, "
                           "train_error_clean, noisy_fit from metrics join jobs using (job_id) "
                           "order by width, epoch").fetchall()
    finally:
        con.close()
    assert len(rows) == 2 * 7 and {r[1] for r in rows} == {1}  # epochs 0..6 (24 steps at 4 per epoch)
    for width in (8, 16):
        curve = [r for r in rows if r[0] == width]
        assert curve[-1][3] == 24
        assert curve[-1][4] < curve[0][4] - 0.3 and curve[-1][5] < curve[0][5]  # it learns
        assert all(0 <= r[6] <= 1 and 0 <= r[7] <= 1 and r[8] == r[6] and r[9] is None for r in curve)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("damage, expect", [
    (lambda root: (root / "test.en").unlink(), "test.en is missing"),
    (lambda root: (root / "train.en").write_text("a\nb\n"), "train.de has 120 lines but train.en has 2"),
    (lambda root: (root / "valid.de").unlink(), "valid.de is missing"),
    (lambda root: (root / "dict.de.txt").write_text("w1\n"), "dict.de.txt: line 1 is not 'token count'"),
])
def test_bad_files_are_one_line_at_plan_time(tmp_path, corpus, cli, damage, expect):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    ok = tmp_path / "ok.yaml"
    assert cli("plan", write_grid(ok, grid_dict(corpus)), "--db", db_dir / "r.duckdb").exit_code == 0
    before = _tree_digest(db_dir)
    bad = copy.deepcopy(grid_dict(corpus))
    bad["name"] = "other"
    damage(corpus)
    r = cli("plan", write_grid(tmp_path / "bad.yaml", bad), "--db", db_dir / "r.duckdb")
    assert r.exit_code == 2, r.output
    assert expect in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert _tree_digest(db_dir) == before


@pytest.mark.parametrize("change, expect", [
    ({"grid": {"width": [8, 12], "n_train": [60]}, "model": {"name": "transformer", "heads": 8}},
     "model.heads = 8: does not divide d_model = width 12"),
    ({"grid": {"width": [8], "n_train": [60], "label_noise": [0.1]}}, "label noise is not defined for text"),
    ({"model": {"name": "mlp"}}, "is text: it needs model: transformer"),
    ({"model": {"name": "transformer", "depth": 3}}, "the transformer's depth is `layers`"),
    ({"train": {"loss": "mse"}}, "token cross-entropy"),
])
def test_bad_text_grids(tmp_path, corpus, cli, change, expect):
    g = grid_dict(corpus)
    for key, value in change.items():
        g[key] = {**g[key], **value} if key == "train" else value
    r = cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", tmp_path / "r.duckdb")
    assert r.exit_code == 2 and expect in r.output, r.output
    assert not (tmp_path / "r.duckdb").exists()


def test_transformer_options_are_refused_elsewhere(tmp_path, cli):
    from tests.conftest import TINY

    for model, expect in (({"name": "mlp", "heads": 2}, "model.heads: applies to model: transformer only"),):
        g = {**copy.deepcopy(TINY), "model": model}
        r = cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", tmp_path / "r.duckdb")
        assert r.exit_code == 2 and expect in r.output, r.output
    g = copy.deepcopy(TINY)
    g["train"]["label_smoothing"] = 0.1
    r = cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", tmp_path / "r.duckdb")
    assert r.exit_code == 2 and "label_smoothing = 0.1: applies to model: transformer only" in r.output, r.output

