"""Train a pack of jobs together, evaluating and checkpointing as it goes.

Read top to bottom: build the members (subset, noisy labels, init, data order),
evaluate at epoch 0, then for each epoch draw every member's own permutation and
take its batches by index from data resident on the device; evaluate on the
chosen epochs; checkpoint now and then. Every member has its own RNG streams, so
its numbers do not depend on which other jobs share its pack.

A step's batch may be taken in passes (micro-batches, or the blocks of a block penalty) whose
gradients sum to the batch's before one optimizer update (ddsweep.train.passes).
The knobs of ddsweep.train.knobs (flooding, gradient penalty, clipping), the lr
schedules of ddsweep.train.schedule and the ideal world (ddsweep.data.ideal: fresh
samples every step instead of the shuffled training set) each cost nothing when no
member of the pack uses them: one `if` per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ddsweep.data import dataset_identity, load_dataset
from ddsweep.data.augment import augmentation
from ddsweep.data.noise import noisy_labels, seeded_generator, training_subset, validation_split
from ddsweep.grid import EvalSpec, epoch_steps, pass_samples, train_recipe
from ddsweep.models import PackedModel, build_model, train_width
from ddsweep.models.speed import SpeedSettings
from ddsweep.train import checkpoint
from ddsweep.train.knobs import StepKnobs
from ddsweep.train.optim import build_optimizer
from ddsweep.train.passes import StepPasses
from ddsweep.train.schedule import Schedule, is_constant
from ddsweep.workers.events import Checkpointed, Event, Finished, JobStatus, Metrics, Progress, Timing, \
    WorkerWarning

EVAL_CHUNK = 8192  # samples per evaluation batch (per member)

Emit = Callable[[Event], None]


@dataclass
class Member:
    job_id: str
    config: dict
    labels: torch.Tensor  # [n] noisy training labels
    clean: torch.Tensor  # [n] true labels
    flipped: torch.Tensor  # [n] bool
    order_rng: torch.Generator
    alive: bool = True
    aug_rng: torch.Generator | None = None  # the member's augmentation draws (image datasets with augment)


def train_pack(jobs: list[dict], device: str = "cpu", emit: Emit = lambda e: None,
               should_stop: Callable[[], bool] = lambda: False, checkpoint_dir=None,
               checkpoint_every: float = 30.0, speed: SpeedSettings = SpeedSettings()) -> str:
    """Train `jobs` (dicts with job_id, config, epochs, horizons) as one pack.

    Events (ddsweep.workers.events) go to `emit`: Metrics, Progress, Finished (done or
    diverged), Checkpointed, Timing, WorkerWarning.
    `speed`: the GPU speed settings of conv models (same numbers either way).
    Returns "done" or "stopped" (should_stop() became true; a checkpoint was written).
    """
    cfg = jobs[0]["config"]
    t0 = time.perf_counter()
    data = load_dataset(cfg["dataset"]).to(device)
    n, batch = cfg["n_train"], cfg["train"]["batch_size"]
    epochs = max(j["epochs"] for j in jobs)
    horizons = sorted({h for j in jobs for h in j.get("horizons") or [j["epochs"]]})
    eval_epochs = set(EvalSpec(**cfg["eval"]).epochs(horizons))
    steps_per_epoch = epoch_steps(n, batch)

    # ---- members: their data, labels, init and RNG streams
    members, subsets = [], []
    for j in jobs:
        c = j["config"]
        idx, labels, flipped = training_set(c, data)
        members.append(Member(j["job_id"], c, labels.to(device), data.y_pool[idx.to(device)],
                              flipped.to(device), seeded_generator("order", c["seed"])))
        subsets.append(idx)
    K = len(members)
    augment = augmentation(cfg["dataset"])
    if augment is not None:
        for m in members:
            m.aug_rng = seeded_generator("augment", m.config["seed"])
    x_train = data.pool_rows(torch.stack(subsets), device)  # [K, n, d], resident on the device
    val_idx = validation_split(dataset_identity(cfg["dataset"]), len(data.y_pool)).to(device)  # (one per pack)
    held_out = (data.pool_rows(val_idx, device), data.y_pool[val_idx]) if len(val_idx) else None  # clean labels
    y_train = torch.stack([m.labels for m in members])  # [K, n]
    widths = {train_width(m.config, str(device)) for m in members}
    if len(widths) != 1:
        raise ValueError(f"a pack trains at one width; these jobs train at {sorted(widths)}")
    model = build_model(cfg, data.input_dim, data.num_classes, K, device, width=widths.pop(), text=data.text,
                        speed=speed)
    for k, m in enumerate(members):
        model.init_member(k, seeded_generator("init", m.config["seed"]), m.config["width"])
    recipes = [train_recipe(m.config) for m in members]  # each member's recipe, every knob filled in
    model.configure(recipes)  # per-member settings the model applies itself (label smoothing)
    opt = build_optimizer(cfg["train"]["optimizer"], model, recipes)
    loss_name = cfg["train"]["loss"]
    lr = [r["lr"] for r in recipes]
    theta0 = model.flat.clone()  # the init, for dist_from_init (checkpoints keep it)
    schedule = None if all(map(is_constant, recipes)) else Schedule(recipes, lr, steps_per_epoch, epochs, device)
    knobs = StepKnobs(recipes, device)  # flooding, gradient penalty, clipping: knobs.active if any member uses one
    passes = _step_passes(model, recipes, n, augment)  # a step's batch in micro-batches or penalty blocks
    ideal = _ideal_streams(members, recipes, data)  # member -> stream of fresh samples

    start_epoch, step, seconds_before = 0, 0, 0.0
    history: dict[str, list[dict]] = {m.job_id: [] for m in members}  # rows so far; checkpoints keep them
    if checkpoint_dir is not None:
        resumed = _resume(checkpoint_dir, members, model, opt, history, theta0, emit)
        if resumed is not None:
            start_epoch, step, seconds_before = resumed
            if any(history.values()):  # rows sent before the checkpoint may have been lost: resend (idempotent)
                emit(Metrics(rows=[r for rows in history.values() for r in rows]))

    def seconds() -> float:
        return seconds_before + time.perf_counter() - t0

    # The full-batch gradient norm costs one more pass over the training set per
    # evaluation (as much as the evaluation itself): measured only where a knob
    # acts on gradients (flood, penalty, clipping, LARS, full batch), else NULL.
    grad_chunk = model.eval_chunk if data.text is not None else EVAL_CHUNK  # text: sized to the logits
    measure_grad_norm = knobs.active or any(r["optimizer"] == "lars" or r["batch_size"] >= n for r in recipes)

    def emit_rows(epoch: int) -> None:
        rows = _evaluate(model, members, x_train, y_train, data, loss_name, held_out)
        probes = _probe(model, x_train, y_train, theta0, loss_name, with_grad=measure_grad_norm, chunk=grad_chunk)
        stats = knobs.epoch_stats()  # the evaluated epoch's flood and clip counts ({} before any step)
        lr_now = schedule.lr(max(step - 1, 0)) if schedule is not None else lr  # the lr of the epoch's last step
        out = []
        for k, (m, r) in enumerate(zip(members, rows)):
            if m.alive:
                g = _noise_scale(recipes[k], lr_now[k], n) if k not in ideal else None
                out.append({"job_id": m.job_id, "epoch": epoch, "step": step, "lr": lr_now[k],
                            "seconds": seconds(), **r, **probes[k], "noise_scale": g, **stats[k]})
                history[m.job_id].append(out[-1])
        emit(Metrics(rows=out))

    timing = {"setup_seconds": time.perf_counter() - t0, "train_seconds": 0.0, "eval_seconds": 0.0,
              "train_samples": 0}

    def evaluate(epoch: int) -> None:
        t = time.perf_counter()
        model.train(False)  # BatchNorm: evaluate with running statistics
        emit_rows(epoch)
        model.train(True)
        timing["eval_seconds"] += time.perf_counter() - t

    if start_epoch == 0:
        evaluate(0)
    last_ckpt = time.perf_counter()
    for epoch in range(start_epoch + 1, epochs + 1):
        t_epoch = time.perf_counter()
        order = torch.stack([torch.randperm(n, generator=m.order_rng) for m in members]).to(device)
        # each member's epoch, shuffled once; a batch is then a slice (no gather per step)
        x_epoch = _shuffled(x_train, order)
        if augment is not None:  # each member's crops and flips for this epoch, from its own stream
            codes = torch.stack([augment.draw(n, m.aug_rng) for m in members]).to(device)
        y_epoch = torch.take_along_dim(y_train, order, dim=1)
        for k, stream in ideal.items():  # the ideal world: the next n samples of the stream, never seen before
            x_epoch[k], y_epoch[k] = (t.to(device) for t in stream.take((epoch - 1) * n, n))
        lrs = schedule.epoch(epoch) if schedule is not None else None  # [steps, K, 1]: each step's lr
        knobs.start_epoch()
        for s in range(steps_per_epoch):
            xb = x_epoch[:, s * batch:(s + 1) * batch]  # [K, b, d]: each member's own batch
            yb = y_epoch[:, s * batch:(s + 1) * batch]
            cb = codes[:, s * batch:(s + 1) * batch] if augment is not None else None  # augmented per pass
            if lrs is not None:
                opt.lr = lrs[s]
            # model.grad <- each member's gradient of its mean loss over the whole batch (micro-batches
            # summed: one optimizer step per batch); the [K] losses and the penalty's Hessian-vector
            # term only where a knob needs them (else None)
            loss, hg = passes.gradient(xb, yb, cb, with_loss=knobs.active, penalty=knobs.penalty)
            if knobs.active:  # flood, penalise, clip: model.grad becomes each member's step direction
                knobs.apply(model, loss, hg, opt.lr)
            opt.step()
            step += 1
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()  # so the training-time budget below is honest
        timing["train_seconds"] += time.perf_counter() - t_epoch
        timing["train_samples"] += K * n

        for k in _newly_diverged(members, model):
            _freeze(model, opt, k, schedule)
            emit(Finished(job_id=members[k].job_id, status=JobStatus.DIVERGED,
                          error=f"non-finite weights (the training loss diverged) in epoch {epoch}"))
        if epoch in eval_epochs:
            evaluate(epoch)
        emit(Progress(epoch=epoch, epochs=epochs, step=step))
        if not any(m.alive for m in members):
            emit(Timing(**timing))
            return "done"
        stopping = should_stop()
        due = time.perf_counter() - last_ckpt >= checkpoint_every
        if checkpoint_dir is not None and (stopping or due) and epoch < epochs:
            checkpoint.save_pack(checkpoint_dir, members, model, opt, epoch, step, seconds(), history,
                                 extra={"theta0": theta0})
            emit(Checkpointed(job_ids=[m.job_id for m in members if m.alive], epoch=epoch))
            last_ckpt = time.perf_counter()
        if stopping and epoch < epochs:
            emit(Timing(**timing))
            return "stopped"

    emit(Timing(**timing))
    if checkpoint_dir is not None:  # the final state, saved before "done", lets a longer horizon continue it
        checkpoint.save_pack(checkpoint_dir, members, model, opt, epochs, step, seconds(), history,
                             extra={"theta0": theta0})
    for m in members:
        if m.alive:
            emit(Finished(job_id=m.job_id, status=JobStatus.DONE))
    return "done"


def _resume(checkpoint_dir, members, model, opt, history, theta0, emit):
    """Restore the pack from its members' checkpoints: (epoch, step, seconds), or None to start afresh.

    Checkpoints that do not fit the model (another width or parameter layout: written by
    another ddsweep version) are discarded with a warning; if only some members had such,
    the rest resume without them at the next attempt (this one fails, the job is retried)."""
    try:
        return checkpoint.load_pack(checkpoint_dir, members, model, opt, history, extra={"theta0": theta0})
    except checkpoint.CheckpointMismatch as e:
        for job_id, reason in e.bad.items():
            checkpoint.discard(checkpoint_dir, job_id)
            emit(WorkerWarning(message=f"job {job_id}: {reason}; restarting it from scratch"))
        if len(e.bad) < len(members):
            raise
        return None  # (load_pack raised before restoring anything)


def training_set(config: dict, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pool indices, noisy labels, flipped mask) of a job: depends on dataset, n_train, p, seed only."""
    dataset = dataset_identity(config["dataset"])  # e.g. a vision set's root or augmentation: no effect
    idx = training_subset(dataset, len(data.y_pool), config["n_train"], config["seed"])
    labels, flipped = noisy_labels(dataset, data.y_pool, idx, config["label_noise"], config["seed"],
                                   data.num_classes)
    return idx, labels, flipped


