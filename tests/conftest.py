"""Shared fixtures: tiny seeded synthetic data, contracts, and the service switch."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = REPO_ROOT / "configs" / "contract"
HANDBOOK_RAW = (
    REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "raw" / "transactions_raw.parquet"
)
AS_OF = dt.datetime(2030, 1, 1)  # after every synthetic timestamp; tests never depend on "now"


def require_service(available: bool, reason: str) -> None:
    """Skip when a service is absent, except in CI (FRAUD_REQUIRE_SERVICES=1), where it fails."""
    if available:
        return
    if os.environ.get("FRAUD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def make_transactions(
    n: int = 2_000, fraud_rate: float = 0.01, seed: int = 0, *, n_days: int = 20, start: str = "2024-01-01"
) -> pd.DataFrame:
    """A small valid frame in the simulator contract's canonical layout, spread evenly over days."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, n_days * 86_400, size=n))
    is_fraud = (rng.random(n) < fraud_rate).astype(np.int64)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "event_timestamp": (pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s")).astype(
                "datetime64[us]"
            ),
            "customer_id": rng.integers(0, 100, size=n).astype(np.int64),
            "terminal_id": rng.integers(0, 200, size=n).astype(np.int64),
            "amount": np.round(rng.gamma(2.0, 25.0, size=n), 2),
            "is_fraud": is_fraud,
            "fraud_scenario": is_fraud * rng.integers(1, 4, size=n),
            "customer_age_band": rng.choice(["18-25", "26-35", "36-50", "51-65", "65+"], size=n).astype(
                object
            ),
        }
    )


@pytest.fixture
def transactions_factory() -> Callable[..., pd.DataFrame]:
    return make_transactions


@pytest.fixture
def transactions() -> pd.DataFrame:
    return make_transactions()


@pytest.fixture(scope="session")
def simulator_contract():
    from fraud_detection.data.contract import load_contract

    return load_contract("simulator", CONTRACTS_DIR)


@pytest.fixture(scope="session")
def handbook_contract():
    from fraud_detection.data.contract import load_contract

    return load_contract("handbook", CONTRACTS_DIR)


_TIERS = {"unit", "integration", "model"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one tier, so `-m unit|integration|model` partitions the suite."""
    untiered = [item.nodeid for item in items if len(_TIERS & {m.name for m in item.iter_markers()}) != 1]
    if untiered:
        raise pytest.UsageError(f"tests without exactly one tier marker {sorted(_TIERS)}: {untiered[:5]}")


# --- training: a small simulated dataset and configs pointing at it ---------------------------------

SMALL_SIM = {"n_customers": 600, "n_terminals": 1200, "n_days": 63, "seed": 0}


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """63 simulated days (~73k transactions) as a raw dataset folder, written once per worker."""
    from fraud_detection.data.ingest import simulate_to_folder
    from fraud_detection.data.simulator import SimulatorConfig

    out = tmp_path_factory.mktemp("small_raw") / "raw"
    simulate_to_folder(SimulatorConfig(**SMALL_SIM), out)
    return out


def training_config(source: Path, **sections: dict) -> dict:
    """A training config (as a dict) for the small dataset: 2 validation and 2 test folds."""
    config = {
        "experiment": "tests",
        "registered_model": "fraud-test",
        "data": {"source": str(source), "contract": str(CONTRACTS_DIR / "simulator.yaml")},
        "features": {"config": str(REPO_ROOT / "configs" / "features" / "default.yaml")},
        "split": {
            "validation": {"latest_train_start": "2018-04-22", "n_folds": 2},
            "test": {"latest_train_start": "2018-05-06", "n_folds": 2},
        },
        "model": {
            "type": "xgboost",
            "xgboost": {
                "n_estimators": 30,
                "max_depth": 3,
                "learning_rate": 0.3,
                # The behaviour gate's directions, enforced (see evaluation.behaviour.RISK_INCREASING).
                "monotone_increasing": [
                    "terminal_risk_1d",
                    "terminal_risk_7d",
                    "customer_amount_ratio_30d",
                    "customer_nb_outlier_amounts_7d",
                    "terminal_known_fraud_streak_count",
                ],
            },
        },
        "search": {
            "n_trials": 3,
            "space": {
                "max_depth": {"type": "int", "low": 2, "high": 4},
                "learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
            },
        },
    }
    for name, value in sections.items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, dict) else value
    return config


def write_training_config(path: Path, source: Path, **sections: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(training_config(source, **sections)), encoding="utf-8")
    return path


# --- model tests: the model under test (tests/model); here, since only this conftest is loaded early
# enough for `pytest tests --model-uri ...` to accept the options ---------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("model", "model behaviour tests (tests/model)")
    group.addoption(
        "--model-uri",
        default=None,
        help="model to test: models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder "
        "(default: a small model trained on the test data)",
    )
    group.addoption(
        "--champion-uri",
        default=None,
        help="champion to compare --model-uri with in the no-regression test (default: the model "
        "retrained with another seed)",
    )


# --- serving: one small served world (bundle + materialised online store) per test worker ----------


@pytest.fixture(scope="session")
def serving_world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.serving_support import build_world

    return build_world(tmp_path_factory.mktemp("serving"))
