"""Habits of the ecosystem: --version, -h, completion, choices in help, DDSWEEP_DB, plan overrides, presets."""

from __future__ import annotations

import duckdb
import pytest
import yaml

import ddsweep
from ddsweep.grid import expand, load_grid
from ddsweep.grid.overrides import PRESETS, preset_names
from tests.conftest import ROOT, TINY, write_grid


def _ids(db) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("select job_id from jobs").fetchall()}
    finally:
        con.close()


def _one_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddsweep: error: "), r.output
    return lines[0]


def test_version_help_and_completion(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"ddsweep {ddsweep.__version__}"
    for args in (["-h"], ["status", "-h"], ["plot", "-h"], ["plot", "curve", "-h"]):
        short, long = cli(*args), cli(*args[:-1], "--help")
        assert short.exit_code == 0 and short.output == long.output and "Usage:" in short.output, args
    r = cli("--show-completion", "bash")
    assert r.exit_code == 0 and "complete -o default -F" in r.output and "_COMPLETE=complete_bash" in r.output, r.output
    assert "--install-completion" in cli("--help").output


@pytest.mark.parametrize("args, shown", [
    (["status"], "table|csv|tsv|json|markdown"), (["query"], "table|csv|tsv|json|markdown"),
    (["emc"], "table|csv|tsv|json|markdown"), (["summary"], "table|csv|tsv|json|markdown"),
    (["export"], "metrics|curves|final_metri"), (["refine"], "peak|threshold"), (["summary"], "test|val"),
    (["plot", "curve"], "width|n_train|epoch"), (["plot", "heatmap"], "width|n_train|epoch"),
    (["status"], "DDSWEEP_DB"), (["plan"], "Examples"), (["query"], "Examples"),
])
def test_help_shows_choices_and_examples(cli, monkeypatch, args, shown):
    monkeypatch.setenv("COLUMNS", "250")  # (a help screen this wide wraps no choice list)
    r = cli(*args, "--help")
    assert r.exit_code == 0
    assert shown in r.output, r.output


def test_ddsweep_db_is_the_default_database(cli, demo_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DDSWEEP_DB", str(demo_db))
    r = cli("status")
    assert r.exit_code == 0 and "mnist1d-mlp\t18\t" in r.output, r.output
    r = cli("status", "--db", tmp_path / "other.duckdb")  # an option given wins
    assert r.exit_code == 2 and "other.duckdb" in r.output
    monkeypatch.setenv("DDSWEEP_DB", str(tmp_path))
    line = _one_line(cli("status"))
    assert f"$DDSWEEP_DB = '{tmp_path}': must be a database file, not a folder" in line, line
    monkeypatch.delenv("DDSWEEP_DB")
    r = cli("status")
    assert r.exit_code == 2 and "results.duckdb: no such database" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


OVERRIDES = [
    (["grid.width=[8,16]", "train.lr=0.05"], {"grid": {"width": [8, 16]}, "train": {"lr": 0.05}}),
    (["grid.width={geom: [2, 64, 4]}", "eval.every=3"], {"grid": {"width": {"geom": [2, 64, 4]}}, "eval": {"every": 3}}),
    (["dataset.pool=1000", "grid.seed=[0,1]", "model.depth=3"],
     {"dataset": {"pool": 1000}, "grid": {"seed": [0, 1]}, "model": {"depth": 3}}),
    (["train.momentum=0.5", "train.lr=0.1", "train.lr=0.02"], {"train": {"momentum": 0.5, "lr": 0.02}}),
]


def _edited(base: dict, changes: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in changes.items():
        out[section] = {**out.get(section, {}), **values}
    return out


@pytest.mark.parametrize("overrides, changes", OVERRIDES, ids=lambda o: " ".join(o) if isinstance(o, list) else "")
def test_overrides_give_the_ids_of_the_edited_file(cli, tmp_path, overrides, changes):
    grid = write_grid(tmp_path / "g.yaml", TINY)
    edited = write_grid(tmp_path / "edited.yaml", _edited(TINY, changes))
    r = cli("plan", grid, *overrides, "--db", tmp_path / "a.duckdb")
    assert r.exit_code == 0, r.output
    assert cli("plan", edited, "--db", tmp_path / "b.duckdb").exit_code == 0
    a, b = _ids(tmp_path / "a.duckdb"), _ids(tmp_path / "b.duckdb")
    assert a == b and a != {j.job_id for j in expand(load_grid(grid), grid)}
    # the sweep stores the overridden grid: read back, it gives the same jobs (what refine re-plans from)
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    stored = con.execute("select grid_yaml from sweeps").fetchone()[0]
    con.close()
    again = tmp_path / "stored.yaml"
    again.write_text(stored)
    assert {j.job_id for j in expand(load_grid(again), again)} == a
    assert stored.startswith(f"# {grid} with overrides: {' '.join(overrides)}\n")


@pytest.mark.parametrize("override, why", [
    ("train.lr=-1", "override train.lr=-1: train.lr = -1: Input should be greater than 0"),
    ("train.lrr=0.1", "override train.lrr=0.1: train.lrr = 0.1: unknown key; did you mean lr?"),
    ("grid.width=[0,8]", "override grid.width=[0,8]: grid.width[0] = 0"),
    ("grid.width=[8", "override grid.width=[8: the value is not valid YAML"),
    ("train.lr.x=3", "override train.lr.x=3: train.lr is 0.05 in the grid file, not a mapping with keys"),
    ("lr", "override lr: expected KEY=VALUE with a dotted key"),
    ("train.lr=", "override train.lr=: no value"),
    ("dataset.pool=100", "with dataset.pool=100: grid.n_train = 400: larger than the dataset's training pool (100)"),
])
def test_a_bad_override_is_one_line_and_writes_nothing(cli, tmp_path, override, why):
    grid = write_grid(tmp_path / "g.yaml", TINY)
    line = _one_line(cli("plan", grid, override, "--db", tmp_path / "r.duckdb"))
    assert why in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml"]


def test_presets_by_name(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert preset_names() == sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))  # every file shipped
    assert (PRESETS / "mnist1d-mlp.yaml").read_bytes() == (ROOT / "sweeps" / "mnist1d-mlp.yaml").read_bytes()
    r = cli("plan", "mnist1d-mlp", "--db", tmp_path / "p.duckdb")
    assert r.exit_code == 0, r.output
    spec = ROOT / "sweeps" / "mnist1d-mlp.yaml"
    assert _ids(tmp_path / "p.duckdb") == {j.job_id for j in expand(load_grid(spec), spec)}
    r = cli("plan", "mnist1d-mlp", "grid.width=[8]", "--db", tmp_path / "q.duckdb")
    assert r.exit_code == 0 and len(_ids(tmp_path / "q.duckdb")) == 1
    line = _one_line(cli("plan", "mnist1d-mpl", "--db", tmp_path / "x.duckdb"))
    assert "mnist1d-mpl: no such grid file or preset; did you mean mnist1d-mlp" in line
    assert not (tmp_path / "x.duckdb").exists()


def test_pyproject_ships_the_presets():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "sweeps/*.yaml" in project["tool"]["setuptools"]["package-data"]["ddsweep"]
    assert (ROOT / "ddsweep" / "sweeps").resolve() == (ROOT / "sweeps").resolve()  # one copy of the files
    assert yaml.safe_load((PRESETS / "mnist1d-mlp.yaml").read_text())["name"] == "mnist1d-mlp"


def test_every_command_shows_examples(cli):
    import typer

    from ddsweep.cli import app

    root = typer.main.get_command(app)
    paths = [[name] for name, c in root.commands.items() if not hasattr(c, "commands")]
    paths += [["plot", name] for name in root.commands["plot"].commands]
    assert len(paths) >= 15
    for path in paths:
        r = cli(*path, "--help")
        assert r.exit_code == 0 and "Examples" in r.output and "ddsweep " + " ".join(path) in r.output, path
