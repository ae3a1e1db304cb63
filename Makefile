# Two commands do all set-up: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= out/results.duckdb

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and torchvision first, pinned to the releases on local disk (no multi-GB download).
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev,tune,ray]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/ddsweep plan sweeps/mnist1d-mlp.yaml --db $(DB)
	$(BIN)/ddsweep work --db $(DB) --cpus 2
	$(BIN)/ddsweep plot heatmap --db $(DB) --out out/heatmap.png
	$(BIN)/ddsweep plot curve --db $(DB) --x width --out out/curve.png
	$(BIN)/ddsweep summary --db $(DB)
	$(BIN)/ddsweep report --db $(DB) --out out/report.html
	@echo
	@echo "Figures: out/heatmap.png out/curve.png   Report: out/report.html   Database: $(DB)"
	@echo "Try:     $(BIN)/ddsweep query \"select width, test_error from final_metrics order by width\" --db $(DB)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m ddsweep.bench

clean:
	rm -rf out build dist *.egg-info
