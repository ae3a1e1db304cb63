"""ddsweep: map deep double descent and its neighbours.

The flow is grid -> jobs -> workers -> store -> analysis -> plots; each step has a
Python function that the CLI calls:

    import ddsweep
    ddsweep.plan("sweeps/mnist1d-mlp.yaml", db="results.duckdb")
    ddsweep.work(db="results.duckdb", cpus=2)
    df = ddsweep.query("select * from final_metrics", db="results.duckdb")
"""

__version__ = "0.1.0"

# Processes that open the database never import torch, and training processes
# never import duckdb_engine: with both loaded, DuckDB's bindings print a screenful
# of "nanobind: leaked instances" at exit (duckdb 2.0, duckdb-engine 0.17, torch 2.14).

__all__ = ["plan", "work", "status", "query", "queries", "load_metrics", "emc", "summary", "export", "import_results",
           "report", "retry", "extend", "refine", "__version__"]


def __getattr__(name):  # lazy: `ddsweep --help` should not import torch
    if name in __all__:
        from ddsweep import api

        return getattr(api, name)
    raise AttributeError(name)
