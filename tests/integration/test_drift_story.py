"""The drift story end to end at test size (``fraud drift-story --small``), one run shared by the tests:
drift flagged within a day of the new fraud pattern and not before, decay flagged once labels arrive,
the retrained challenger wins its A/B test in shadow and is promoted, a worse challenger is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CONTRACTS_DIR, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURE_CONFIG = REPO_ROOT / "configs" / "features" / "default.yaml"


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fraud_detection.data.contract import load_contract
    from fraud_detection.monitoring.story import run_drift_story, small_story_config

    out = tmp_path_factory.mktemp("drift-story") / "story"
    return run_drift_story(
        out,
        small_story_config(),
        contract=load_contract("simulator", CONTRACTS_DIR),
        feature_config_path=FEATURE_CONFIG,
    )


def _alerts(story, day: int) -> set[str]:  # type: ignore[no-untyped-def]
    return set(next(row for row in story.timeline if row.day == day).alerts)


def test_drift_is_flagged_within_one_day_of_the_new_pattern_and_not_before(story) -> None:
    n = story.drift_day
    served_before = [row for row in story.timeline if row.day < n]
    assert len(served_before) == story.config.days_before_drift
    assert all(not {"data_drift", "score_drift"} & set(row.alerts) for row in served_before)
    assert story.first_drift_alert_day in (n, n + 1)
    # The monitor's own numbers say the same: the drifted share jumps at the drift.
    assert max(row.drift_share for row in served_before) < story.config.monitoring.drift.drift_share
    first = next(row for row in story.timeline if row.day == story.first_drift_alert_day)
    assert first.drift_share >= story.config.monitoring.drift.drift_share


def test_decay_is_flagged_once_the_drifted_days_are_labelled(story) -> None:
    n, delay = story.drift_day, story.config.delay_days
    assert story.first_decay_alert_day is not None
    # Labels of day N are complete at the end of day N + delay: no earlier day can know.
    assert n + delay <= story.first_decay_alert_day < story.retrain_day
    assert all("performance_degraded" not in row.alerts for row in story.timeline if row.day < n + delay)
    # The served answers really got worse after the drift (labels known at the end of the story).
    before = [row.average_precision for row in story.timeline if row.day < n]
    after = [row.average_precision for row in story.timeline if n + 7 <= row.day < story.retrain_day]
    assert sum(after) / len(after) < 0.8 * sum(before) / len(before)


def test_the_retrained_challenger_wins_in_shadow_and_is_promoted(story) -> None:
    assert story.retrain_day == story.config.earliest_retrain_day  # retrained as soon as a week is labelled
    assert story.challenger_promoted
    assert story.final_champion == story.challenger_version != story.champion_version
    ab = story.challenger_ab
    assert ab["significant_win"] is True
    assert ab["average_precision"]["ci_low"] > 0
    # The comparison ran on the shadow days only (the challenger did not exist before).
    assert ab["n_days"] == story.config.shadow_days
    assert "promoted" in story.timeline[-1].action


def test_the_worse_challenger_is_refused_and_the_champion_moved_only_once(story) -> None:
    from mlflow import MlflowClient

    assert story.worse_refused is not None
    assert f"version {story.worse_version} (challenger)" in story.worse_refused
    assert "ab_test:" in story.worse_refused
    client = MlflowClient()  # the story left MLflow pointed at its own store
    model = client.get_registered_model(story.config.registered_model)
    assert str(model.aliases["champion"]) == story.challenger_version
    assert json.loads(model.tags["champion_history"]) == [story.champion_version, story.challenger_version]


def test_the_event_log_and_the_outputs_tell_the_same_story(story) -> None:
    from fraud_detection.monitoring.run import load_prediction_events

    events = load_prediction_events(
        story.outputs["predictions"], pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01")
    )
    shadow = events[events["shadow"]]
    answers = events[~events["shadow"]]
    assert set(answers["model_version"]) == {story.champion_version}
    assert set(shadow["model_version"]) == {story.challenger_version, story.worse_version}
    first_shadow_day = (shadow["event_timestamp"].min() - pd.Timestamp(story.config.start_date)).days
    assert first_shadow_day == story.retrain_day
    # Every shadow row pairs with an answer for the same transaction (scored on the same features).
    assert set(shadow["transaction_id"]) <= set(answers["transaction_id"])
    timeline = pd.read_csv(story.outputs["timeline"])
    assert list(timeline["day"]) == [row.day for row in story.timeline]
    saved = json.loads(Path(story.outputs["story"]).read_text(encoding="utf-8"))
    assert saved["first_drift_alert_day"] == story.first_drift_alert_day
    assert saved["final_champion"] == story.challenger_version


def test_fraud_promote_require_ab_win_on_the_story_registry(story, tmp_path: Path) -> None:
    """The CLI gate on the story's registry and logs: after a rollback to the pre-drift champion, the
    worse challenger is refused (exit 1, aliases untouched) and the retrained one is promoted."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    root = Path(story.outputs["story"]).parent
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FRAUD_", "MLFLOW_"))}
    env["FRAUD_MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"
    env["FRAUD_DATA_DIR"] = str(tmp_path / "data")
    ab_config = tmp_path / "ab.yaml"
    ab_config.write_text("n_resamples: 200\n", encoding="utf-8")
    name = story.config.registered_model
    gate = [
        "--name", name, "--require-ab-win",
        "--events-dir", str(story.outputs["predictions"]),
        "--labels", str(root / "labels" / "labels.parquet"),
        "--ab-config", str(ab_config),
    ]  # fmt: skip

    def fraud(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "fraud"), "--log-level", "ERROR", *args]
        return subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    rolled = fraud("rollback", "--name", name)
    assert rolled.returncode == 0, rolled.stderr
    client = MlflowClient(env["FRAUD_MLFLOW_TRACKING_URI"])
    before = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    assert before["champion"] == story.champion_version

    refused = fraud("promote", story.worse_version, *gate)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "ab_test:" in refused.stderr and "does not clear" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {k: str(v) for k, v in client.get_registered_model(name).aliases.items()} == before

    missing = fraud("promote", story.challenger_version, "--name", name, "--require-ab-win")
    assert missing.returncode == 2 and "--events-dir and --labels" in missing.stderr

    promoted = fraud("promote", story.challenger_version, *gate)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "A/B test passed: average_precision improves" in promoted.stdout
    assert str(client.get_registered_model(name).aliases["champion"]) == story.challenger_version