def _shuffled(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x [K, n, ...] with each member's samples in its own order [K, n].

    One row gather over the flattened pack: take_along_dim would broadcast the
    index to x's full shape first, about 15x slower on a CPU for MNIST-1D rows.
    """
    K, n = order.shape
    rows = (order + torch.arange(K, device=order.device).view(K, 1) * n).view(-1)
    return x.reshape(K * n, -1).index_select(0, rows).view(x.shape)


def _loss(logits: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """Per-member mean loss: logits [K, b, C], y [K, b] -> [K]."""
    K, b, C = logits.shape
    if name == "mse":
        target = F.one_hot(y, C).to(logits.dtype)
        return ((logits - target) ** 2).mean(dim=(1, 2))
    return F.cross_entropy(logits.reshape(K * b, C), y.reshape(K * b), reduction="none").view(K, b).mean(1)


@torch.no_grad()
def _evaluate(model: PackedModel, members, x_train, y_train, data, loss_name, held_out=None) -> list[dict]:
    """Full passes over each member's training set, the shared test set and, with `held_out`
    (inputs, clean labels), the shared validation split (val_loss, val_error)."""
    K = len(members)
    train_tokens = model.token_metrics(x_train)  # text: per-token cross-entropy (no smoothing), token error
    if train_tokens is not None:
        return _token_rows(train_tokens, model.token_metrics(data.x_test.expand(K, *data.x_test.shape)))
    clean = torch.stack([m.clean for m in members])
    flipped = torch.stack([m.flipped for m in members])

    chunk = model.eval_chunk  # conv models size it to their activations

    def run(x, y):  # x [K, N, d], y [K, N] -> mean loss [K], predictions [K, N], soft error [K]
        loss_sum = torch.zeros(K, device=x.device)
        prob_sum = torch.zeros(K, device=x.device)
        preds = []
        for i in range(0, x.shape[1], chunk):
            logits = model(x[:, i:i + chunk])
            yc = y[:, i:i + chunk]
            loss_sum += _loss(logits, yc, loss_name) * logits.shape[1]
            prob_sum += true_class_probability(logits, yc).sum(1)
            preds.append(logits.argmax(-1))
        return loss_sum / x.shape[1], torch.cat(preds, 1), 1 - prob_sum / x.shape[1]

    train_loss, train_pred, train_soft = run(x_train, y_train)
    x_test = data.x_test.expand(K, *data.x_test.shape)
    y_test = data.y_test.expand(K, -1)
    test_loss, test_pred, test_soft = run(x_test, y_test)
    n_flipped = flipped.sum(1)
    val = []
    if held_out is not None:
        x_val, y_val = held_out[0].expand(K, *held_out[0].shape), held_out[1].expand(K, -1)
        val_loss, val_pred, _ = run(x_val, y_val)
        val = [val_loss, (val_pred != y_val).float().mean(1)]
    stats = torch.stack([
        train_loss,
        (train_pred != y_train).float().mean(1),
        (train_pred != clean).float().mean(1),
        ((train_pred == y_train) & flipped).sum(1) / n_flipped.clamp(min=1),
        test_loss,
        (test_pred != y_test).float().mean(1),
        train_soft.clamp(0, 1),  # (rounding could put a sum of probabilities a hair past 1)
        test_soft.clamp(0, 1),
        *val,
    ], 1).tolist()  # one device sync per evaluation
    keys = ("train_loss", "train_error", "train_error_clean", "noisy_fit", "test_loss", "test_error",
            "train_soft_error", "test_soft_error")
    keys += ("val_loss", "val_error") if val else ()
    rows = [dict(zip(keys, s)) for s in stats]
    for r, nf in zip(rows, n_flipped.tolist()):
        if nf == 0:
            r["noisy_fit"] = None  # no noisy labels: memorization is undefined
    return rows


def _token_rows(train: torch.Tensor, test: torch.Tensor) -> list[dict]:
    """Rows of a text model from its token sums [K, 3] on each set: train and test loss are the mean
    over all target tokens of the cross-entropy without label smoothing, the errors the share of
    tokens predicted wrongly (teacher-forced). Text has no label noise: train_error_clean is
    train_error, noisy_fit null."""
    stats = torch.cat([train, test], 1).tolist()
    rows = []
    for tr_loss, tr_wrong, tr_n, te_loss, te_wrong, te_n in stats:
        train_error = tr_wrong / max(tr_n, 1)
        rows.append({"train_loss": tr_loss / max(tr_n, 1), "train_error": train_error,
                     "train_error_clean": train_error, "noisy_fit": None,
                     "test_loss": te_loss / max(te_n, 1), "test_error": te_wrong / max(te_n, 1)})
    return rows


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[y] per sample: logits [K, b, C], y [K, b] -> [K, b] (float32 whatever the logits'
    precision). 1 - its mean is the soft error of the Deep Bootstrap (Nakkiran, Neyshabur, Sedghi 2021):
    on the noisy training labels for train_soft_error, on the clean test labels for test_soft_error;
    the softmax of the outputs also for a model trained with the MSE loss."""
    return torch.softmax(logits.float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _newly_diverged(members, model: PackedModel) -> list[int]:
    """Members whose weights became non-finite this epoch. (A non-finite loss makes a
    non-finite gradient, and the step after it non-finite weights: one check per epoch
    instead of the loss at every step.)"""
    finite = torch.isfinite(model.flat).all(dim=1).tolist()
    out = []
    for k, (m, ok) in enumerate(zip(members, finite)):
        if m.alive and not ok:
            m.alive = False
            out.append(k)
    return out


@torch.no_grad()
def _freeze(model: PackedModel, opt, k: int, schedule=None) -> None:
    """Park a diverged member: zero weights and lr, so its NaNs cost nothing more."""
    model.flat[k].zero_()
    model.reset_stats(k)  # BatchNorm running statistics may hold the divergence's NaNs
    opt.lr[k] = 0.0
    if schedule is not None:
        schedule.base[k] = 0.0


def _step_passes(model: PackedModel, recipes: list[dict], n: int, augment) -> StepPasses:
    """How the pack takes a step's batch: in passes of pass_samples (its micro-batch or penalty block),
    one setting for the whole pack (the pack key holds both)."""
    sizes = {(pass_samples(r, n), bool(r.get("penalty_block"))) for r in recipes}
    if len(sizes) != 1:
        raise ValueError(f"a pack takes its batches in one way; these jobs want passes of {sorted(sizes)}")
    samples, blocks = sizes.pop()
    return StepPasses(model, recipes[0]["loss"], samples, blocks, augment)


def _ideal_streams(members, recipes, data) -> dict:
    """member index -> its stream of fresh samples, for members in the ideal world."""
    if not any(r["world"] == "ideal" for r in recipes):
        return {}
    from ddsweep.data.ideal import ideal_stream

    return {k: ideal_stream(m.config, data) for k, (m, r) in enumerate(zip(members, recipes)) if r["world"] == "ideal"}


def _noise_scale(recipe: dict, lr: float, n: int) -> float | None:
    """Smith & Le's SGD noise scale g = lr (N/B - 1) / (1 - momentum); None for other optimizers."""
    if recipe["optimizer"] != "sgd":
        return None
    return lr * (n / min(recipe["batch_size"], n) - 1) / (1 - recipe["momentum"])


def _probe(model: PackedModel, x_train, y_train, theta0, loss_name, with_grad: bool = True,
           chunk: int = EVAL_CHUNK) -> list[dict]:
    """Per member: the full-batch gradient norm on its training set, ||theta - theta0||, ||theta||.

    The gradient takes one forward/backward over the training set (in chunks) and
    overwrites model.grad, which every step writes afresh. Models with BatchNorm
    (has_running_stats) get no grad_norm: a forward in train mode would move their
    running statistics, and in eval mode it is another function than the one trained.
    """
    K, N = y_train.shape
    with torch.no_grad():
        norms = torch.stack([(model.flat - theta0).norm(dim=1), model.flat.norm(dim=1)], 1)
    if model.has_running_stats or not with_grad:
        return [{"grad_norm": None, "dist_from_init": d, "weight_norm": w} for d, w in norms.tolist()]
    full = torch.zeros_like(model.grad)
    for i in range(0, N, chunk):
        xb, yb = x_train[:, i:i + chunk], y_train[:, i:i + chunk]
        model.loss_and_grad(xb, yb, loss_name)
        full.add_(model.grad, alpha=yb.shape[1] / N)
    stats = torch.cat([full.norm(dim=1, keepdim=True), norms], 1)
    keys = ("grad_norm", "dist_from_init", "weight_norm")
    return [dict(zip(keys, s)) for s in stats.tolist()]
