# The two commands: `make demo` runs the lifecycle, `make test` runs every test.
# Both bootstrap what they need on a machine with only Python 3.11 and make: uv (pinned, installed
# into .tools/ with pip when it is not on PATH) and the .venv built from uv.lock.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
UV_VERSION := 0.13.9
UV_ON_PATH := $(shell command -v uv 2>/dev/null)
UV := $(if $(UV_ON_PATH),$(UV_ON_PATH),.tools/bin/uv)
VENV := .venv
DEMO_DIR ?= data
PYTEST_ARGS ?=
DEMO_PORT ?= 8765

# The demo's online request: wait for readiness, send one transaction, print the answer.
define DEMO_REQUEST
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(180):
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(1)
else:
    sys.exit("the server did not become ready")
row = {"transaction_id": 1, "customer_id": 42, "terminal_id": 7, "amount": 120.5, "event_timestamp": "2018-09-30T12:00:00Z"}
request = urllib.request.Request(base + "/v1/models/fraud-detector:explain", json.dumps({"instances": [row]}).encode(), {"content-type": "application/json"})
print("POST /v1/models/fraud-detector:explain ->", urllib.request.urlopen(request, timeout=10).read().decode())
endef
export DEMO_REQUEST

export UV_PYTHON_DOWNLOADS := never
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: demo test bench lint install clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: imports read .pyc files written once here, even where PYTHONDONTWRITEBYTECODE is
# set (as on CI); without them every server and CLI start compiles kserve, feast and mlflow again.
$(VENV)/.synced: pyproject.toml uv.lock | $(if $(UV_ON_PATH),,.tools/bin/uv)
	$(UV) sync --locked --all-extras --compile-bytecode --python "$(PYTHON)"
	@touch $@

install: $(VENV)/.synced

