"""The ``fraud`` command line: a thin shell over the library.

Each command parses its options, loads config once, calls the library and prints the result.
Heavy imports happen inside commands so ``fraud --help`` stays fast. Errors from the library
(:class:`~fraud_detection.errors.FraudDetectionError`) become one clear line on stderr and a
non-zero exit code; ``--debug`` shows the traceback instead.

Exit codes: 0 success, 1 the data failed (contract, quality gate, integrity), 2 bad usage or input.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from fraud_detection.config import Settings
from fraud_detection.errors import FraudDetectionError

app = typer.Typer(
    name="fraud",
    help="Fraud detection lifecycle: simulate, validate, build features, train, tune, register, score.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

T = TypeVar("T")


class _State:
    debug: bool = False
    settings: Settings | None = None


_state = _State()


def _settings() -> Settings:
    if _state.settings is None:
        _state.settings = Settings()
    return _state.settings


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _exit_on(err: FraudDetectionError) -> NoReturn:
    """Turn one of our errors into one line and its exit code (the traceback with --debug)."""
    if _state.debug:
        raise err
    raise _fail(str(err), err.exit_code) from None


def _utc_naive(moment: dt.datetime | None) -> dt.datetime:
    """A CLI time as naive UTC: an offset is converted (never dropped); none means now."""
    if moment is not None and moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return (moment or dt.datetime.now(dt.UTC)).replace(tzinfo=None, microsecond=0)


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except FraudDetectionError as err:
        _exit_on(err)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal; silent (logs only) otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (default FRAUD_LOG_LEVEL).")
    ] = None,
) -> None:
    """Fraud detection lifecycle on the command line."""
    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.utils.logging import configure_logging

    _state.debug = debug
    try:
        settings = Settings() if log_level is None else Settings(log_level=log_level.upper())
    except ValidationError as err:
        prefix = Settings.model_config["env_prefix"]
        raise _fail(f"invalid settings: {format_validation_error(err, prefix)}", 2) from None
    _state.settings = settings
    configure_logging(settings.log_level, settings.log_json)


class DriftKind(StrEnum):
    amount_shift = "amount_shift"
    new_fraud_pattern = "new_fraud_pattern"


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder for the raw dataset (partitions + manifest).")],
    days: Annotated[int | None, typer.Option(min=1, help="Simulated days \\[default: 183].")] = None,
    customers: Annotated[int | None, typer.Option(min=1, help="Customers (cards) \\[default: 5000].")] = None,
    terminals: Annotated[int | None, typer.Option(min=1, help="Terminals \\[default: 10000].")] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Random seed; same seed, same bytes \\[default: 0].")
    ] = None,
    start_date: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day \\[default: 2018-04-01].")
    ] = None,
    bias_age_band: Annotated[
        str | None, typer.Option(help="Make this age band more often compromised (fairness testing).")
    ] = None,
    bias_factor: Annotated[
        float | None, typer.Option(min=1.0, help="How much more often \\[default: 1].")
    ] = None,
    drift_day: Annotated[
        int | None, typer.Option(min=0, help="Day (0-based) from which behaviour drifts.")
    ] = None,
    drift_kind: Annotated[
        DriftKind | None, typer.Option(help="What drifts \\[default: amount_shift].")
    ] = None,
    drift_amount_factor: Annotated[
        float | None, typer.Option(min=0.0, help="Amount multiplier for amount_shift \\[default: 1.5].")
    ] = None,
) -> None:
    """Simulate labelled card transactions (the Fraud Detection Handbook's design) into --out."""
    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.data.ingest import simulate_to_folder
    from fraud_detection.data.simulator import SimulatorConfig

    if bias_factor is not None and bias_age_band is None:
        raise _fail("--bias-factor needs --bias-age-band (the band it applies to)", 2)
    if (drift_kind is not None or drift_amount_factor is not None) and drift_day is None:
        raise _fail("--drift-kind and --drift-amount-factor need --drift-day (when the drift starts)", 2)
    try:
        # Only what was given is passed: the defaults live once, in SimulatorConfig.
        options = {
            "n_customers": customers,
            "n_terminals": terminals,
            "n_days": days,
            "start_date": start_date.date() if start_date else None,
            "seed": seed,
            "bias_age_band": bias_age_band,
            "bias_factor": bias_factor,
            "drift_start_day": drift_day,
            "drift_kind": drift_kind.value if drift_kind else None,
            "drift_amount_factor": drift_amount_factor,
        }
        config = SimulatorConfig(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as err:
        raise _fail(f"invalid simulation options: {format_validation_error(err)}", 2) from None
    with _progress("writing partitions") as progress:
        result = _run(lambda: simulate_to_folder(config, out, progress=progress))
    manifest = result.manifest
    typer.echo(
        f"simulated {manifest.rows} transactions in {len(manifest.partitions)} daily partitions "
        f"({result.files_written} written, {result.files_unchanged} unchanged)"
    )
    typer.echo(f"manifest: {result.manifest_path}")


class OnErrorChoice(StrEnum):
    fail = "fail"
    quarantine = "quarantine"


@app.command()
def validate(
    path: Annotated[
        str, typer.Argument(help="CSV or parquet file, or a folder of them; local path or fsspec URL.")
    ],
    contract: Annotated[
        str, typer.Option(help="Contract name in FRAUD_CONTRACTS_DIR (simulator, handbook) or a .yaml path.")
    ] = "simulator",
    on_error: Annotated[
        OnErrorChoice,
        typer.Option(help="fail: reject the dataset; quarantine: set bad rows aside, keep the rest."),
    ] = OnErrorChoice.fail,
    out: Annotated[
        Path | None, typer.Option(help="Write the validated data, quarantine, report and manifest here.")
    ] = None,
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(help="Reference time (UTC) for future-timestamp and freshness checks; default now."),
    ] = None,
) -> None:
    """Validate a dataset against its contract and run the quality gate; exit 0 only if it passes."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.errors import DataContractError

    if on_error == OnErrorChoice.quarantine and out is None:
        raise _fail("--on-error quarantine needs --out DIR, where the quarantined rows are written", 2)
    settings = _settings()
    loaded = _run(lambda: load_contract(contract, settings.contracts_dir))
    # Imported after the contract is known good: a usage error should not wait for pandas.
    from fraud_detection.data.ingest import publish, validate_dataset
    from fraud_detection.data.quality import gate

    reference_time = _utc_naive(as_of)
    try:
        with _progress("validating"):
            result = validate_dataset(path, loaded, as_of=reference_time, on_error=on_error.value)
    except DataContractError as err:
        failed_report = err.report
        if failed_report is not None:
            _print_report(failed_report)
            if out is not None:
                typer.echo(f"report: {_run(lambda: publish(failed_report, out))}")
        _exit_on(err)
    except FraudDetectionError as err:
        _exit_on(err)
    _print_report(result.report)
    if out is not None:
        typer.echo(
            f"{'manifest' if result.report.passed else 'report'}: {_run(lambda: publish(result.report, out, result))}"
        )
    _run(lambda: gate(result.report))


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    if report.violations:
        violations = Table(title=f"schema violations (contract {report.contract!r})")
        for column in ("column", "check", "count", "failing values"):
            violations.add_column(column)
        for violation in report.violations:
            values = ", ".join(violation.failing_values)
            violations.add_row(violation.column or "(dataset)", violation.check, str(violation.count), values)
        console.print(violations)
    if report.checks:
        table = Table(title=f"quality checks: {report.source}")
        for column in ("check", "status", "observed"):
            table.add_column(column)
        for check in report.checks:
            status = "PASS" if check.passed else ("WARN" if check.severity == "warning" else "FAIL")
            table.add_row(check.name, status, check.observed)
        console.print(table)
    console.print(
        f"{report.n_input_rows} rows read, {report.n_valid_rows} valid, {report.n_quarantined_rows} quarantined; "
        f"digest {report.content_digest or '-'}"
    )


# --- fraud features: the Feast feature store ------------------------------------------------------

features_app = typer.Typer(
    name="features",
    help="Feature tables and the Feast feature store (FRAUD_FEAST_CONFIG, FRAUD_FEATURE_STORE_DIR).",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")

_FeaturesDir = Annotated[
    Path, typer.Option("--features-dir", help="Feature tables written by `fraud features build --out`.")
]
_FeatureConfigPath = Annotated[Path, typer.Option("--feature-config", help="Feature definitions (YAML).")]


def _open_feature_store(features_dir: Path, feature_config: Path):  # type: ignore[no-untyped-def]
    """Load the feature config and the store settings once, and open the store (heavy imports here)."""
    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.features import store
    from fraud_detection.features.engineering import load_feature_config

    config = _run(lambda: load_feature_config(feature_config))
    try:
        settings = store.FeatureStoreSettings()
    except ValidationError as err:
        prefix = store.FeatureStoreSettings.model_config["env_prefix"]
        raise _fail(f"invalid feature store settings: {format_validation_error(err, prefix)}", 2) from None
    return store, _run(lambda: store.open_store(settings, features_dir, config))


@features_app.command("build")
def features_build(
    raw: Annotated[str, typer.Option("--raw", help="Raw transactions: file, folder or fsspec URL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the parquet feature tables.")],
    contract: Annotated[str, typer.Option(help="Contract name or .yaml path.")] = "simulator",
    feature_config: _FeatureConfigPath = Path("configs/features/default.yaml"),
    as_of: Annotated[
        dt.datetime | None, typer.Option(help="Reference time (UTC) for the data checks; default now.")
    ] = None,
) -> None:
    """Validate raw transactions, compute every point-in-time feature, write the feature tables."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.features.engineering import load_feature_config

    loaded = _run(lambda: load_contract(contract, _settings().contracts_dir))
    config = _run(lambda: load_feature_config(feature_config))
    from fraud_detection.features.build import build_feature_tables

    with _progress("building features"):
        result = _run(lambda: build_feature_tables(raw, loaded, config, out, as_of=_utc_naive(as_of)))
    rows = len(result.tables["transaction"])
    typer.echo(f"built {len(config.feature_names)} features for {rows} transactions")
    typer.echo(f"feature tables: {result.out_dir}")


@features_app.command("apply")
def features_apply(
    features_dir: _FeaturesDir = Path("data/features"),
    feature_config: _FeatureConfigPath = Path("configs/features/default.yaml"),
) -> None:
    """Register the entities, feature views and the fraud_v1 service in the Feast registry."""
    store, handle = _open_feature_store(features_dir, feature_config)
    with handle:
        _run(lambda: store.apply(handle))
    typer.echo(f"applied feature service fraud_v1 to project {handle.feast.project!r}")


@features_app.command("materialize")
def features_materialize(
    end: Annotated[dt.datetime, typer.Option(help="Materialise rows up to this time (UTC).")],
    start: Annotated[
        dt.datetime | None,
        typer.Option(
            help="Window start (UTC). With --incremental: backfill start for never-materialised views."
        ),
    ] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Continue each view from where it last stopped.")
    ] = False,
    features_dir: _FeaturesDir = Path("data/features"),
    feature_config: _FeatureConfigPath = Path("configs/features/default.yaml"),
) -> None:
    """Copy each entity's latest feature row into the online store (explicit window, or incremental)."""
    if not incremental and start is None:
        raise _fail("--start is required unless --incremental is given", 2)
    store, handle = _open_feature_store(features_dir, feature_config)
    with handle:
        if incremental:
            backfilled = _run(lambda: store.materialize_incremental(handle, end, backfill_start=start))
            note = f" (backfilled from {start}: {', '.join(backfilled)})" if backfilled else ""
            typer.echo(f"materialised incrementally up to {end}{note}")
        else:
            assert start is not None
            _run(lambda: store.materialize(handle, start, end))
            typer.echo(f"materialised {start} .. {end}")


