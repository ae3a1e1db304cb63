"""Bad input on the command line: one line on stderr, exit code 2, a did-you-mean where a name was misspelt,
nothing written."""

from __future__ import annotations

import pytest

from tests.test_cli_tables import _stored


def _one_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddsweep: error: "), r.output
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["status", "--sweep", "mnist1d-mpl"], "--sweep mnist1d-mpl: no such sweep in {db}; did you mean mnist1d-mlp?"),
    (["summary", "--metric", "test_eror"], "--metric test_eror: not a stored metric; did you mean test_error"),
    (["emc", "--metric", "train_eror"], "--metric train_eror: not a stored metric; did you mean train_error"),
    (["plot", "heatmap", "--x", "widht"], "--x widht: no such column; did you mean width?"),
    (["plot", "curve", "--hue", "label_nosie"], "--hue label_nosie: no such column; did you mean label_noise?"),
    (["summary", "--where", "widht=8"], "--where widht: no such column; did you mean width?"),
    (["plot", "curve", "--metric", "tset_loss"], "--metric tset_loss: not a stored metric; did you mean test_loss"),
    (["plot", "heatmap", "--metric", "test_eror"], "--metric test_eror: not a stored metric; did you mean test_error"),
    (["summary", "--fit", "-1"], "--fit -1: must be a train error in (0, 1]"),
    (["statsu"], "No such command 'statsu'. Did you mean 'status'?"),
    (["status", "--dbb", "x"], "No such option: --dbb"),
    (["status", "--format", "xml"], "Invalid value for '--format'"),
    (["summary", "--epoch", "two"], "Invalid value for '--epoch'"),
])
def test_misspelt_names_get_one_line_and_a_guess(cli, demo_db, tmp_path, args, expected):
    extra = ["--out", tmp_path / "x.png"] if args[0] == "plot" else []
    db = [] if args == ["statsu"] else ["--db", demo_db]
    line = _one_line(cli(*args, *db, *extra))
    assert expected.format(db=demo_db) in line, line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["summary"], ["emc"], ["plot", "curve"], ["plot", "heatmap", "--y", "n_train"]],
                         ids=lambda a: "-".join(a))
def test_an_epoch_not_evaluated_names_the_nearest(cli, demo_db, tmp_path, args):
    extra = ["--out", tmp_path / "x.png"] if args[0] == "plot" else []
    line = _one_line(cli(*args, "--db", demo_db, "--epoch", 200, *extra))
    evaluated = sorted(e for (e,) in _stored(demo_db, "select distinct epoch from metrics"))
    below, above = max(e for e in evaluated if e < 200), min(e for e in evaluated if e > 200)
    assert f"--epoch 200: not an evaluated epoch; nearest evaluated: {below}, {above} " \
           f"(of {len(evaluated)}, 0 to 500)" in line, line
    assert not list(tmp_path.iterdir())


OUTPUTS = [
    ["plot", "heatmap", "--out", "{dir}/x.png"],
    ["plot", "curve", "--out", "{dir}/x.png"],
    ["report", "--out", "{dir}/r.html"],
    ["report", "--out", "{tmp}/r.html", "--figures", "{dir}"],
    ["export", "--format", "csv", "--out", "{dir}/m.csv"],
]


@pytest.mark.parametrize("args", OUTPUTS, ids=lambda a: "-".join(x for x in a if not x.startswith("{")))
def test_a_missing_or_unusable_output_folder_is_one_line(cli, demo_db, tmp_path, args):
    missing = tmp_path / "no" / "such"
    line = _one_line(cli(*[str(a).format(dir=missing, tmp=tmp_path) for a in args], "--db", demo_db))
    assert f"no folder {missing} (create it first: mkdir -p {missing})" in line, line
    assert list(tmp_path.iterdir()) == []  # not created, nothing written
    a_file = tmp_path / "file"
    a_file.write_text("")
    line = _one_line(cli(*[str(a).format(dir=a_file / "sub", tmp=tmp_path) for a in args], "--db", demo_db))
    assert f"{a_file} is a file, not a folder" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_an_output_that_is_a_folder_is_one_line(cli, demo_db, tmp_path):
    line = _one_line(cli("plot", "heatmap", "--db", demo_db, "--out", tmp_path))
    assert line == f"ddsweep: error: --out {tmp_path}: is a folder; give a file name in it"
