"""Per-job checkpoints: each member of a pack saves its own slice, atomically.

A checkpoint holds the member's weights, optimizer state, data-order RNG state and
position (epoch, step, seconds); for models with running statistics (BatchNorm) their
row of `model.buffers`, and for augmented data the member's augmentation RNG state;
and any `extra` per-member rows the loop keeps (its initial weights theta_0). Saving per job, not per pack, lets a resumed job
join any pack of jobs at the same epoch; the coordinator groups them so.
Files are written to a temporary name and renamed, so a kill at any moment leaves
either the old or the new checkpoint, never a torn one. Each file starts with a magic
and the SHA-256 of the rest (torch.save's bytes), checked on every read: a checkpoint
whose bytes changed on disk (bit rot, a bad copy, a stray write) is refused, and the job
restarts from scratch rather than from corrupt weights. (A file without the magic was
written by a ddsweep from before checksums: torch's own zip format, read unverified.)
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import torch

from ddsweep.models.protocol import PackedModel


MAGIC = b"DDSCKPT1"  # then 32 bytes of SHA-256 over the payload, then the payload (torch.save's bytes)
_HEADER = len(MAGIC) + 32


def encode(state: dict) -> bytes:
    """A checkpoint file's bytes: magic, SHA-256 of the payload, payload."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    return MAGIC + hashlib.sha256(payload).digest() + bytes(payload)


def decode(data: bytes) -> dict:
    """The state in a checkpoint file's bytes; ValueError when the checksum does not match."""
    if data[:len(MAGIC)] == MAGIC:
        digest, payload = data[len(MAGIC):_HEADER], memoryview(data)[_HEADER:]
        if len(digest) < 32 or hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch: the file's contents changed after it was written")
        return torch.load(io.BytesIO(payload), weights_only=False, map_location="cpu")
    return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")  # before checksums


class CheckpointMismatch(Exception):
    """Some members of a pack have no usable checkpoint at the pack's epoch."""

    def __init__(self, bad: dict[str, str]):
        self.bad = bad  # job_id -> reason
        super().__init__(", ".join(f"{j}: {r}" for j, r in bad.items()))


def path_for(checkpoint_dir, job_id: str) -> Path:
    return Path(checkpoint_dir) / f"{job_id}.pt"


def save_pack(checkpoint_dir, members, model: PackedModel, opt, epoch: int, step: int, seconds: float,
              rows: dict[str, list[dict]] | None = None, extra: dict | None = None) -> None:
    """Checkpoint every live member; `rows` (job_id -> metric rows so far) are kept with it.

    The rows ride along because a checkpoint must never be ahead of what was
    recorded: rows sent to a coordinator that died before journaling them would
    otherwise be skipped by the resumed run. A resumed run sends them again.
    """
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    buffers = model.buffers  # [K, Q] running statistics (conv models), or None
    buffers = buffers.cpu() if buffers is not None else None
    for k, m in enumerate(members):
        if not m.alive:
            continue
        state = {
            "job_id": m.job_id,
            "epoch": epoch,
            "step": step,
            "seconds": seconds,
            "params": model.flat[k].cpu().clone(),
            "layout": model.LAYOUT,  # how `params` is laid out (see load_pack)
            # per-member optimizer state is row k of each [K, P] tensor; scalars (Adam's step) are shared
            "opt": {name: (v[k].cpu().clone() if v.dim() else v.clone()) for name, v in opt.state.items()},
            "order_rng": m.order_rng.get_state(),
            "rows": list((rows or {}).get(m.job_id, ())),
            "extra": {name: v[k].cpu().clone() for name, v in (extra or {}).items()},  # row k of each [K, ...]
        }
        if buffers is not None:
            state["buffers"] = buffers[k].clone()
        if getattr(m, "aug_rng", None) is not None:
            state["aug_rng"] = m.aug_rng.get_state()
        path = path_for(checkpoint_dir, m.job_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(encode(state))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a full disk: leave no half-written file behind)
            raise


def read(checkpoint_dir, job_id: str) -> dict | None:
    """The job's checkpoint, None if there is none; raises ValueError if it is unreadable."""
    path = path_for(checkpoint_dir, job_id)
    if not path.exists():
        return None
    try:
        state = decode(path.read_bytes())
        if state.get("job_id") != job_id:
            raise ValueError("checkpoint belongs to another job")
        return state
    except Exception as e:  # truncated, corrupt or foreign file
        raise ValueError(f"unreadable checkpoint {path} ({type(e).__name__}: {e})") from None


@torch.no_grad()
def load_pack(checkpoint_dir, members, model: PackedModel, opt, rows: dict[str, list[dict]] | None = None,
              extra: dict | None = None):
    """Restore every member; (epoch, step, seconds), or None when no member has a checkpoint.

    With `rows`, each member's saved metric rows are put in rows[job_id]; with `extra`
    (name -> [K, ...] tensor), row k of each is restored where the checkpoint has it.
    """
    states, bad = [], {}
    for m in members:
        try:
            states.append(read(checkpoint_dir, m.job_id))
        except ValueError as e:
            states.append(None)
            bad[m.job_id] = str(e)
    if all(s is None for s in states) and not bad:
        return None
    epochs = {s["epoch"] for s in states if s is not None}
    target = max(epochs) if epochs else 0
    for m, s in zip(members, states):
        if m.job_id not in bad and (s is None or s["epoch"] != target):
            bad[m.job_id] = "no checkpoint" if s is None else f"checkpoint at epoch {s['epoch']}, pack at {target}"
    buffers = model.buffers
    layout = model.LAYOUT
    for k, (m, s) in enumerate(zip(members, states)):
        if m.job_id not in bad and s is not None:
            if s["params"].shape != model.flat[k].shape:
                have, want = tuple(s["params"].shape), tuple(model.flat[k].shape)
                bad[m.job_id] = f"checkpoint has {have} parameters, the model {want}"
            elif layout is not None and s.get("layout", 1) != layout:  # (written before layouts were recorded: 1)
                bad[m.job_id] = f"checkpoint's parameters are in layout {s.get('layout', 1)}, this ddsweep's in {layout}"
            elif buffers is not None and "buffers" not in s:
                bad[m.job_id] = "checkpoint has no running statistics"
            elif getattr(m, "aug_rng", None) is not None and "aug_rng" not in s:
                bad[m.job_id] = "checkpoint has no augmentation state"
    if bad:
        raise CheckpointMismatch(bad)
    for k, (m, s) in enumerate(zip(members, states)):
        model.flat[k].copy_(s["params"])
        for name, v in opt.state.items():
            if v.dim():
                v[k].copy_(s["opt"][name])
            else:
                v.copy_(s["opt"][name])
        m.order_rng.set_state(s["order_rng"])
        for name, v in (extra or {}).items():
            if name in s.get("extra", {}):
                v[k].copy_(s["extra"][name])
        if buffers is not None:
            buffers[k].copy_(s["buffers"])
        if getattr(m, "aug_rng", None) is not None:
            m.aug_rng.set_state(s["aug_rng"])
        if rows is not None:
            rows[m.job_id] = list(s.get("rows", ()))
    if buffers is not None:
        model.buffers = buffers  # `buffers` is a copy: hand the restored rows back
    return target, states[0]["step"], states[0]["seconds"]


def discard(checkpoint_dir, job_id: str, reason: str = "") -> None:
    """Delete a job's checkpoint (it then restarts from scratch), warning why."""
    path = path_for(checkpoint_dir, job_id)
    if path.exists():
        if reason:
            warnings.warn(f"job {job_id}: {reason}; restarting it from scratch", stacklevel=2)
        path.unlink()