@features_app.command("online")
def features_online(
    customer_id: Annotated[int, typer.Option(help="The card (customer) of the transaction.")],
    terminal_id: Annotated[int, typer.Option(help="The terminal of the transaction.")],
    amount: Annotated[float, typer.Option(min=0.0, help="The transaction amount.")],
    timestamp: Annotated[
        dt.datetime | None, typer.Option(help="Transaction time (UTC); default now.")
    ] = None,
    timeout_s: Annotated[
        float,
        typer.Option(min=0.001, help="Deadline before defaults stand in (a first call opens the store)."),
    ] = 2.0,
    features_dir: _FeaturesDir = Path("data/features"),
    feature_config: _FeatureConfigPath = Path("configs/features/default.yaml"),
) -> None:
    """Print the fraud_v1 feature vector the online path serves for one transaction."""
    import json

    store, handle = _open_feature_store(features_dir, feature_config)
    request = store.TransactionRequest(customer_id, terminal_id, amount, _utc_naive(timestamp))
    with handle:
        result = _run(lambda: store.online_features(handle, request, timeout_s=timeout_s))
    typer.echo(
        json.dumps(
            {"features": result.as_dict(), "degraded": result.degraded, "reasons": list(result.reasons)},
            indent=2,
        )
    )


# --- training, tuning, scoring and the model registry ----------------------------------------------

