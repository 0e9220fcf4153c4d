"""Shadow mode: a challenger scores what the champion answered, off the request path, and only the
prediction log sees its scores."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import xgboost as xgb
from prometheus_client import REGISTRY

from fraud_detection.data.contract import load_contract
from fraud_detection.features import store
from fraud_detection.features.engineering import load_feature_config
from fraud_detection.inference.requests import ScoreParameters
from fraud_detection.inference.server import ServingSettings, make_service
from fraud_detection.models.bundle import load_bundle, save_bundle
from tests.serving_support import FEATURE_CONFIG_PATH, REPO_ROOT, ServingWorld, v1_body

pytestmark = pytest.mark.integration


def challenger_bundle(world: ServingWorld, out: Path) -> Path:
    """The champion's features and settings, different trees (so its scores differ)."""
    champion = load_bundle(world.bundle_dir)
    names = list(champion.feature_names)
    tx = world.transactions
    rng = np.random.default_rng(1)
    matrix = xgb.DMatrix(
        rng.random((500, len(names)), dtype=np.float32), label=rng.integers(0, 2, 500), feature_names=names
    )
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic", "seed": 1, "nthread": 1}, matrix, 5)
    assert len(tx)
    save_bundle(dataclasses.replace(champion, booster=booster), out)
    return out


def service_with_shadow(world: ServingWorld, shadow_dir: Path, events: Path, **settings: object):  # type: ignore[no-untyped-def]
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=world.store_dir),
        world.feature_dir,
        load_feature_config(FEATURE_CONFIG_PATH),
    )
    return make_service(
        str(world.bundle_dir),
        ServingSettings(shadow_model=str(shadow_dir), **settings),
        contract=load_contract("simulator", REPO_ROOT / "configs" / "contract"),
        store=handle,
        events_dir=events,
    )


def read_events(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("events-*.parquet"))], ignore_index=True)


def test_shadow_scores_are_logged_beside_the_answers_and_never_answered(
    serving_world: ServingWorld, tmp_path: Path
) -> None:
    shadow_dir = challenger_bundle(serving_world, tmp_path / "challenger")
    service = service_with_shadow(serving_world, shadow_dir, tmp_path / "events")
    rows = serving_world.rows(40)
    shadow = load_bundle(shadow_dir)

    async def run() -> list[float]:
        await service.start()
        answers = await asyncio.gather(
            *(
                service.score(
                    service.decoder.decode_v1(orjson.dumps(v1_body([row])))[0], ScoreParameters(), f"r{i}"
                )
                for i, row in enumerate(rows)
            )
        )
        return [float(scores.probability[0]) for _, scores in answers]

    answered = asyncio.run(run())
    service.close()  # waits for the shadow thread, then writes the log

    events = read_events(tmp_path / "events")
    served = events[~events["shadow"]].set_index("request_id").loc[[f"r{i}" for i in range(len(rows))]]
    shadowed = events[events["shadow"]].set_index("request_id").loc[[f"r{i}" for i in range(len(rows))]]
    assert served["score"].tolist() == answered  # the answers are the champion's
    assert (served["transaction_id"].to_numpy() == shadowed["transaction_id"].to_numpy()).all()
    assert (shadowed["model_version"] == service.shadow_model.scorer.version).all()
    assert shadowed["model_version"].iloc[0] != served["model_version"].iloc[0]
    # the shadow saw the very same feature vectors and scored them with its own trees
    feature_columns = [c for c in events.columns if c.startswith("f_")]
    np.testing.assert_array_equal(shadowed[feature_columns].to_numpy(), served[feature_columns].to_numpy())
    expected = shadow.predict_proba(served[feature_columns].to_numpy(np.float32))
    np.testing.assert_allclose(shadowed["score"].to_numpy(), expected, rtol=1e-6)
    assert not np.allclose(shadowed["score"].to_numpy(), served["score"].to_numpy())


def test_a_slow_shadow_adds_no_latency_and_skips_what_it_cannot_take(
    serving_world: ServingWorld, tmp_path: Path, monkeypatch
) -> None:
    shadow_dir = challenger_bundle(serving_world, tmp_path / "challenger")
    service = service_with_shadow(
        serving_world, shadow_dir, tmp_path / "events", shadow_max_pending=2, batch_wait_ms=-1
    )
    skipped_before = REGISTRY.get_sample_value("fraud_shadow_skipped_total") or 0.0
    row = serving_world.rows(1)

    async def run() -> list[float]:
        await service.start()
        slow = service.shadow_model.scorer
        original = slow.score_features

        def stuck(features):  # type: ignore[no-untyped-def]
            time.sleep(0.5)
            return original(features)

        monkeypatch.setattr(slow, "score_features", stuck)
        latencies = []
        for i in range(6):
            started = time.perf_counter()
            await service.score(
                service.decoder.decode_v1(orjson.dumps(v1_body(row)))[0], ScoreParameters(), f"r{i}"
            )
            latencies.append(time.perf_counter() - started)
        return latencies

    latencies = asyncio.run(run())
    service.close()

    assert max(latencies) < 0.25, latencies  # never waited for the 0.5 s shadow
    skipped = (REGISTRY.get_sample_value("fraud_shadow_skipped_total") or 0.0) - skipped_before
    assert skipped >= 3  # six requests, two slots, each shadow call 0.5 s
    events = read_events(tmp_path / "events")
    assert (~events["shadow"]).sum() == 6
    assert 1 <= events["shadow"].sum() <= 3


def test_a_shadow_that_cannot_load_leaves_serving_alone(serving_world: ServingWorld, tmp_path: Path) -> None:
    service = service_with_shadow(serving_world, tmp_path / "no-such-bundle", tmp_path / "events")

    async def run() -> float:
        await service.start()
        _, scores = await service.score(
            service.decoder.decode_v1(orjson.dumps(v1_body(serving_world.rows(1))))[0], ScoreParameters(), "r"
        )
        return float(scores.probability[0])

    assert 0.0 <= asyncio.run(run()) <= 1.0
    assert service.ready and service.shadow_model.scorer is None
    service.close()
