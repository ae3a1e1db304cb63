"""`ddsweep report`: one self-contained HTML page, checked in a real headless browser."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from ddsweep.exchange import import_frame
from tests.synthetic import grid_frame

PROBE_HEAD = ("<script>window.__errors=[];window.addEventListener('error',function(e){__errors.push("
              "String(e.message||('failed to load '+(e.target&&(e.target.tagName+' '+String(e.target.src).slice(0,40))))))"
              "},true);</script>")
PROBE_TAIL = ("<script>window.addEventListener('load',function(){var r={images:Array.from(document.images).map("
              "function(i){return [i.naturalWidth,i.naturalHeight,i.alt]}),errors:window.__errors,"
              "title:document.title};var p=document.createElement('pre');p.id='probe';"
              "p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it): "
                    "the report's browser check needs it")
    return exe


def open_in_browser(html_path, tmp_path) -> dict:
    """Load the page headless; return what the probe saw: image sizes and errors."""
    exe = chromium()
    page = html_path.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>", 1),
                     encoding="utf-8")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no probe output (exit {r.returncode}): {r.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    db = d / "r.duckdb"
    df = grid_frame([2, 4, 8, 16, 32, 64], 12, n_values=(250, 1000, 4000), noises=(0.2,), seeds=(0, 1))
    import_frame(df.drop(columns="job_id").assign(dataset="mnist1d"), db, sweep="synthetic")
    return db


@pytest.fixture(scope="module")
def built(report_db, tmp_path_factory):
    from ddsweep import api

    d = tmp_path_factory.mktemp("built")
    (d / "figs").mkdir()  # (a missing --figures folder is refused, not created)
    out = api.report(report_db, out=d / "report.html", figures_dir=d / "figs")
    return out, d / "figs"


def test_report_is_one_self_contained_page(built):
    out, figs = built
    page = out.read_text(encoding="utf-8")
    for heading in ("Grid", "Jobs", "Maps", "Curves", "EMC and the interpolation threshold", "Peaks"):
        assert f">{heading}</h2>" in page
    images = re.findall(r"<img src='data:image/png;base64,([^']+)'", page)
    slugs = sorted(p.stem for p in figs.glob("*.png"))
    assert len(images) == len(slugs) >= 8
    assert {"map-width-epoch-test", "map-width-ntrain-test", "map-ntrain-epoch-test", "curve-width",
            "curve-ntrain", "curve-epoch"} <= set(slugs)
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped" not in page
    # nothing fetched from elsewhere, no scripts
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    assert "<script" not in page
    # the EMC table (a sample axis: EMC per width) and the peak summary
    assert "EMC (largest n with seed-mean train error &lt;= 0.1" in page
    assert "sample-wise" in page and "model-wise" in page and "first minimum" in page


def test_report_renders_in_headless_chromium(built, tmp_path):
    out, _ = built
    seen = open_in_browser(out, tmp_path)
    assert seen["title"] == "ddsweep report: synthetic"
    assert seen["errors"] == []
    sizes = np.array([(w, h) for w, h, _ in seen["images"]])
    assert len(sizes) >= 8 and (sizes > 100).all(), seen["images"]


def test_browser_probe_catches_a_broken_image(report_db, tmp_path):
    """The check above would notice an image that does not decode."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>t</title></head><body>"
                   "<img src='data:image/png;base64,AAAA' alt='x'></body></html>")
    seen = open_in_browser(bad, tmp_path)
    assert seen["images"][0][0] == 0 and seen["errors"]


def test_report_on_a_sweep_without_data_is_a_clear_error(tmp_path, cli):
    import pandas as pd

    db = tmp_path / "e.duckdb"
    import_frame(pd.DataFrame({"width": [4], "n_train": [10], "label_noise": [0.0], "seed": [0], "epoch": [0],
                               "test_error": [0.5]}), db, sweep="one")
    r = cli("report", "--db", db, "--out", tmp_path / "x.pdf")
    assert r.exit_code == 2 and ".html" in r.output
    r = cli("report", "--db", db, "--out", tmp_path / "x.html")
    assert r.exit_code == 0, r.output  # one cell: what does not apply is said, not drawn
    page = (tmp_path / "x.html").read_text()
    assert "not available" in page


def test_report_tables_align_numbers_and_drop_empty_columns():
    import pandas as pd

    from ddsweep.html_report import _table

    page = _table(pd.DataFrame({"sweep": ["a", "b"], "jobs": [18, 3], "err": [0.9, 0.0867], "eta": [None, None],
                                "threshold": ["> 300", "43-56"]}))
    assert "eta" not in page  # a column with no value is left out
    assert "<th class=num>jobs</th>" in page and "<th>sweep</th>" in page
    assert "<td class=num>0.900</td>" in page and "<td class=num>0.087</td>" in page  # one precision per column
    assert "<td class=num>&gt; 300</td>" in page  # bounds and ranges align as numbers do


def test_report_figures_are_full_width_at_twice_the_pixels(built):
    out, figs = built
    import struct

    widths = [struct.unpack(">I", p.read_bytes()[16:20])[0] for p in figs.glob("*.png")]
    assert min(widths) >= 2 * 1000  # (shown 100% wide on a page about 1068 CSS pixels wide)
    assert "img { width: 100%" in out.read_text(encoding="utf-8").replace("{{", "{")