_TrainingConfigPath = Annotated[Path, typer.Option("--config", help="Training config (YAML).")]
_Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override one config value, e.g. --set model.xgboost.max_depth=4 (repeatable)."
    ),
]
_ModelName = Annotated[
    str, typer.Option("--name", help="Registered model name (the configs' registered_model).")
]
_AsOf = Annotated[
    dt.datetime | None,
    typer.Option(
        "--as-of",
        help="Reference time (UTC) of the data's future-timestamp and freshness checks \\[default: now]; "
        "a historical extract: its end.",
    ),
]


def _training_inputs(  # type: ignore[no-untyped-def]
    config_path: Path, overrides: list[str] | None, as_of: dt.datetime | None = None
):
    """Config (with overrides), its contract, and the training table (validated, features built)."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.training.config import load_training_config

    config = _run(lambda: load_training_config(config_path, overrides or []))
    contract = _run(lambda: load_contract(config.data.contract, _settings().contracts_dir))
    from fraud_detection.training.dataset import load_training_table

    with _progress("validating and building features"):
        table = _run(lambda: load_training_table(config, contract, as_of=_utc_naive(as_of)))
    return config, table


def _open_tracking():  # type: ignore[no-untyped-def]
    import os

    # Before MLflow is imported: no per-file progress bars, its INFO narration only when debugging,
    # and a tracking server that does not answer fails in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", _settings().log_level if _state.debug else "WARNING")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from fraud_detection.training import tracking

    handle = tracking.tracking_from_settings(_settings())
    _tracked(handle, lambda: tracking.open_tracking(handle))
    return tracking, handle


def _tracked(handle, action: Callable[[], T]) -> T:  # type: ignore[no-untyped-def]
    """``_run`` for MLflow work: store failures become one line naming the store."""
    from fraud_detection.training.tracking import mlflow_errors

    def guarded() -> T:
        with mlflow_errors(handle):
            return action()

    return _run(guarded)


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


@app.command()
def train(
    config: _TrainingConfigPath = Path("configs/training/default.yaml"),
    overrides: _Overrides = None,
    train_start: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="First day of the training window \\[default: latest labelled]."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the bundle (new or empty) \\[default: under FRAUD_DATA_DIR]."),
    ] = None,
    folds: Annotated[
        bool, typer.Option("--folds/--no-folds", help="Assess on the config's prequential test folds first.")
    ] = True,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Record the run in MLflow.")] = True,
    register: Annotated[
        bool, typer.Option("--register", help="Register the model as a new version with alias challenger.")
    ] = False,
    sign_key: Annotated[
        Path | None, typer.Option(help="Sign the bundle with this EC private key (PEM).")
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            help="Train XGBoost on Dask: 'local' (in-process cluster) or a scheduler address "
            "(tcp://host:8786) \\[default: one machine, no Dask]."
        ),
    ] = None,
    as_of: _AsOf = None,
) -> None:
    """Train the configured model on one window, write its bundle, track and optionally register it."""
    if register and not track:
        raise _fail("--register needs tracking (drop --no-track)", 2)
    settings = _settings()
    from fraud_detection.training.config import load_training_config

    loaded = _run(lambda: load_training_config(config, overrides or []))
    experiment = None
    if track:  # before the data: a store that is down fails now, not after the training
        tracking, handle = _open_tracking()
        experiment = _tracked(handle, lambda: tracking.experiment_id(loaded.experiment, handle))
    loaded, table = _training_inputs(config, overrides, as_of)
    from fraud_detection.training import runs

    if out is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = settings.data_dir / "models" / loaded.experiment / stamp
    start = train_start.date() if train_start else None
    from contextlib import ExitStack

    with ExitStack() as stack:
        client = None
        if dask is not None:
            # Imported only here: Dask and distributed stay out of every other command.
            from fraud_detection.training.distributed import dask_client

            client = _run(lambda: stack.enter_context(dask_client(dask, n_jobs=loaded.model.xgboost.n_jobs)))
        result = _run(
            lambda: runs.train(
                loaded,
                table,
                out,
                train_start=start,
                assess_folds=folds,
                signing_key=sign_key,
                dask_client=client,
            )
        )
    if experiment is not None:
        lock = Path("uv.lock")
        result = _tracked(
            handle,
            lambda: runs.log_training_run(
                result,
                loaded,
                table,
                experiment,
                register=register,
                lock_file=lock if lock.is_file() else None,
            ),
        )
    if result.protocol is not None:
        for index, fold in enumerate(result.protocol.folds):
            typer.echo(
                f"test fold {index} (train from {fold.windows.train_start.date()}): {_metrics_line(fold.metrics)}"
            )
        means = {k: v for k, v in result.protocol.summary.items() if k.endswith("_mean")}
        typer.echo(f"test folds mean: {_metrics_line(means)}")
    if result.holdout_metrics is not None:
        typer.echo(f"window test period: {_metrics_line(result.holdout_metrics)}")
    typer.echo(
        f"trained {result.bundle.model_type} on {result.window.start.date()} .. {result.window.end.date()} (end excluded)"
    )
    typer.echo(f"bundle: {result.bundle_dir} (sha256 {result.digest})")
    if result.run_id:
        typer.echo(f"mlflow run: {result.run_id}")
    if result.registered_version:
        typer.echo(
            f"registered: models:/{loaded.registered_model}/{result.registered_version} (alias challenger)"
        )


@app.command()
def tune(
    config: _TrainingConfigPath = Path("configs/training/default.yaml"),
    overrides: _Overrides = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Trials for this worker \\[default: search.n_trials].")
    ] = None,
    write_config: Annotated[
        Path | None, typer.Option(help="Write the config with the selected hyperparameters here (YAML).")
    ] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Record the study in MLflow.")] = True,
    as_of: _AsOf = None,
) -> None:
    """Search hyperparameters on the validation folds (Optuna TPE + pruning); print the selection."""
    import json

    from fraud_detection.training.config import load_training_config

    loaded = _run(lambda: load_training_config(config, overrides or []))
    experiment = None
    if track:  # before the data: a store that is down fails now
        tracking, handle = _open_tracking()
        experiment = _tracked(handle, lambda: tracking.experiment_id(loaded.experiment, handle))
    loaded, table = _training_inputs(config, overrides, as_of)
    from fraud_detection.training.tuning import tune as run_study

    if experiment is not None:
        result = _tracked(handle, lambda: run_study(loaded, table, experiment_id=experiment, n_trials=trials))
    else:
        result = _run(lambda: run_study(loaded, table, n_trials=trials))
    typer.echo(
        f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_infeasible} infeasible; best trial {result.best_trial} "
        f"validation average precision {result.best_value:.4f}"
    )
    typer.echo(f"best params: {json.dumps(result.best_params)}")
    if write_config is not None:
        import yaml

        from fraud_detection.utils.io import atomic_write_text

        tuned = result.tuned_config(loaded).model_dump(mode="json")
        _run(lambda: atomic_write_text(write_config, yaml.safe_dump(tuned, sort_keys=False)))
        typer.echo(f"tuned config: {write_config}")


@app.command()
def score(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")],
    input_path: Annotated[
        str, typer.Option("--input", help="Raw transactions (parquet/CSV file or folder).")
    ],
    out: Annotated[
        Path, typer.Option(help="Parquet file for transaction_id, score, decision, model_version.")
    ],
    contract: Annotated[str, typer.Option(help="Contract name or .yaml path.")] = "simulator",
    as_of: _AsOf = None,
) -> None:
    """Score raw transactions (features point-in-time from the input's own history) with a model."""
    from fraud_detection.data.contract import load_contract

    settings = _settings()
    loaded = _run(lambda: load_contract(contract, settings.contracts_dir))
    from fraud_detection.data.ingest import validate_dataset
    from fraud_detection.inference.scoring import score_transactions, write_scores
    from fraud_detection.models.registry import ModelRef, resolve_model

    if _run(lambda: ModelRef.parse(model)).name is not None:  # a bad URI: refused before the store opens
        _, handle = _open_tracking()
        resolved = _tracked(handle, lambda: resolve_model(model, public_key=settings.model_public_key))
    else:
        resolved = _run(lambda: resolve_model(model, public_key=settings.model_public_key))
    validation = _run(lambda: validate_dataset(input_path, loaded, as_of=_utc_naive(as_of)))
    scores = _run(lambda: score_transactions(resolved, validation.valid))
    _run(lambda: write_scores(scores, out))
    typer.echo(
        f"scored {len(scores)} transactions with {resolved.uri} (version {resolved.version}): "
        f"{int(scores['decision'].sum())} alerts at threshold {resolved.bundle.threshold}"
    )
    typer.echo(f"scores: {out}")


@app.command()
def models(name: _ModelName = "fraud-detector") -> None:
    """List the registered versions with their aliases and test metrics."""
    from rich.console import Console
    from rich.table import Table

    _, handle = _open_tracking()
    from fraud_detection.models.registry import list_versions

    versions = _tracked(handle, lambda: list_versions(name))
    table = Table(title=f"registered model {name}")
    for column in ("version", "aliases", "model", "test AP", "test AUC", "test CP@k", "bundle sha256"):
        table.add_column(column)
    for info in versions:
        tags = info.tags
        cp = next(
            (v for k, v in tags.items() if k.startswith("test_card_precision_at_") and k.endswith("_mean")),
            "-",
        )
        table.add_row(
            info.version,
            ", ".join(info.aliases) or "-",
            tags.get("model_type", "-"),
            tags.get("test_average_precision_mean", "-"),
            tags.get("test_roc_auc_mean", "-"),
            cp,
            tags.get("bundle_sha256", "-")[:16],
        )
    Console(width=140).print(table)


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Argument(help="The version to make champion \\[default: the current challenger].")
    ] = None,
    name: _ModelName = "fraud-detector",
    require_ab_win: Annotated[
        bool,
        typer.Option(
            "--require-ab-win",
            help="Promote only on a significant A/B win over the champion (challenger logged as shadow).",
        ),
    ] = False,
    events_dir: Annotated[
        Path | None, typer.Option(help="Prediction events with the shadow scores (--require-ab-win).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Delayed labels: transaction_id, is_fraud (--require-ab-win).")
    ] = None,
    ab_config: Annotated[
        Path | None, typer.Option(help="A/B test settings (YAML, ABTestConfig) \\[default: built-in].")
    ] = None,
) -> None:
    """Make a registered version the champion (the previous one is remembered for rollback)."""
    if require_ab_win and (events_dir is None or labels is None):
        raise _fail("--require-ab-win needs --events-dir and --labels", 2)
    _, handle = _open_tracking()
    from fraud_detection.training.lifecycle import promote_challenger

    if require_ab_win:
        from fraud_detection.monitoring import ab_test

        ab_settings = _run(lambda: ab_test.load_ab_config(ab_config)) if ab_config else None
        gate = _tracked(
            handle, lambda: ab_test.check_ab_win(name, version, events_dir, labels, config=ab_settings)
        )
        typer.echo(f"A/B test passed: {gate.result.reason}")
        version = gate.challenger_version
    promotion = _run(lambda: promote_challenger(name, version, tracking=handle))
    chosen, previous = promotion.champion, promotion.previous
    if previous == chosen:
        typer.echo(f"{name} version {chosen} is already the champion")
    else:
        typer.echo(f"{name}: champion is now version {chosen} (was {previous or 'none'})")


