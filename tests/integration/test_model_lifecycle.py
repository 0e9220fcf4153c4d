"""``fraud train/score/models/promote/rollback`` end to end with a real MLflow (SQLite, then PostgreSQL).

One module-scoped MLflow store: two versions are trained and registered once, then each test
reads the store or moves aliases on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, require_service, write_training_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRAUD = Path(sys.executable).parent / "fraud"
MODEL = "fraud-test"


def fraud(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("FRAUD_", "MLFLOW_"))}
    return subprocess.run(
        [str(FRAUD), "--log-level", "WARNING", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


LENIENT = {
    "n_boot": 20,
    "shap_sample": 200,
    "gates": {"min_average_precision": 0.0, "min_roc_auc": 0.0, "max_latency_p99_ms": 1000.0},
}
STRICT = {**LENIENT, "gates": {**LENIENT["gates"], "min_average_precision": 0.99}}


def write_eval_config(path: Path, content: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lifecycle(small_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two registered versions trained on 2018-05-06 .. 05-12, each evaluated (gates passed) on its
    held-out week 05-20 .. 05-26."""
    root = tmp_path_factory.mktemp("lifecycle")
    env = {"FRAUD_DATA_DIR": str(root / "data")}
    config = write_training_config(root / "train.yaml", small_raw)
    window = ["--train-start", "2018-05-06"]
    first = ok(
        fraud("train", "--config", str(config), *window, "--register", "--out", str(root / "v1"), env=env)
    )
    second = ok(
        fraud(
            "train",
            "--config",
            str(config),
            *window,
            "--no-folds",
            "--register",
            "--set",
            "model.xgboost.max_depth=2",
            "--out",
            str(root / "v2"),
            env=env,
        )
    )
    lenient = write_eval_config(root / "lenient.yaml", LENIENT)
    for version in ("1", "2"):
        ok(
            fraud(
                "evaluate",
                f"models:/{MODEL}/{version}",
                "--config",
                str(config),
                "--eval-config",
                str(lenient),
                env=env,
            )
        )
    return {"root": root, "env": env, "config": config, "outputs": (first, second), "lenient": lenient}


def test_a_failing_gate_refuses_promotion_and_moves_nothing(lifecycle: dict) -> None:
    env, config = lifecycle["env"], str(lifecycle["config"])
    strict = write_eval_config(lifecycle["root"] / "strict.yaml", STRICT)
    client = _client(lifecycle)
    before = dict(client.get_registered_model(MODEL).aliases)
    evaluated = fraud(
        "evaluate", f"models:/{MODEL}/2", "--config", config, "--eval-config", str(strict), env=env
    )
    assert evaluated.returncode == 1
    assert "performance_floor" in evaluated.stderr and "Traceback" not in evaluated.stderr
    refused = fraud("promote", "2", "--name", MODEL, env=env)
    assert refused.returncode == 1
    assert "failed 1 promotion gate(s)" in refused.stderr and "performance_floor" in refused.stderr
    assert dict(client.get_registered_model(MODEL).aliases) == before  # nothing moved
    assert client.get_model_version(MODEL, "2").tags["gates_passed"] == "false"
    # Evidence on disk: the report and the JSON beside it.
    evidence = lifecycle["root"] / "data" / "evaluations" / f"{MODEL}-v2"
    assert (evidence / "report.html").is_file() and (evidence / "evaluation.json").is_file()
    # Re-evaluated within the gates, it may move again (the next test promotes it).
    ok(
        fraud(
            "evaluate",
            f"models:/{MODEL}/2",
            "--config",
            config,
            "--eval-config",
            str(lifecycle["lenient"]),
            env=env,
        )
    )
    assert client.get_model_version(MODEL, "2").tags["gates_passed"] == "true"


def _client(lifecycle: dict):  # type: ignore[no-untyped-def]
    import mlflow

    uri = f"sqlite:///{(lifecycle['root'] / 'data' / 'mlflow' / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient()


def test_tracking_lives_under_the_data_folder_not_the_working_directory(lifecycle: dict) -> None:
    data = lifecycle["root"] / "data"
    assert (data / "mlflow" / "mlflow.db").is_file()
    assert (data / "mlflow" / "artifacts").is_dir()
    assert not (REPO_ROOT / "mlflow.db").exists() and not (REPO_ROOT / "mlruns").exists()