# The demo: the training flow (Prefect, ephemeral local server) end to end on the simulator's default
# data, then the champion's batch score and one online request, then a summary of what ran and where.
demo: install
	$(VENV)/bin/fraud pipeline train --data-dir $(DEMO_DIR)
	FRAUD_FEATURE_STORE_DIR=$(DEMO_DIR)/feature_store $(VENV)/bin/fraud features online \
		--customer-id 42 --terminal-id 7 --amount 120 --timestamp 2018-09-30T12:00:00 --features-dir $(DEMO_DIR)/features/simulator
	FRAUD_DATA_DIR=$(DEMO_DIR) $(VENV)/bin/fraud models --name fraud-detector
	@mkdir -p $(DEMO_DIR)/pipelines
	start=$$(date +%s); FRAUD_DATA_DIR=$(DEMO_DIR) $(VENV)/bin/fraud score --model models:/fraud-detector@champion \
		--input $(DEMO_DIR)/raw/simulator --out $(DEMO_DIR)/scores/simulator.parquet \
		&& echo "batch score, whole dataset (fraud score)=$$(( $$(date +%s) - start ))" > $(DEMO_DIR)/pipelines/demo_stages.txt
	@# Batch inference of one day, exactly once (a rerun of make demo finds it committed: a no-op).
	start=$$(date +%s); FRAUD_DATA_DIR=$(DEMO_DIR) $(VENV)/bin/fraud batch score --model models:/fraud-detector@champion \
		--raw $(DEMO_DIR)/raw/simulator --date 2018-09-30 --features-dir $(DEMO_DIR)/features/simulator \
		--out $(DEMO_DIR)/batch_predictions \
		&& echo "batch inference of 2018-09-30 (fraud batch score)=$$(( $$(date +%s) - start ))" >> $(DEMO_DIR)/pipelines/demo_stages.txt
	@# Online: serve the champion on loopback, score one transaction over KServe V1, stop (SIGTERM).
	start=$$(date +%s); FRAUD_DATA_DIR=$(DEMO_DIR) FRAUD_FEATURE_STORE_DIR=$(DEMO_DIR)/feature_store $(VENV)/bin/fraud serve \
		--features-dir $(DEMO_DIR)/features/simulator --port $(DEMO_PORT) & server=$$!; \
	$(VENV)/bin/python -c "$$DEMO_REQUEST" $(DEMO_PORT); status=$$?; kill $$server; wait $$server; \
	echo "online serve + 1 request=$$(( $$(date +%s) - start ))" >> $(DEMO_DIR)/pipelines/demo_stages.txt; exit $$status
	@# The drift story: drift, decay, alerts, a retrained challenger in shadow, A/B, promotion (README).
	start=$$(date +%s); rm -rf $(DEMO_DIR)/drift-story && $(VENV)/bin/fraud --log-level ERROR drift-story --out $(DEMO_DIR)/drift-story \
		&& echo "drift story (fraud drift-story)=$$(( $$(date +%s) - start ))" >> $(DEMO_DIR)/pipelines/demo_stages.txt
	@echo
	@echo "Where everything is:"
	@echo "  raw dataset (immutable daily partitions + manifest): $(DEMO_DIR)/raw/simulator/"
	@echo "  validated transactions + quality report (HTML):     $(DEMO_DIR)/processed/simulator/  (quality_report.html)"
	@echo "  point-in-time feature tables:                       $(DEMO_DIR)/features/simulator/"
	@echo "  Feast registry + SQLite online store:               $(DEMO_DIR)/feature_store/"
	@echo "  training set of the run (parquet + sidecar):        $(DEMO_DIR)/training_sets/simulator/"
	@echo "  model bundles (UBJ + SHA-256 manifest):             $(DEMO_DIR)/models/"
	@echo "  model report (HTML) + evaluation evidence:          $(DEMO_DIR)/evaluations/fraud-detector-v*/report.html"
	@echo "  registered model:                                   models:/fraud-detector@champion  (.venv/bin/fraud models --name fraud-detector)"
	@echo "  MLflow runs + registry (SQLite), UI:                .venv/bin/mlflow ui --backend-store-uri sqlite:///$(DEMO_DIR)/mlflow/mlflow.db"
	@echo "  scores of the champion:                             $(DEMO_DIR)/scores/simulator.parquet"
	@echo "  one day's batch inference (exactly once, manifest): $(DEMO_DIR)/batch_predictions/  (docs/batch.md)"
	@echo "  the drift story (timeline, monitoring, alerts):     $(DEMO_DIR)/drift-story/  (timeline.csv; docs/runbook.md)"
	@echo "  start the server:                                   FRAUD_DATA_DIR=$(DEMO_DIR) FRAUD_FEATURE_STORE_DIR=$(DEMO_DIR)/feature_store .venv/bin/fraud serve --features-dir $(DEMO_DIR)/features/simulator --port $(DEMO_PORT)"
	@echo "  send a request:                                     curl -s localhost:$(DEMO_PORT)/v1/models/fraud-detector:predict -H 'content-type: application/json' -d '{\"instances\": [{\"transaction_id\": 1, \"customer_id\": 42, \"terminal_id\": 7, \"amount\": 120.5, \"event_timestamp\": \"2018-09-30T12:00:00Z\"}]}'  (docs/serving.md)"
	@echo "  prediction event log of the server:                 $(DEMO_DIR)/predictions/"
	@echo "  the flows, schedules and a Prefect server:          docs/pipelines.md"
	@echo
	@set --; while IFS= read -r stage; do set -- "$$@" --stage "$$stage"; done < $(DEMO_DIR)/pipelines/demo_stages.txt; \
	FRAUD_DATA_DIR=$(DEMO_DIR) $(VENV)/bin/fraud pipeline summary --data-dir $(DEMO_DIR) "$$@"

test: install
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python bench/bench_simulator.py
	$(VENV)/bin/python bench/bench_validation.py
	$(VENV)/bin/python bench/bench_cli_startup.py
	$(VENV)/bin/python bench/bench_features.py
	$(VENV)/bin/python bench/bench_feature_store.py --online-calls 10000 --historical-rows 100000
	$(VENV)/bin/python bench/bench_serving_internals.py --rounds 3

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf $(VENV) .tools .pytest_cache