@app.command()
def rollback(name: _ModelName = "fraud-detector") -> None:
    """Move the champion alias back to the previous champion, in one command."""
    _, handle = _open_tracking()
    from fraud_detection.models.registry import rollback as rollback_champion

    current, previous = _tracked(handle, lambda: rollback_champion(name))
    typer.echo(f"{name}: champion rolled back from version {current} to version {previous}")


# --- evaluation, gates and the model report --------------------------------------------------------

_EvalConfigPath = Annotated[Path, typer.Option("--eval-config", help="Evaluation and gate config (YAML).")]
_ModelUri = Annotated[
    str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")
]
_EvidenceDir = Annotated[
    Path | None,
    typer.Option(help="Folder for the evidence and the report \\[default: FRAUD_DATA_DIR/evaluations/...]."),
]


def _evaluate(  # type: ignore[no-untyped-def]
    model: str,
    config: Path,
    overrides: list[str] | None,
    eval_config: Path,
    out: Path | None,
    track: bool,
    as_of: dt.datetime | None = None,
):
    """Shared by `evaluate` and `report`: resolve, evaluate on the held-out week, write the evidence."""
    from fraud_detection.evaluation.evaluate import load_evaluation_config
    from fraud_detection.models.registry import ModelRef, require_bundle_folder
    from fraud_detection.training.config import load_training_config

    # a mistyped model is refused before the (slow) validation and feature build
    _run(lambda: require_bundle_folder(ModelRef.parse(model)))
    settings = _settings()
    loaded = _run(lambda: load_training_config(config, overrides or []))
    checks = _run(lambda: load_evaluation_config(eval_config))
    handle = None
    if model.startswith("models:/") or track:
        _, handle = _open_tracking()
    loaded, table = _training_inputs(config, overrides, as_of)
    from fraud_detection.training.lifecycle import evaluate_resolved

    evaluation, out = _run(
        lambda: evaluate_resolved(
            model,
            loaded,
            table,
            checks,
            out,
            evaluations_dir=settings.data_dir / "evaluations",
            tracking=handle,
            public_key=settings.model_public_key,
        )
    )
    return loaded, evaluation, out, handle


