"""`python -m ddsweep.bench --store`: the results database at paper scale.

Builds a sweep of synthetic but realistic runs (default 5,000 jobs x 4,001 evaluated
epochs = 20M metric rows: widths x n_train x 2 noise levels x 5 seeds) through the
coordinator's write path (events appended and fsynced to a Journal, flushed in batches
by `store.jobs.apply_events` under the write lock), then times the read commands, each
in a fresh child process that reports its wall time and peak memory (max RSS):
status, summary, emc, plot heatmap --x width --y epoch, plot curve --x width,
load_metrics(where=...) and export --format parquet.

The same commands through the read path before ddsweep.store.results (every row
through SQLAlchemy as Python tuples, then the analysis on the whole frame) are timed
in the same run on a smaller database (`--old-rows`, default 1M rows: the old path
needs about 5 GB per million rows), next to the new path on that same database.
`--rows N` builds a smaller database (the test suite runs it tiny).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from ddsweep.workers.events import Finished, JobStatus, Metrics, Progress

TARGETS = {"ingest_rows_per_s": 100_000, "status": (1.0, None), "summary": (3.0, 1024), "heatmap": (3.0, 1024),
           "load_where": (2.0, None)}
NOISES = (0.1, 0.2)
SEEDS = 5
N_VALUES = (500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000)


def shape(rows: int) -> tuple[int, int, int]:
    """(widths, n values, evaluated epochs) for about `rows` metric rows: 5,000 jobs x 4,001 epochs at 20M."""
    jobs = min(5000, max(300, rows // 4000 // 100 * 100))
    n_values = 10 if jobs >= 1000 else 3
    widths = max(3, jobs // (n_values * len(NOISES) * SEEDS))
    jobs = widths * n_values * len(NOISES) * SEEDS
    return widths, n_values, max(2, rows // jobs)


def grid(widths: int, n_values: int, epochs: int) -> dict:
    return {
        "name": "scale", "dataset": {"name": "mnist1d", "pool": 8000, "test": 4000},
        "model": {"name": "mlp", "depth": 2},
        "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 100, "epochs": epochs - 1},
        "eval": {"every": 1},
        "grid": {"width": {"geom": [8, 8 * 256, widths]},  # (from 8: distinct after rounding, up to 50 widths)
                 "n_train": [n // 32 for n in N_VALUES[:n_values]],
                 "label_noise": list(NOISES), "seed": list(range(SEEDS))},
    }


def _curves(width: int, n: int, p: float, seed: int, epochs: int, rng) -> dict[str, np.ndarray]:
    """Double-descent-like train/test curves of one run (the shape of tests/synthetic.grid_frame), with noise."""
    e = np.arange(epochs, dtype=float)
    cap = width * 40.0 / n
    t = np.log1p(e) / np.log1p(epochs - 1)
    train = np.clip(p * (1 - np.tanh(cap * t * 3)) + 0.5 * np.exp(-e / 4) + rng.normal(0, 0.003, epochs), 0, 1)
    test = np.clip(0.2 + p * np.exp(-((np.log(cap * (t + 0.05)) - 0.2) ** 2)) + 0.4 * np.exp(-e / 20)
                   + rng.normal(0, 0.01, epochs), 0, 1)
    return {"train_error": train, "test_error": test, "train_loss": -np.log1p(-0.9 * train),
            "test_loss": -np.log1p(-0.9 * test), "train_error_clean": np.clip(train - p / 2, 0, 1),
            "noisy_fit": np.clip(1 - train / max(p, 1e-9), 0, 1), "dist_from_init": np.sqrt(e + 1) * 0.3,
            "weight_norm": 10 + np.sqrt(e + 1) * 0.1}


def ingest(db: Path, spec: dict, drain_rows: int, flush_rows: int, arm: str = "new") -> dict:
    """Plan the grid, then stream every job's rows through Journal + apply_events as the coordinator does
    (arm "old": the journal encoding, metrics key and metrics insert of before, ddsweep.bench.old_writes)."""
    from ddsweep.api import plan
    from ddsweep.bench.old_writes import OldJournal, old_apply_events, old_schema
    from ddsweep.store import Store
    from ddsweep.store.jobs import apply_events
    from ddsweep.workers.journal import Journal

    if arm == "old":
        Journal, apply_events = OldJournal, old_apply_events  # noqa: N806

    path = db.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    jobs = plan(path, db).jobs
    epochs = spec["train"]["epochs"] + 1
    store, owner = Store(db), "bench:store"
    if arm == "old":
        with store.write() as conn:
            old_schema(conn)
    journal = Journal(db.with_name(db.name + ".journal"), owner)
    rng = np.random.default_rng(0)
    drained, buffer, timed, rows_in = [], [], 0.0, 0
    split = {"journal": 0.0, "flush": 0.0}
    steps_per_epoch = 10

    def flush():
        nonlocal timed, buffer
        t = time.perf_counter()
        with store.write() as conn:
            apply_events(conn, owner, buffer)
        journal.clear()
        timed += time.perf_counter() - t
        split["flush"] += time.perf_counter() - t
        buffer = []

    packs = {}
    for job in jobs:  # packs as a worker trains them: jobs of one width and n, all seeds and noise levels
        packs.setdefault((job.config["width"], job.config["n_train"]), []).append(job)
    pending = 0
    for members in packs.values():
        curves = [_curves(j.config["width"], j.config["n_train"], j.config["label_noise"], j.config["seed"],
                          epochs, rng) for j in members]
        names = list(curves[0])
        columns = [list(zip(*(c[k].tolist() for k in names))) for c in curves]  # per job: a tuple per epoch
        for e in range(epochs):
            rows = [{"job_id": j.job_id, "epoch": e, "step": e * steps_per_epoch, "lr": 0.01, "seconds": 0.05 * e,
                     **dict(zip(names, cols[e])), "grad_norm": None, "noise_scale": 0.79}
                    for j, cols in zip(members, columns)]
            drained.append(Metrics(rows=rows))
            drained.append(Progress(job_ids=[j.job_id for j in members], epoch=e, epochs=epochs - 1))
            pending += len(rows)
            if pending >= drain_rows:  # one drain of the workers' pipes: journaled (fsynced) at once
                t = time.perf_counter()
                journal.append(drained)
                timed += time.perf_counter() - t
                split["journal"] += time.perf_counter() - t
                buffer += drained
                rows_in += pending
                drained, pending = [], 0
                if sum(len(ev.rows) for ev in buffer if isinstance(ev, Metrics)) >= flush_rows:
                    flush()
        drained += [Finished(job_id=j.job_id, status=JobStatus.DONE, epochs=epochs - 1) for j in members]
    t = time.perf_counter()
    journal.append(drained)
    timed += time.perf_counter() - t
    buffer += drained
    rows_in += pending
    flush()
    journal.close(remove=True)
    from ddsweep.store import results

    stored = int(results.query(db, "select count(*) as n from metrics")["n"][0])
    return {"rows": rows_in, "stored_rows": stored, "jobs": len(jobs), "epochs": epochs,
            "ingest_seconds": timed, "ingest_rows_per_s": rows_in / timed if timed else math.nan,
            "journal_seconds": split["journal"], "flush_seconds": split["flush"]}


# ----------------------------------------------------------------------------- the read commands

def _where(db) -> dict:
    """A --where that keeps one n and one noise level: 1/(2 x n values) of the rows (1M of 20M)."""
    from ddsweep.store import results

    n = results.query(db, "select min(n_train) as n from jobs")["n"][0]
    return {"n_train": [str(n)], "label_noise": [str(NOISES[0])]}


def command(name: str, arm: str, db: str, workdir: str):
    """Run one read command (new: the current code; old: the read path before the read layer)."""
    if arm == "old":
        return _old(name, db, workdir)
    from ddsweep import api
    from ddsweep.plot import curve, heatmap

    if name == "status":
        return api.status(db)
    if name == "summary":
        return api.summary(db)
    if name == "emc":
        return api.emc(db)
    if name == "heatmap":
        return heatmap(db, x="width", y="epoch", out=Path(workdir) / "heatmap-new.png")
    if name == "curve":
        return curve(db, x="width", out=Path(workdir) / "curve-new.png")
    if name == "load_where":
        return len(api.load_metrics(db, where=_where(db)))
    if name == "export":
        return api.export(db, fmt="parquet", out=Path(workdir) / "export-new.parquet")[1]
    raise SystemExit(f"unknown command {name}")


def _old_load(db, sweep=None):
    """load_metrics as it was: SQLAlchemy, every row a Python tuple (and the per-epoch lr lost)."""
    import pandas as pd

    from ddsweep.store import Store

    sql = ("SELECT j.sweep, j.width, j.n_train, j.label_noise, j.seed, j.lr, j.batch_size, j.momentum, "
           "j.weight_decay, j.optimizer, j.depth, j.dataset, j.model, j.loss, j.epochs AS horizon, j.status, "
           "j.schedule, j.warmup, j.grad_clip, j.grad_penalty, j.flood, j.world, m.* "
           "FROM metrics m JOIN jobs j USING (job_id)") + (" WHERE j.sweep = ?" if sweep else "")
    with Store(db).read() as conn:
        result = conn.exec_driver_sql(sql + " ORDER BY j.sweep, m.job_id, m.epoch", (sweep,) if sweep else ())
        df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    return df.loc[:, ~df.columns.duplicated()]


def _old(name: str, db: str, workdir: str):
    import pandas as pd

    from ddsweep.analysis.emc import emc_table
    from ddsweep.analysis.frames import apply_where
    from ddsweep.analysis.peaks import summarize
    from ddsweep.plot import style
    from ddsweep.plot.curve import curve_figure
    from ddsweep.plot.heatmap import heatmap_figure
    from ddsweep.store import Store

    if name == "status":  # (the same SQL, rows as tuples through SQLAlchemy)
        from ddsweep.store.results import STATUS_SQL, status_frame

        with Store(db).read() as conn:
            result = conn.exec_driver_sql(STATUS_SQL.format(where=""))
            return status_frame(pd.DataFrame(result.fetchall(), columns=list(result.keys())))
    if name == "load_where":
        return len(apply_where(_old_load(db), _where(db)))
    if name == "export":
        from ddsweep.exchange import export

        return export(db, fmt="parquet", out=Path(workdir) / "export-old.parquet")[1]  # (DuckDB's COPY then too)
    df = _old_load(db, "scale")
    if name == "summary":
        return summarize(df)
    if name == "emc":
        return emc_table(df)
    if name == "heatmap":
        return style.save(heatmap_figure(df, "scale", x="width", y="epoch"), Path(workdir) / "heatmap-old.png")
    if name == "curve":
        return style.save(curve_figure(df, "scale", x="width"), Path(workdir) / "curve-old.png")
    raise SystemExit(f"unknown command {name}")


COMMANDS = ("status", "summary", "emc", "heatmap", "curve", "load_where", "export")
SAME_PATH = ("export",)  # (DuckDB's COPY before the read layer too: both arms run it, a measure of the noise)


def measure(name: str, arm: str, db: Path, workdir: Path, timeout: float) -> dict:
    """One command in a fresh child process: its wall time (the call, after imports) and peak RSS.

    (The peak is the process's own high-water mark, VmHWM: getrusage's ru_maxrss would carry
    over the parent's peak into the child on Linux.)
    """
    code = ("import json, resource, sys, time\n"
            "from ddsweep.bench.store import command\n"
            "import ddsweep.api, ddsweep.plot, ddsweep.plot.style\n"
            "ddsweep.plot.style.setup()\n"  # (matplotlib and seaborn imported: the time is the command's own work)
            "t = time.perf_counter()\n"
            f"command({name!r}, {arm!r}, {str(db)!r}, {str(workdir)!r})\n"
            "s = time.perf_counter() - t\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "peak = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(json.dumps({'seconds': s, 'peak_mb': peak / 1024}))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "peak_mb": None, "error": f"over {timeout:.0f}s"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"seconds": None, "peak_mb": None, "error": f"exit {out.returncode}: {tail[:200]}"}
    found = re.findall(r'\{"seconds": [^{}]*\}', out.stdout)  # (DuckDB's progress bar may share the line)
    return json.loads(found[-1]) if found else {"seconds": None, "peak_mb": None, "error": "no result printed"}


def _fmt(r: dict) -> str:
    if r.get("seconds") is None:
        return f"({r.get('error')})"
    return f"{r['seconds']:7.2f} s {r['peak_mb']:7.0f} MB"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m ddsweep.bench --store", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", action="store_true", help="(selects this benchmark)")
    ap.add_argument("--rows", type=int, default=20_000_000, help="metric rows of the large database (default 20M)")
    ap.add_argument("--old-rows", type=int, default=1_000_000,
                    help="rows of the database both read paths are timed on (0: skip the old path)")
    ap.add_argument("--drain-rows", type=int, default=10_000, help="rows per journal append (one drain of the pipes)")
    ap.add_argument("--flush-rows", type=int, default=500_000, help="rows per database flush")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the databases (default: a temp dir)")
    ap.add_argument("--commands", default=",".join(COMMANDS),
                    help=f"which reads to time (default: {','.join(COMMANDS)})")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a command may take before it is abandoned")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        ap.error(f"--commands: unknown {', '.join(unknown)} (known: {', '.join(COMMANDS)})")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="ddsweep-bench-store-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpus": os.cpu_count(), "rows_target": args.rows}
    try:
        sizes = [("large", args.rows)] + ([("small", args.old_rows)] if args.old_rows else [])
        for label, rows in sizes:
            w, n, e = shape(rows)
            db = workdir / f"{label}.duckdb"
            db.unlink(missing_ok=True)
            t = time.perf_counter()
            ing = ingest(db, grid(w, n, e), args.drain_rows, args.flush_rows)
            ing["build_seconds"] = time.perf_counter() - t
            ing["db_mb"] = db.stat().st_size / 2**20
            report[label] = {"ingest": ing, "new": {}, "old": {}}
            print(f"{label}: {ing['jobs']} jobs x {ing['epochs']} epochs = {ing['rows']:,} rows "
                  f"(stored {ing['stored_rows']:,}); ingest {ing['ingest_rows_per_s']:,.0f} rows/s "
                  f"({ing['ingest_seconds']:.1f} s: journal {ing['journal_seconds']:.1f} s, "
                  f"flush {ing['flush_seconds']:.1f} s; {ing['db_mb']:.0f} MB)", flush=True)
            arms = ("new", "old") if label == "small" else ("new",)
            if label == "small":  # the write path of before, on the same rows, in this same run
                old_db = workdir / "small-old-writes.duckdb"
                old_db.unlink(missing_ok=True)
                old = ingest(old_db, grid(w, n, e), args.drain_rows, args.flush_rows, arm="old")
                shutil.rmtree(old_db.with_name(old_db.name + ".journal"), ignore_errors=True)
                old_db.unlink(missing_ok=True)
                ing["old"] = old
                print(f"  ingest old  {old['ingest_rows_per_s']:,.0f} rows/s ({old['ingest_seconds']:.1f} s: journal "
                      f"{old['journal_seconds']:.1f} s, flush {old['flush_seconds']:.1f} s; stored "
                      f"{old['stored_rows']:,})   new/old {ing['ingest_rows_per_s'] / old['ingest_rows_per_s']:.1f}x "
                      f"(journal {old['journal_seconds'] / ing['journal_seconds']:.1f}x, "
                      f"flush {old['flush_seconds'] / ing['flush_seconds']:.1f}x faster)", flush=True)
            for name in commands:
                for arm in arms:
                    r = measure(name, arm, db, workdir, args.timeout)
                    report[label][arm][name] = r
                print(f"  {name:11s} " + "   ".join(f"{arm} {_fmt(report[label][arm][name])}" for arm in arms)
                      + _ratio(report[label], name), flush=True)
        report["targets"] = _verdicts(report)
        for line in report["targets"]:
            print(line)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


def _ratio(part: dict, name: str) -> str:
    new, old = part["new"].get(name, {}), part["old"].get(name, {})
    if not old or not new.get("seconds") or not old.get("seconds"):
        return ""
    return f"   old/new {old['seconds'] / new['seconds']:5.1f}x time, {old['peak_mb'] / new['peak_mb']:4.1f}x memory"


def _verdicts(report: dict) -> list[str]:
    big = report["large"]
    rows = big["ingest"]["rows"]
    lines = [f"targets on {rows:,} rows ({report['cpus']} cpus, shared):"]
    rate = big["ingest"]["ingest_rows_per_s"]
    ok = rate >= TARGETS["ingest_rows_per_s"] and big["ingest"]["stored_rows"] == rows
    lines.append(f"  ingest {rate:,.0f} rows/s, {big['ingest']['stored_rows']:,} of {rows:,} stored "
                 f"(>= 100,000 rows/s, nothing lost): {'met' if ok else 'NOT met'}")
    for name, (secs, mb) in ((k, v) for k, v in TARGETS.items() if k != "ingest_rows_per_s"):
        if name not in big["new"]:
            continue
        r = big["new"][name]
        if r.get("seconds") is None:
            lines.append(f"  {name}: {r.get('error')}: NOT met")
            continue
        met = r["seconds"] <= secs and (mb is None or r["peak_mb"] <= mb)
        lines.append(f"  {name} {r['seconds']:.2f} s, {r['peak_mb']:.0f} MB (<= {secs:g} s"
                     + (f", <= {mb} MB" if mb else "") + f"): {'met' if met else 'NOT met'}")
    if "small" in report and report["small"]["old"]:
        worse = [n for n in report["small"]["old"] if n not in SAME_PATH
                 and (report["small"]["new"][n].get("seconds") or math.inf)
                 > (report["small"]["old"][n].get("seconds") or math.inf) * 1.1]
        same = [n for n in SAME_PATH if n in report["small"]["old"]]
        lines.append(f"  on {report['small']['ingest']['rows']:,} rows every read at least as fast as the old path"
                     + (f" ({', '.join(same)}: the same code in both arms, not compared)" if same else "") + ": "
                     + ("met" if not worse else f"NOT met ({', '.join(worse)})"))
    return lines


if __name__ == "__main__":
    main()
