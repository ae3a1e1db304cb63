"""--where with comparisons and ranges: parsed once, the same rows in SQL (the read layer) as in pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from ddsweep import api
from ddsweep.analysis.frames import apply_where
from ddsweep.errors import UserError
from ddsweep.where import Between, Compare, parse_where


def test_parse():
    assert parse_where(["width=8,16", "width>=10", "lr<=0.1", "n_train=100..400", "seed!=0", "width=..64",
                        "width=8.."]) == {
        "width": ["8", "16", Compare(">=", 10.0), Between(None, 64.0), Between(8.0, None)],
        "lr": [Compare("<=", 0.1)], "n_train": [Between(100.0, 400.0)], "seed": [Compare("!=", 0.0)]}
    assert parse_where(["optimizer!=adam"]) == {"optimizer": [Compare("!=", "adam")]}
    for bad, why in (("width", "expected AXIS=VALUE"), ("width>=", "expected AXIS=VALUE"), ("=3", "expected"),
                     ("width>=abc", "'abc' is not a number"), ("width=64..8", r"the range is empty \(64 > 8\)"),
                     ("width=..", "expected"), ("width=1..2,3", "expected")):
        with pytest.raises(UserError, match=why):
            parse_where([bad])


CASES = [["width>=24"], ["width=8..64"], ["width=..5", "label_noise=0.15"], ["width!=2", "width<100"],
         ["width=3,300", "width>=100"], ["epoch=10..20", "width=43"], ["test_error<0.4"], ["train_error>=0.1"],
         ["label_noise!=0.2"]]


@pytest.mark.parametrize("items", CASES, ids=lambda i: " ".join(i))
def test_sql_filters_equal_pandas_filters(demo_db, items):
    where = parse_where(items)
    full = api.load_metrics(demo_db)
    got = api.load_metrics(demo_db, where=where).reset_index(drop=True)
    want = apply_where(full, where).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert 0 < len(got) < len(full) or items == ["label_noise!=0.2"] and len(got) == len(full)


def test_no_match_is_one_line(demo_db):
    with pytest.raises(UserError, match=r"--where width>=1000: no such value \(values: 2, 3, 5, "):
        api.load_metrics(demo_db, where=parse_where(["width>=1000"]))
    with pytest.raises(UserError, match="--where test_error<0: no row matches"):
        api.load_metrics(demo_db, where=parse_where(["test_error<0"]))
    with pytest.raises(UserError, match="no such value"):  # (!= within the tolerance equality allows)
        api.load_metrics(demo_db, where=parse_where(["label_noise!=0.15000000001"]))
    with pytest.raises(UserError, match="--where dataset>=3: dataset is not numeric"):
        api.load_metrics(demo_db, where=parse_where(["dataset>=3"]))


def test_where_ranges_on_the_command_line(cli, demo_db):
    r = cli("query", "select count(*) from final_metrics where width between 8 and 64", "--db", demo_db)
    n = int(r.stdout.splitlines()[1])
    r = cli("summary", "--db", demo_db, "--where", "width=8..64", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].split(",")[8] == str(n)  # the curve's points: the widths in the range
    r2 = cli("summary", "--db", demo_db, "--where", "width>=8", "--where", "width<=64", "--format", "csv")
    assert r2.stdout == r.stdout
    r = cli("summary", "--db", demo_db, "--where", "width=>8")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--where width=>8" in r.output, r.output