def _print_gates(evaluation) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"promotion gates: {evaluation.model_uri} (version {evaluation.model_version})")
    for column in ("gate", "status", "evidence"):
        table.add_column(column)
    for gate in evaluation.gates:
        table.add_row(gate.name, "PASS" if gate.passed else "FAIL", gate.detail)
    Console(width=160).print(table)


@app.command()
def evaluate(
    model: _ModelUri,
    config: _TrainingConfigPath = Path("configs/training/default.yaml"),
    overrides: _Overrides = None,
    eval_config: _EvalConfigPath = Path("configs/evaluation/default.yaml"),
    out: _EvidenceDir = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Record the evidence in MLflow.")] = True,
    as_of: _AsOf = None,
) -> None:
    """Evaluate a model on its held-out week, record the gate outcome, write the report; exit 1 if a gate fails."""
    from fraud_detection.errors import ModelGateFailed

    loaded, evaluation, out_dir, handle = _evaluate(model, config, overrides, eval_config, out, track, as_of)
    if track and handle is not None:
        from fraud_detection.training.lifecycle import record_evaluation

        _run(lambda: record_evaluation(evaluation, loaded, out_dir, model, tracking=handle))
    _print_gates(evaluation)
    typer.echo(f"evidence: {out_dir / 'evaluation.json'}")
    typer.echo(f"report: {out_dir / 'report.html'}")
    if not evaluation.passed:
        _exit_on(ModelGateFailed(model, evaluation.failures))


