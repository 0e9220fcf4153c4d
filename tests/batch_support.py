"""What the batch inference tests share: raw + feature folders over a frame of transactions, specs,
and a child-process entry point for crash tests (killed with SIGKILL at a named commit step).

The model is the serving world's small bundle (``tests/serving_support.build_world``): batch and
online scoring use one bundle format and one scorer.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tests.conftest import AS_OF, CONTRACTS_DIR, make_transactions

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_CONFIG_PATH = REPO_ROOT / "configs" / "features" / "default.yaml"


@dataclass(frozen=True)
class BatchWorld:
    root: Path
    raw_dir: Path
    features_dir: Path
    bundle_dir: Path
    transactions: pd.DataFrame

    def spec(self, out_dir: Path, date: dt.date, **overrides: object):  # type: ignore[no-untyped-def]
        from fraud_detection.inference.batch import BatchSpec, default_logical_time
        from fraud_detection.utils.retry import RetryPolicy

        fields = {
            "raw_dir": self.raw_dir,
            "date": date,
            "features_dir": self.features_dir,
            "out_dir": out_dir,
            "logical_time": default_logical_time(date),
            "retry": RetryPolicy(attempts=4, backoff_s=0.0),
            **overrides,
        }
        return BatchSpec(**fields)


def write_batch_inputs(root: Path, transactions: pd.DataFrame, bundle_dir: Path) -> BatchWorld:
    """``transactions`` as a raw dataset (daily partitions) plus the feature tables built from it
    by ``fraud features build``'s own function."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.data.raw_store import write_raw_dataset
    from fraud_detection.features.build import build_feature_tables
    from fraud_detection.features.engineering import load_feature_config

    contract = load_contract("simulator", CONTRACTS_DIR)
    raw_dir, features_dir = root / "raw", root / "features"
    write_raw_dataset(raw_dir, transactions, contract_name=contract.name)
    build_feature_tables(
        raw_dir, contract, load_feature_config(FEATURE_CONFIG_PATH), features_dir, as_of=AS_OF
    )
    return BatchWorld(root, raw_dir, features_dir, bundle_dir, transactions)


def one_day_transactions(n: int, day: str = "2018-09-30", n_customers: int = 20_000) -> pd.DataFrame:
    """``n`` valid transactions on one day, spread over ``n_customers`` cards."""
    frame = make_transactions(n, seed=7, n_days=1, start=day)
    frame["customer_id"] = frame.index.to_numpy() * 7919 % n_customers
    return frame


def contract():  # type: ignore[no-untyped-def]
    from fraud_detection.data.contract import load_contract

    return load_contract("simulator", CONTRACTS_DIR)


def run_child(
    spec_json: str,
    bundle_dir: str,
    crash_at: str | None = None,
    hold_at: str | None = None,
    release: str = "",
) -> None:
    """A batch run in a child process: SIGKILLs itself when the commit reaches step ``crash_at``;
    at step ``hold_at`` it waits (holding the partition's lock) until the file ``release`` exists."""
    import time

    from fraud_detection.inference.batch import BatchSpec, run_batch
    from fraud_detection.models.registry import resolve_model

    def checkpoint(step: str) -> None:
        if step == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == hold_at:
            deadline = time.monotonic() + 60
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    spec = BatchSpec.model_validate_json(spec_json)
    run_batch(spec, resolve_model(bundle_dir), contract(), checkpoint=checkpoint)


_WORLDS: dict[str, BatchWorld] = {}


def small_world(tmp_path_factory, serving_world) -> BatchWorld:  # type: ignore[no-untyped-def]
    """The serving world's 40 simulated days (~340 rows a day) as raw + feature folders, once per worker."""
    if "small" not in _WORLDS:
        root = tmp_path_factory.mktemp("batch_small")
        _WORLDS["small"] = write_batch_inputs(root, serving_world.transactions, serving_world.bundle_dir)
    return _WORLDS["small"]
