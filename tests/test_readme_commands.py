"""Every README command that reads the demo database runs, as written, on a database shaped like `make demo`'s.

The commands are taken from the code blocks of the README's sections about the demo
sweep (DEMO_SECTIONS): each `ddsweep ...` line (also `$ ddsweep ...` in an output block)
whose command reads (status, query, summary, emc, plot, report, export, plan --dry-run)
and whose --db is the demo's (none, results.duckdb or out/results.duckdb). Training
commands (work, refine, ...) and commands on other databases are left out: they need
trained runs or other sweeps. Each runs in a fresh folder through the CLI runner; it
must exit 0.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_SECTIONS = ("The three commands", "What the demo shows", "Maps, curves, EMC, peaks, report", "Export and import",
                 "The database")
DEMO_DBS = ("results.duckdb", "out/results.duckdb")
READING = {"status", "query", "summary", "emc", "plot", "report", "export"}


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _command_lines(section: str) -> list[str]:
    lines, fence = [], False
    for line in re.sub(r"\\\n\s*", " ", section).splitlines():  # (continuation lines joined)
        if line.startswith("```"):
            fence = not fence
            continue
        s = line.strip()
        s = s[2:] if s.startswith("$ ") else s
        if fence and (s.startswith("ddsweep ") or s.startswith("mkdir -p ")):
            lines.append(s)
    return lines


def _argv(line: str) -> list[str] | None:
    """The arguments of one README line (after `ddsweep`), up to a comment, pipe, redirection or `&&`."""
    if line.startswith("mkdir -p "):
        return None
    words = shlex.split(line, comments=True)
    for i, w in enumerate(words):
        if w in ("|", "&&", ";") or w.startswith(">"):
            words = words[:i]
            break
    args = words[1:]
    if not args:
        return None
    reads = args[0] in READING or args[0] == "plan" and "--dry-run" in args
    db = args[args.index("--db") + 1] if "--db" in args else None
    if not reads or (db is not None and db not in DEMO_DBS):
        return None
    return args


def readme_commands() -> list[list[str]]:
    sections = _sections((ROOT / "README.md").read_text(encoding="utf-8"))
    missing = [s for s in DEMO_SECTIONS if s not in sections]
    assert not missing, f"README sections renamed? {missing}"
    found = []
    for name in DEMO_SECTIONS:
        found += [a for a in map(_argv, _command_lines(sections[name])) if a is not None]
    return found


def readme_folders() -> list[str]:
    """The folders the demo sections make with `mkdir -p` before a command writes into them."""
    sections = _sections((ROOT / "README.md").read_text(encoding="utf-8"))
    return [w for name in DEMO_SECTIONS for line in _command_lines(sections[name]) if line.startswith("mkdir -p ")
            for w in shlex.split(line, comments=True)[2:]]


def repo_folders(args: list[str]) -> list[str]:
    """Output folders a command names that the repository has (README's commands run from its root: docs/)."""
    outs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--out", "--figures")]
    return [str(Path(o).parent) for o in outs if str(Path(o).parent) != "." and (ROOT / Path(o).parent).is_dir()]


COMMANDS = readme_commands()


def test_the_readme_has_demo_commands():
    assert len(COMMANDS) >= 15, COMMANDS
    assert {a[0] for a in COMMANDS} >= {"status", "query", "summary", "emc", "plot", "report", "export"}


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_command_runs_on_the_demo_database(cli, demo_db, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").symlink_to(ROOT / "sweeps")
    for folder in ["out", *readme_folders(), *repo_folders(args)]:  # (`make demo` makes out/)
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    args = list(args)
    if "--db" in args:
        args[args.index("--db") + 1] = str(demo_db)
    else:
        args += ["--db", str(demo_db)]
    r = cli(*args)
    assert r.exit_code == 0, (args, r.output)