@app.command()
def report(
    model: _ModelUri,
    config: _TrainingConfigPath = Path("configs/training/default.yaml"),
    overrides: _Overrides = None,
    eval_config: _EvalConfigPath = Path("configs/evaluation/default.yaml"),
    out: _EvidenceDir = None,
    as_of: _AsOf = None,
) -> None:
    """Write the model report and print its Definition of Done checklist (the registry is not touched)."""
    from fraud_detection.evaluation.report import definition_of_done, format_checklist

    _, evaluation, out_dir, _ = _evaluate(model, config, overrides, eval_config, out, False, as_of)
    typer.echo(format_checklist(definition_of_done(evaluation)))
    typer.echo(f"report: {out_dir / 'report.html'}")


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Option(
            help="models:/NAME@ALIAS (hot-reloaded when the alias moves), models:/NAME/VERSION or a bundle folder."
        ),
    ] = "models:/fraud-detector@champion",
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind; 0.0.0.0 only inside a container \\[default: FRAUD_SERVE_HOST, else 127.0.0.1]."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="HTTP port \\[default: FRAUD_SERVE_PORT, else 8080]."),
    ] = None,
    features_dir: Annotated[
        Path | None,
        typer.Option(
            "--features-dir",
            help="Feature tables the online store was materialised from \\[default: FRAUD_FEATURES_DIR]; "
            "neither set: no feature store, every score uses default features and is flagged degraded.",
        ),
    ] = None,
    feature_config: _FeatureConfigPath = Path("configs/features/default.yaml"),
    contract: Annotated[
        str, typer.Option(help="Contract the requests follow (name or .yaml path).")
    ] = "simulator",
    events_dir: Annotated[
        Path | None, typer.Option(help="Prediction event log folder; default <FRAUD_DATA_DIR>/predictions.")
    ] = None,
    expected_digest: Annotated[
        str | None,
        typer.Option(
            help="Pin the bundle digest (sha256 of its manifest.json; the registry's bundle_sha256 tag): "
            "any other bundle is refused at start-up and at reload \\[default: FRAUD_MODEL_DIGEST]."
        ),
    ] = None,
    shadow_model: Annotated[
        str | None,
        typer.Option(
            help="Shadow mode: also score every request with this model (e.g. models:/fraud-detector@challenger), "
            "off the request path; its scores go to the event log only \\[default: FRAUD_SERVE_SHADOW_MODEL]."
        ),
    ] = None,
) -> None:
    """Serve the model as KServe model `fraud-detector` (V1 and V2 protocols) until SIGTERM."""
    import os
    import re

    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.data.contract import load_contract

    settings = _settings()
    # Forced, not defaulted: nothing the server loads is a pickle, whatever the environment says.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    digest = expected_digest or settings.model_digest
    if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise _fail(f"--expected-digest {digest!r} is not a sha256 digest (64 lowercase hex digits)", 2)
    # kserve parses sys.argv when imported: our options must not reach it.
    sys.argv = sys.argv[:1]
    from fraud_detection.inference.server import ServingSettings, make_service, run_server
    from fraud_detection.models.registry import ModelRef

    try:
        # a flag given wins over FRAUD_SERVE_HOST / FRAUD_SERVE_PORT, which win over the defaults
        given = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
        serving = ServingSettings(**given)
    except ValidationError as err:
        raise _fail(f"invalid server settings: {format_validation_error(err)}", 2) from None
    # A model URI that is not understood is refused before any file or registry is touched (S6).
    ref = _run(lambda: ModelRef.parse(model))
    shadow_uri = shadow_model or serving.shadow_model
    shadow_ref = None if shadow_uri is None else _run(lambda: ModelRef.parse(shadow_uri))
    loaded_contract = _run(lambda: load_contract(contract, settings.contracts_dir))
    store = None
    features_dir = features_dir or settings.features_dir
    if features_dir is not None:
        # A mistyped path or an empty volume is refused, never served as if it held the tables
        # (their manifest, when there, is then checked against the feature config).
        if not features_dir.is_dir() or not (
            (features_dir / "manifest.json").is_file() or any(features_dir.glob("*_features.parquet"))
        ):
            raise _fail(
                f"--features-dir / FRAUD_FEATURES_DIR {str(features_dir)!r} holds neither manifest.json "
                "nor feature tables; expected the folder `fraud features build --out` wrote",
                2,
            )
        _, store = _open_feature_store(features_dir, feature_config)
    else:
        typer.echo(
            "warning: no --features-dir or FRAUD_FEATURES_DIR: serving without a feature store, "
            "every score uses default features and is flagged degraded",
            err=True,
        )
    if ref.name is not None or (shadow_ref is not None and shadow_ref.name is not None):
        _open_tracking()
    service = _run(
        lambda: make_service(
            model,
            serving,
            contract=loaded_contract,
            store=store,
            public_key=settings.model_public_key,
            expected_digest=digest,
            events_dir=events_dir or serving.events_dir or settings.data_dir / "predictions",
            shadow_model_uri=shadow_uri,
        )
    )
    code = run_server(service)
    if store is not None:
        store.close()
    raise typer.Exit(code)


# --- fraud pipeline: the Prefect flows ---------------------------------------------------------------