def test_a_training_run_logs_config_lineage_metrics_plots_model_and_lock_file(lifecycle: dict) -> None:
    client = _client(lifecycle)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    run = runs[0]
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert len(tags["git_commit"]) >= 40 or tags["git_commit"] == "unknown"
    assert tags["data_digest"].startswith("sha256:")
    assert tags["feature_service"] == "fraud_v1"
    assert params["model.max_depth"] == "3" and params["seed"] == "0"
    assert int(params["train_rows"]) > 0 and int(params["data_frauds"]) > 0
    assert {"train_start", "train_end"} <= set(params)
    assert {"test_average_precision_mean", "test_roc_auc_mean", "test_card_precision_at_100_mean"} <= set(
        metrics
    )
    history = client.get_metric_history(run.info.run_id, "fold_test_average_precision")
    assert [point.step for point in history] == [0, 1]  # one value per prequential fold
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.digest == tags["data_digest"].split(":")[1][:32]
    assert dataset.source_type == "local"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "plots", "environment"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/feature_importance.png",
        "plots/pr_curve.png",
    }
    assert [a.path for a in client.list_artifacts(run.info.run_id, "environment")] == ["environment/uv.lock"]
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config/training.json")).read_text())
    assert config["model"]["xgboost"]["max_depth"] == 3
    # The model: a signature over the features in bundle order, and an input example.
    import mlflow

    version = client.get_model_version(MODEL, "1")
    info = mlflow.models.get_model_info(f"models:/{MODEL}/1")
    assert [spec.name for spec in info.signature.inputs.inputs][:3] == [
        "amount",
        "tx_during_weekend",
        "tx_during_night",
    ]
    assert info.saved_input_example_info is not None
    assert version.tags["bundle_sha256"] == tags["bundle_sha256"]
    assert version.tags["run_id"] == run.info.run_id


def test_pyfunc_model_answers_probabilities(lifecycle: dict) -> None:
    import mlflow
    import numpy as np

    _client(lifecycle)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    names = [spec.name for spec in model.metadata.get_input_schema().inputs]
    rows = pd.DataFrame(np.zeros((3, len(names)), dtype=np.float32), columns=names)
    scores = np.asarray(model.predict(rows))
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()  # probabilities, not labels


def test_registry_aliases_promote_and_roll_back(lifecycle: dict) -> None:
    env = lifecycle["env"]
    client = _client(lifecycle)
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    assert "was none" in ok(fraud("promote", "1", "--name", MODEL, env=env))
    assert "was 1" in ok(fraud("promote", "2", "--name", MODEL, env=env))
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert "from version 2 to version 1" in ok(fraud("rollback", "--name", MODEL, env=env))
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    # The rolled-back version was also the challenger: a bare `fraud promote` must not restore it.
    assert "challenger" not in client.get_registered_model(MODEL).aliases
    refused = fraud("rollback", "--name", MODEL, env=env)
    assert refused.returncode == 2 and "no previous champion" in refused.stderr
    listing = ok(fraud("models", "--name", MODEL, env=env))
    assert "champion" in listing and "challenger" not in listing
    missing = fraud("promote", "9", "--name", MODEL, env=env)
    assert missing.returncode == 2 and "not in the registry" in missing.stderr


def test_score_by_registry_uri_and_by_bundle_path_agree(lifecycle: dict, small_raw: Path) -> None:
    root, env = lifecycle["root"], lifecycle["env"]
    by_uri, by_path = root / "by_uri.parquet", root / "by_path.parquet"
    ok(
        fraud(
            "score", "--model", f"models:/{MODEL}/1", "--input", str(small_raw), "--out", str(by_uri), env=env
        )
    )
    ok(fraud("score", "--model", str(root / "v1"), "--input", str(small_raw), "--out", str(by_path), env=env))
    registry_scores, path_scores = pd.read_parquet(by_uri), pd.read_parquet(by_path)
    assert list(registry_scores.columns) == ["transaction_id", "score", "decision", "model_version"]
    assert (registry_scores["model_version"] == "1").all()
    assert path_scores["model_version"].iloc[0].startswith("bundle-")
    pd.testing.assert_series_equal(registry_scores["score"], path_scores["score"])
    assert registry_scores["decision"].isin([0, 1]).all()


def test_a_swapped_bundle_in_the_registry_is_refused(lifecycle: dict, small_raw: Path) -> None:
    """Replace version 2's bundle (manifest rewritten too) with version 1's: the tag catches it."""
    import mlflow

    client = _client(lifecycle)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2")) / "artifacts" / "bundle"
    backup = lifecycle["root"] / "backup"
    shutil.copytree(local, backup)
    try:
        shutil.rmtree(local)
        shutil.copytree(lifecycle["root"] / "v1", local)
        result = fraud(
            "score",
            "--model",
            f"models:/{MODEL}/2",
            "--input",
            str(small_raw),
            "--out",
            str(lifecycle["root"] / "x.parquet"),
            env=lifecycle["env"],
        )
        assert result.returncode != 0
        assert "digest" in result.stderr and "Traceback" not in result.stderr
        assert not (lifecycle["root"] / "x.parquet").exists()
    finally:
        shutil.rmtree(local)
        shutil.copytree(backup, local)
    assert client.get_model_version(MODEL, "2").tags["bundle_sha256"]


