"""The training flow end to end on small simulated data, against a temporary Prefect API.

Two real flow runs share one MLflow store in tmp: the first with gates no model can pass (the flow
fails at the gate, once, and nothing is promoted), the second with gates it passes (registered,
evaluated, promoted). Task-level failures are tested through ``task.fn``, without the engine.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from tests.conftest import AS_OF, SMALL_SIM, make_transactions, write_training_config
from tests.prefect_support import prefect_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "fraud-test"
LENIENT = {
    "n_boot": 20,
    "shap_sample": 200,
    "gates": {"min_average_precision": 0.0, "min_roc_auc": 0.0, "max_latency_p99_ms": 1000.0},
}
STRICT = {**LENIENT, "gates": {**LENIENT["gates"], "min_average_precision": 0.99}}
# FRAUD_* and MLflow variables of the developer's shell must not redirect the flow's outputs.
_ISOLATED = (
    "MLFLOW_TRACKING_URI",
    "FRAUD_MLFLOW_TRACKING_URI",
    "FRAUD_MLFLOW_ARTIFACT_ROOT",
    "FRAUD_DATA_DIR",
)
_STORE = ("FRAUD_FEATURE_STORE_DIR", "FRAUD_FEAST_CONFIG", "FRAUD_FEAST_PROJECT")


def _yaml(path: Path, content: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def _task_runs(flow_run_id, expected: tuple[str, ...] = ("gates",)) -> dict:  # type: ignore[no-untyped-def]
    """The flow run's task runs by task name ("gates-5f4" -> "gates"), once ``expected`` are all
    recorded in a final state: Prefect 3 sends task run states to the API in the background, so a
    busy machine can read them a moment after the flow has returned."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        named = {run.name.rsplit("-", 1)[0]: run for run in runs}
        settled = all(
            name in named and named[name].state and named[name].state.is_final() for name in expected
        )
        if settled or time.monotonic() > deadline:
            return named
        time.sleep(0.5)