pipeline_app = typer.Typer(
    name="pipeline",
    help="Prefect flows: run the training flow once, or serve the scheduled deployments (PREFECT_API_URL).",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")


def _print_run_summary(summary, extra_stages: list[tuple[str, float]]) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    stages = Table(title="what ran")
    for column in ("stage", "seconds"):
        stages.add_column(column)
    for stage in [*((s.stage, s.seconds) for s in summary.stages), *extra_stages]:
        stages.add_row(stage[0], f"{stage[1]:.1f}")
    console.print(stages)
    metrics = Table(title=f"{summary.registered_model} version {summary.version}")
    for column in ("metric", "value"):
        metrics.add_column(column)
    for name, value in summary.metrics.items():
        metrics.add_row(name, f"{value:.4f}")
    gates = "all passed" if summary.gates_passed else "; ".join(summary.gate_failures)
    metrics.add_row("gates", gates)
    metrics.add_row("champion", summary.champion or "unchanged")
    console.print(metrics)
    paths = Table(title="where things are")
    for column in ("what", "where"):
        paths.add_column(column)
    for name, where in summary.paths.items():
        paths.add_row(name, where)
    console.print(paths)


@pipeline_app.command("train")
def pipeline_train(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where every output goes \\[default: FRAUD_DATA_DIR].")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Raw transactions to ingest \\[default: simulate them].")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Folder name under raw/, processed/, features/.")
    ] = "simulator",
    config: _TrainingConfigPath = Path("configs/training/default.yaml"),
    overrides: _Overrides = None,
    eval_config: _EvalConfigPath = Path("configs/evaluation/default.yaml"),
    train_start: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="First day of the training window \\[default: 2018-09-03 on simulated data; the latest "
            "labelled window with --source].",
        ),
    ] = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Search hyperparameters first.")] = False,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Tuning trials \\[default: search.n_trials].")
    ] = None,
    promote: Annotated[
        bool,
        typer.Option("--promote/--no-promote", help="Make the challenger champion if every gate passes."),
    ] = True,
    days: Annotated[int | None, typer.Option(min=1, help="Simulated days \\[default: 183].")] = None,
) -> None:
    """Run the training flow once: data → features → Feast → train → evaluate → gates → register → promote."""
    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.pipelines.runtime import prepare_flow_process

    if days is not None and source is not None:
        raise _fail(f"--days {days} sizes the simulation; with --source {source!r} nothing is simulated", 2)
    prepare_flow_process()  # before Prefect and MLflow are imported
    from fraud_detection.pipelines.training_flow import (
        DEFAULT_PARAMETERS,
        TrainingFlowParameters,
        training_flow,
    )

    options = {
        "data_dir": data_dir,
        "source": source,
        "dataset": dataset,
        "training_config": config,
        "overrides": overrides or [],
        "evaluation_config": eval_config,
        # the demo's fixed window fits only the simulated data; your own data: its latest labelled window
        "train_start": train_start.date()
        if train_start
        else (None if source is not None else DEFAULT_PARAMETERS.train_start),
        "tune": tune,
        "n_trials": trials,
        "promote": promote,
    }
    if days is not None:
        options["simulator"] = DEFAULT_PARAMETERS.simulator.model_copy(update={"n_days": days})
    try:
        parameters = TrainingFlowParameters(**options)
    except ValidationError as err:
        raise _fail(f"invalid flow parameters: {format_validation_error(err)}", 2) from None
    summary = _run(lambda: training_flow(parameters))
    _print_run_summary(summary, [])


@pipeline_app.command("summary")
def pipeline_summary(
    data_dir: Annotated[
        Path | None, typer.Option(help="The training flow's data folder \\[default: FRAUD_DATA_DIR].")
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="Another stage to list, NAME=SECONDS (repeatable), e.g. a batch score after the flow."
        ),
    ] = None,
) -> None:
    """Print the last training flow run's summary: stages and their time, metrics, where things are."""
    from fraud_detection.training.lifecycle import read_run_summary

    extra = []
    for item in stage or []:
        name, sep, seconds = item.rpartition("=")
        try:
            extra.append((name, float(seconds)))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise _fail(f"--stage {item!r}: expected NAME=SECONDS, e.g. 'batch score=12.5'", 2)
    folder = data_dir or _settings().data_dir
    summary = _run(lambda: read_run_summary(folder / "pipelines" / "training_flow_summary.json"))
    _print_run_summary(summary, extra)


@pipeline_app.command("serve")
def pipeline_serve(
    limit: Annotated[int | None, typer.Option(min=1, help="Most flow runs at the same time.")] = None,
    parameters: Annotated[
        Path | None,
        typer.Option(
            "--parameters",
            help="YAML with each flow's parameters (training:, batch:, monitoring:; docs/pipelines.md); "
            "unset: the demo's defaults.",
        ),
    ] = None,
) -> None:
    """Serve the scheduled deployments (training weekly, batch inference daily, monitoring hourly) until interrupted."""
    from fraud_detection.pipelines.runtime import prepare_flow_process

    prepare_flow_process()
    from fraud_detection.pipelines.deployments import load_schedule_parameters, serve_deployments

    schedule = None if parameters is None else _run(lambda: load_schedule_parameters(parameters))
    _run(lambda: serve_deployments(schedule, limit=limit))


# --- batch inference (issue 7): one day's partition, committed exactly once ----------------------

batch_app = typer.Typer(
    name="batch", help="Batch inference over the raw store's daily partitions.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")


