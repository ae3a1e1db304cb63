"""`ddsweep export --format tensorboard DIR`: one run per job, every metric per evaluated epoch,
read back with tensorboardX's protocol buffers (in a child process: tensorboardX imports torch)."""

import json
import subprocess
import sys

import pytest

from ddsweep.exchange import import_frame
from tests.synthetic import grid_frame

READER = r"""
import glob, json, os, struct, sys
from tensorboardX.crc32c import crc32c
from tensorboardX.proto import event_pb2

def masked(d):
    c = crc32c(d)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

runs = {}
for path in glob.glob(os.path.join(sys.argv[1], "*", "*", "events.out.tfevents.*")):
    b, i, scalars, texts = open(path, "rb").read(), 0, {}, []
    while i < len(b):
        (n,) = struct.unpack("<Q", b[i:i + 8])
        assert struct.unpack("<I", b[i + 8:i + 12])[0] == masked(b[i:i + 8]), "length CRC"
        data = b[i + 12:i + 12 + n]
        assert struct.unpack("<I", b[i + 12 + n:i + 16 + n])[0] == masked(data), "data CRC"
        i += 16 + n
        e = event_pb2.Event()
        e.ParseFromString(data)
        for v in e.summary.value:
            if v.metadata.plugin_data.plugin_name == "text":
                texts.append(v.tensor.string_val[0].decode())
            else:
                scalars.setdefault(v.tag, {})[e.step] = v.simple_value
    runs[os.path.relpath(os.path.dirname(path), sys.argv[1])] = {"scalars": scalars, "texts": texts}
print(json.dumps(runs))
"""


def test_export_tensorboard_reads_back(tmp_path, cli):
    pytest.importorskip("tensorboardX")
    df = grid_frame([4, 16], 5, seeds=(0, 1))  # 4 runs x epochs 0..5
    db = tmp_path / "r.duckdb"
    import_frame(df.drop(columns="job_id"), db, sweep="tb")
    out = tmp_path / "runs"
    r = cli("export", "--db", db, "--format", "tensorboard", out)
    assert r.exit_code == 0, r.output
    assert "wrote 24 rows" in r.output
    child = subprocess.run([sys.executable, "-c", READER, str(out)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    runs = json.loads(child.stdout)
    from ddsweep import load_metrics

    stored = load_metrics(db)
    assert set(runs) == {f"tb/{j}" for j in stored["job_id"].unique()}  # one run per job
    for job, rows in stored.groupby("job_id"):
        run = runs[f"tb/{job}"]
        for metric in ("test_error", "train_error"):
            got = {int(k): v for k, v in run["scalars"][metric].items()}
            assert got == pytest.approx(dict(zip(rows["epoch"], rows[metric])), rel=1e-6)  # every evaluated epoch
        width = rows["width"].iloc[0]
        assert any(f"width={width}" in t for t in run["texts"])
    # into a folder that has runs already: one line, exit 2, nothing changed
    before = sorted(p.name for p in out.rglob("*"))
    r = cli("export", "--db", db, "--format", "tensorboard", "--out", out)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "not an empty folder" in r.output
    assert sorted(p.name for p in out.rglob("*")) == before
    r = cli("export", "--db", db, "--format", "tensorboard", "--table", "curves", tmp_path / "other")
    assert r.exit_code == 2 and "--table curves" in r.output and not (tmp_path / "other").exists()