@pytest.fixture(scope="module")
def runs(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    from fraud_detection.data.simulator import SimulatorConfig
    from fraud_detection.pipelines.training_flow import TrainingFlowParameters, training_flow

    root = tmp_path_factory.mktemp("training_flow")
    data_dir = root / "data"
    config = write_training_config(root / "train.yaml", data_dir / "raw" / "simulator")
    base = TrainingFlowParameters(
        data_dir=data_dir,
        simulator=SimulatorConfig(**SMALL_SIM),
        training_config=config,
        evaluation_config=_yaml(root / "strict.yaml", STRICT),
        train_start=dt.date(2018, 5, 6),
        as_of=AS_OF,
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in (*_ISOLATED, *_STORE):
            patch.delenv(name, raising=False)
        failed = training_flow(base, return_state=True)
        lenient = base.model_copy(update={"evaluation_config": _yaml(root / "lenient.yaml", LENIENT)})
        passed = training_flow(lenient, return_state=True)
    return {"root": root, "data_dir": data_dir, "failed": failed, "passed": passed}


def _client(data_dir: Path):  # type: ignore[no-untyped-def]
    import mlflow

    uri = f"sqlite:///{(data_dir / 'mlflow' / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient()


def test_a_failed_gate_fails_the_flow_once_and_promotes_nothing(runs: dict) -> None:
    from fraud_detection.errors import ModelGateFailed

    state = runs["failed"]
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ModelGateFailed)
    assert f"models:/{MODEL}/1" in str(error) and "performance_floor" in str(error)
    # A gate failure is never retried: the gates task has no retries, and the flow fails at once.
    from fraud_detection.pipelines.training_flow import gates, promote

    assert gates.retries == 0 and promote.retries > 0
    # Registered as challenger, its failed gates recorded; it never became champion (run 2 did).
    version = _client(runs["data_dir"]).get_model_version(MODEL, "1")
    assert version.tags["gates_passed"] == "false" and "performance_floor" in version.tags["gate_failures"]


def test_the_flow_registers_evaluates_and_promotes(runs: dict) -> None:
    from fraud_detection.training.dataset import read_training_table
    from fraud_detection.training.lifecycle import read_run_summary

    state = runs["passed"]
    assert state.is_completed()
    summary = state.result()
    assert (summary.version, summary.champion, summary.gates_passed) == ("2", "2", True)
    assert [s.stage for s in summary.stages] == [
        "simulate",
        "validate",
        "build features",
        "feast apply",
        "feast materialize",
        "training set",
        "train + register",
        "evaluate",
        "gates",
        "promote",
    ]
    assert summary.metrics["eval_average_precision"] > 0
    tasks = _task_runs(state.state_details.flow_run_id, ("gates", "promote", "write-summary"))
    assert all(run.state.is_completed() and run.run_count == 1 for run in tasks.values())

    client = _client(runs["data_dir"])
    aliases = client.get_registered_model(MODEL).aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {"champion": "2", "challenger": "2"}
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["gates_passed"] == "true" and tags["run_id"] == summary.run_id
    assert len(tags["bundle_sha256"]) == 64

    paths = summary.paths
    assert Path(paths["model report"]).is_file() and Path(paths["model report"]).name == "report.html"
    assert Path(paths["validated data"]).is_file()
    assert Path(paths["feature store"]).is_dir() and Path(paths["model bundle"]).is_dir()
    assert read_run_summary(Path(paths["summary"])) == summary
    table = read_training_table(Path(paths["training set"]))
    assert len(table.frame) == json.loads(Path(paths["validated data"]).read_text())["rows"]
    assert set(table.feature_names) <= set(table.frame.columns)


def test_retries_are_for_io_tasks_and_io_errors_only() -> None:
    from fraud_detection.errors import DataContractError, DataQualityError, ModelGateFailed, StorageError
    from fraud_detection.pipelines import training_flow as flow_module

    never_retried = ("validate", "build_features", "training_set", "tune", "train", "evaluate", "gates")
    assert all(getattr(flow_module, name).retries == 0 for name in never_retried)
    io_tasks = ("simulate", "feast_apply", "feast_materialize", "promote", "write_summary")
    assert all(getattr(flow_module, name).retries == 2 for name in io_tasks)

    class Failed:
        def __init__(self, error: BaseException) -> None:
            self.data = error

    assert flow_module.transient(None, None, Failed(StorageError("MLflow down")))
    for error in (DataQualityError(["volume"]), DataContractError("bad"), ModelGateFailed("m", ["x"])):
        assert not flow_module.transient(None, None, Failed(error))


def test_the_gate_task_lists_every_failure() -> None:
    from fraud_detection.errors import ModelGateFailed
    from fraud_detection.pipelines.training_flow import gates
    from fraud_detection.training.lifecycle import EvaluatedModel

    evaluated = EvaluatedModel(
        model_uri="models:/m/3",
        version="3",
        passed=False,
        failures=["performance_floor: AP 0.1", "latency: p99 9 ms"],
        gates={"performance_floor": False, "latency": False},
        metrics={},
        report_path="r",
        evidence_path="e",
        run_id=None,
    )
    with pytest.raises(ModelGateFailed, match="failed 2 promotion gate") as raised:
        gates.fn(evaluated)
    assert raised.value.failures == evaluated.failures
    gates.fn(evaluated.model_copy(update={"passed": True, "failures": []}))


def test_the_validate_task_publishes_the_report_then_fails(tmp_path: Path, simulator_contract) -> None:
    from fraud_detection.errors import DataContractError
    from fraud_detection.pipelines.training_flow import validate

    bad = make_transactions(500)
    bad.loc[3, "amount"] = -1.0
    source = tmp_path / "transactions.parquet"
    bad.to_parquet(source)
    with pytest.raises(DataContractError):
        validate.fn(str(source), simulator_contract, tmp_path / "out", AS_OF)
    report = json.loads((tmp_path / "out" / "quality_report.json").read_text())
    assert report["schema_passed"] is False and not (tmp_path / "out" / "manifest.json").exists()


def test_a_training_set_round_trips_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    from fraud_detection.errors import DataIntegrityError
    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.training.dataset import TrainingTable, read_training_table, write_training_table
    from tests.conftest import REPO_ROOT

    table = TrainingTable(
        frame=make_transactions(200),
        feature_config=load_feature_config(REPO_ROOT / "configs" / "features" / "default.yaml"),
        feature_names=("amount",),
        protected=("customer_age_band",),
        source="memory",
        content_digest="sha256:abc",
        quality={"passed": True},
    )
    folder = write_training_table(table, tmp_path / "set")
    read = read_training_table(folder)
    assert read.frame.equals(table.frame) and read.feature_config == table.feature_config
    assert (read.feature_names, read.protected, read.content_digest) == (
        ("amount",),
        ("customer_age_band",),
        "sha256:abc",
    )
    make_transactions(200, seed=1).to_parquet(folder / "training_table.parquet")
    with pytest.raises(DataIntegrityError, match="does not match the sha256"):
        read_training_table(folder)