@batch_app.command("score")
def batch_score(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")],
    raw: Annotated[Path, typer.Option("--raw", help="Raw dataset folder (daily partitions + manifest).")],
    date: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Day to score (UTC).")],
    features_dir: _FeaturesDir,
    out: Annotated[Path, typer.Option(help="Root of the predictions layout (see docs/batch.md).")],
    contract: Annotated[str, typer.Option(help="Contract name or .yaml path.")] = "simulator",
    logical_time: Annotated[
        dt.datetime | None,
        typer.Option(help="The run's logical time (UTC): inference_timestamp; default the end of --date."),
    ] = None,
    explain: Annotated[bool, typer.Option(help="Add top_reasons (JSON) per transaction.")] = False,
    top_reasons: Annotated[int, typer.Option(min=1, max=20, help="Reasons per transaction.")] = 3,
    rows_per_part: Annotated[int, typer.Option(min=1, help="Rows per output part file.")] = 1_000_000,
    dask: Annotated[
        str | None, typer.Option(help='Score on Dask: a scheduler address, or "local" (in-process cluster).')
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for a concurrent run of the day instead of failing.")
    ] = False,
) -> None:
    """Score one day's partition with point-in-time offline features; commit the predictions once."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.inference import batch
    from fraud_detection.models.registry import ModelRef, resolve_model

    settings = _settings()
    loaded = _run(lambda: load_contract(contract, settings.contracts_dir))
    if _run(lambda: ModelRef.parse(model)).name is not None:
        _, handle = _open_tracking()
        resolved = _tracked(handle, lambda: resolve_model(model, public_key=settings.model_public_key))
    else:
        resolved = _run(lambda: resolve_model(model, public_key=settings.model_public_key))
    day = date.date()
    spec = batch.BatchSpec(
        raw_dir=raw,
        date=day,
        features_dir=features_dir,
        out_dir=out,
        logical_time=logical_time or batch.default_logical_time(day),
        explain=explain,
        top_reasons=top_reasons,
        rows_per_part=rows_per_part,
        dask=dask,
        wait_for_lock=wait,
    )
    result = _run(lambda: batch.run_batch(spec, resolved, loaded))
    state = "committed" if result.committed else "already committed with these inputs (nothing to do)"
    typer.echo(
        f"{day.isoformat()}: {result.rows} predictions, {result.rejected} rejected rows, {state} "
        f"[{result.seconds:.2f} s]"
    )
    typer.echo(f"predictions: {result.partition_dir}")
    if result.not_in_feature_tables:
        typer.echo(
            f"warning: {result.not_in_feature_tables} of {result.rows} transactions are not in the feature "
            f"tables of {str(features_dir)!r} (built before {day.isoformat()}?): scored with their "
            "entities' earlier rows, whose windows miss the day; rebuild the tables with "
            "`fraud features build` (a committed day is immutable: remove its folder to score it again)",
            err=True,
        )


# --- monitoring (issue 8): drift, performance on delayed labels, alerts ------------------------------

# with an offset ("Z", "+05:30") too: it is converted to UTC, as batch's --logical-time does
_MONITOR_TIME_FORMATS = [
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M:%S%z",
]


@app.command()
def monitor(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")],
    start: Annotated[
        dt.datetime, typer.Option(formats=_MONITOR_TIME_FORMATS, help="Period start (UTC without an offset).")
    ],
    end: Annotated[
        dt.datetime,
        typer.Option(formats=_MONITOR_TIME_FORMATS, help="Period end, exclusive (UTC without an offset)."),
    ],
    events_dir: Annotated[
        Path | None, typer.Option(help="Server prediction events \\[default: FRAUD_DATA_DIR/predictions].")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Delayed labels: transaction_id, is_fraud (parquet/CSV file or folder)."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Stored reference \\[default: FRAUD_DATA_DIR/monitoring/reference/<model digest>]."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Training config: builds the reference from the model's window if missing."),
    ] = None,
    monitoring_config: Annotated[Path, typer.Option(help="Monitoring thresholds (YAML).")] = Path(
        "configs/monitoring/default.yaml"
    ),
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder \\[default: FRAUD_DATA_DIR/monitoring/runs/<start>--<end>]."),
    ] = None,
    html: Annotated[bool, typer.Option(help="Also render Evidently's drift HTML (drift.html).")] = False,
) -> None:
    """One monitoring pass: drift vs the training window, performance on labels, alerts (exit 0 on alerts)."""
    from pydantic import ValidationError

    from fraud_detection.config import format_validation_error
    from fraud_detection.models.registry import ModelRef, resolve_model
    from fraud_detection.monitoring import run as monitoring
    from fraud_detection.monitoring.alerts import AlertSettings

    start, end = _utc_naive(start), _utc_naive(end)
    if end <= start:
        raise _fail(
            f"--end {end.isoformat()} is not after --start {start.isoformat()}: "
            "the period is [start, end), so --end must be later",
            2,
        )
    settings = _settings()
    try:
        alert_settings = AlertSettings()
    except ValidationError as err:
        prefix = AlertSettings.model_config["env_prefix"]
        raise _fail(f"invalid alert settings: {format_validation_error(err, prefix)}", 2) from None
    checks = _run(lambda: monitoring.load_monitoring_config(monitoring_config))
    if _run(lambda: ModelRef.parse(model)).name is not None:
        _, handle = _open_tracking()
        resolved = _tracked(handle, lambda: resolve_model(model, public_key=settings.model_public_key))
    else:
        resolved = _run(lambda: resolve_model(model, public_key=settings.model_public_key))
    reference_dir = reference or monitoring.default_reference_dir(settings.data_dir, resolved)
    frame = (lambda: _training_inputs(config, None)[1].frame) if config is not None else None
    _run(lambda: monitoring.prepare_reference(resolved, reference_dir, training_frame=frame, config=checks))
    stamp = f"{start:%Y%m%dT%H%M%S}--{end:%Y%m%dT%H%M%S}"
    result = _run(
        lambda: monitoring.run_monitoring(
            resolved,
            events_dir or settings.data_dir / "predictions",
            start=start,
            end=end,
            reference_dir=reference_dir,
            out_dir=out or settings.data_dir / "monitoring" / "runs" / stamp,
            labels_path=labels,
            config=checks,
            html=html,
            alert_settings=alert_settings,
        )
    )
    for line in monitoring.summary_lines(result):
        typer.echo(line)


@app.command("drift-story")
def drift_story(
    out: Annotated[Path, typer.Option(help="New or empty folder for everything the story writes.")],
    small: Annotated[
        bool, typer.Option("--small", help="The test size (seconds instead of a minute).")
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Simulation and training seed.")] = 0,
    feature_config: Annotated[Path, typer.Option(help="Feature definitions (YAML).")] = Path(
        "configs/features/default.yaml"
    ),
) -> None:
    """The whole system on simulated drift: serve, monitor, detect, retrain, A/B in shadow, promote."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from fraud_detection.data.contract import load_contract
    from fraud_detection.monitoring import story

    config = story.small_story_config(seed=seed) if small else story.DriftStoryConfig(seed=seed)
    contract = _run(lambda: load_contract("simulator", _settings().contracts_dir))
    result = _run(
        lambda: story.run_drift_story(out, config, contract=contract, feature_config_path=feature_config)
    )
    typer.echo(story.format_timeline(result))
    for line in story.summary_lines(result):
        typer.echo(line)