def test_bad_model_uri_is_a_clear_usage_error(lifecycle: dict, small_raw: Path) -> None:
    result = fraud(
        "score",
        "--model",
        "models:/only-a-name",
        "--input",
        str(small_raw),
        "--out",
        str(lifecycle["root"] / "y.parquet"),
        env=lifecycle["env"],
    )
    assert result.returncode == 2
    assert "expected models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder" in result.stderr


def test_as_of_sets_the_data_checks_reference_time(lifecycle: dict, small_raw: Path) -> None:
    # a reference time before the data makes every row future-dated: the checks use it, not the clock
    root, env = lifecycle["root"], lifecycle["env"]
    config = write_training_config(root / "as_of.yaml", small_raw)
    scored = fraud(
        "score", "--model", str(root / "v1"), "--input", str(small_raw), "--out", str(root / "z.parquet"),
        "--as-of", "2018-04-15", env=env,
    )  # fmt: skip
    assert scored.returncode == 1 and "future" in scored.stderr, scored.stderr
    assert not (root / "z.parquet").exists()
    trained = fraud("train", "--config", str(config), "--no-track", "--as-of", "2018-04-15", env=env)
    assert trained.returncode == 1 and "future" in trained.stderr, trained.stderr


def _postgres_database() -> str | None:
    """A fresh database on the loopback PostgreSQL, or None when it is not running."""
    try:
        import psycopg

        name = f"fraud_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=2
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name
    except Exception:  # any connection failure means: service absent
        return None


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_tracking_and_registry_on_postgresql(small_raw: Path, tmp_path: Path) -> None:
    database = _postgres_database()
    require_service(database is not None, "PostgreSQL on 127.0.0.1:5432 is not reachable")
    assert database is not None
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env = {"FRAUD_MLFLOW_TRACKING_URI": url, "FRAUD_DATA_DIR": str(tmp_path / "data")}
        config = write_training_config(tmp_path / "train.yaml", small_raw)
        ok(
            fraud(
                "train",
                "--config",
                str(config),
                "--no-folds",
                "--register",
                "--out",
                str(tmp_path / "b"),
                env=env,
            )
        )
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            versions = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
        assert (runs, versions) == (1, 1)
        assert not (tmp_path / "data" / "mlflow" / "mlflow.db").exists()
        # Artifacts under the data folder, never MLflow's default ./mlruns in the working directory.
        assert list((tmp_path / "data" / "mlflow" / "artifacts").rglob("MLmodel"))
        assert not (REPO_ROOT / "mlruns").exists()
    finally:
        _drop_database(database)


def test_two_tuning_workers_share_one_study_on_postgresql(small_raw: Path, tmp_path: Path) -> None:
    database = _postgres_database()
    require_service(database is not None, "PostgreSQL on 127.0.0.1:5432 is not reachable")
    assert database is not None
    try:
        storage = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        config = write_training_config(tmp_path / "train.yaml", small_raw)
        args = [
            str(FRAUD),
            "--log-level",
            "WARNING",
            "tune",
            "--config",
            str(config),
            "--no-track",
            "--trials",
            "2",
            "--set",
            f"search.storage={storage}",
            "--set",
            "search.study_name=shared",
        ]
        env = {key: value for key, value in os.environ.items() if not key.startswith("FRAUD_")}
        workers = [
            subprocess.Popen(
                args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [worker.communicate(timeout=300) for worker in workers]
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, f"{out}\n{err}"
        import optuna

        study = optuna.load_study(study_name="shared", storage=storage)
        assert len(study.trials) == 4
        assert len({trial.number for trial in study.trials}) == 4
    finally:
        _drop_database(database)


def test_an_unreachable_tracking_store_is_one_line_and_fails_fast(tmp_path: Path) -> None:
    env = {"FRAUD_MLFLOW_TRACKING_URI": "postgresql+psycopg://postgres:secret@127.0.0.1:9/none"}
    result = fraud("models", "--name", MODEL, env=env)
    assert result.returncode == 2
    assert "is unreachable" in result.stderr and "Traceback" not in result.stderr
    assert "secret" not in result.stderr  # the password is redacted
