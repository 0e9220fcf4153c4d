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
        raise _fail(f"invalid settings: {format_validation_error(err)}", 2) from None
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
        raise _fail(f"invalid feature store settings: {format_validation_error(err)}", 2) from None
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


def _training_inputs(config_path: Path, overrides: list[str] | None):  # type: ignore[no-untyped-def]
    """Config (with overrides), its contract, and the training table (validated, features built)."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.training.config import load_training_config

    config = _run(lambda: load_training_config(config_path, overrides or []))
    contract = _run(lambda: load_contract(config.data.contract, _settings().contracts_dir))
    from fraud_detection.training.dataset import load_training_table

    with _progress("validating and building features"):
        table = _run(lambda: load_training_table(config, contract, as_of=_utc_naive(None)))
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
    loaded, table = _training_inputs(config, overrides)
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
) -> None:
    """Search hyperparameters on the validation folds (Optuna TPE + pruning); print the selection."""
    import json

    from fraud_detection.training.config import load_training_config

    loaded = _run(lambda: load_training_config(config, overrides or []))
    experiment = None
    if track:  # before the data: a store that is down fails now
        tracking, handle = _open_tracking()
        experiment = _tracked(handle, lambda: tracking.experiment_id(loaded.experiment, handle))
    loaded, table = _training_inputs(config, overrides)
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
    validation = _run(lambda: validate_dataset(input_path, loaded, as_of=_utc_naive(None)))
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
) -> None:
    """Make a registered version the champion (the previous one is remembered for rollback)."""
    _, handle = _open_tracking()
    from fraud_detection.models import registry

    chosen = version or _tracked(handle, lambda: registry.alias_version(name, registry.CHALLENGER))
    previous = _tracked(handle, lambda: registry.promote(name, chosen))
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


def _evaluate(
    model: str, config: Path, overrides: list[str] | None, eval_config: Path, out: Path | None, track: bool
):  # type: ignore[no-untyped-def]
    """Shared by `evaluate` and `report`: resolve, evaluate on the held-out week, write the evidence."""
    from fraud_detection.evaluation.evaluate import load_evaluation_config
    from fraud_detection.training.config import load_training_config

    settings = _settings()
    loaded = _run(lambda: load_training_config(config, overrides or []))
    checks = _run(lambda: load_evaluation_config(eval_config))
    handle = None
    if model.startswith("models:/") or track:
        _, handle = _open_tracking()
    loaded, table = _training_inputs(config, overrides)
    from fraud_detection.evaluation.evaluate import run_evaluation
    from fraud_detection.models.registry import CHAMPION, ModelRef, resolve_alias, resolve_model

    def resolve(uri: str):  # type: ignore[no-untyped-def]
        load = lambda: resolve_model(uri, public_key=settings.model_public_key)  # noqa: E731
        return _tracked(handle, load) if uri.startswith("models:/") else _run(load)

    resolved = resolve(model)
    ref = ModelRef.parse(model)
    champion = None
    if ref.name is not None:  # no champion yet: nothing to regress against
        champion = _tracked(
            handle, lambda: resolve_alias(ref.name, CHAMPION, public_key=settings.model_public_key)
        )
    name = f"{ref.name}-v{resolved.version}" if ref.name else resolved.version
    out = out or settings.data_dir / "evaluations" / name
    evaluation = _run(lambda: run_evaluation(resolved, table, loaded, checks, out, champion=champion))
    return loaded, evaluation, out, handle, ref


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
) -> None:
    """Evaluate a model on its held-out week, record the gate outcome, write the report; exit 1 if a gate fails."""
    from fraud_detection.errors import ModelGateFailed

    loaded, evaluation, out_dir, handle, ref = _evaluate(model, config, overrides, eval_config, out, track)
    if track and handle is not None:
        import fraud_detection.training.tracking as tracking
        from fraud_detection.evaluation.evaluate import log_evaluation

        experiment = _tracked(handle, lambda: tracking.experiment_id(loaded.experiment, handle))
        _tracked(handle, lambda: log_evaluation(evaluation, experiment, out_dir, ref.name))
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
) -> None:
    """Write the model report and print its Definition of Done checklist (the registry is not touched)."""
    from fraud_detection.evaluation.report import definition_of_done, format_checklist

    _, evaluation, out_dir, _, _ = _evaluate(model, config, overrides, eval_config, out, track=False)
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
        str, typer.Option(help="Address to bind; 0.0.0.0 only inside a container.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port.")] = 8080,
    features_dir: Annotated[
        Path | None,
        typer.Option(
            "--features-dir",
            help="Feature tables the online store was materialised from; unset: default features, flagged degraded.",
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
        serving = ServingSettings(host=host, port=port)
    except ValidationError as err:
        raise _fail(f"invalid server settings: {format_validation_error(err)}", 2) from None
    # A model URI that is not understood is refused before any file or registry is touched (S6).
    ref = _run(lambda: ModelRef.parse(model))
    loaded_contract = _run(lambda: load_contract(contract, settings.contracts_dir))
    store = None
    if features_dir is not None:
        _, store = _open_feature_store(features_dir, feature_config)
    if ref.name is not None:
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
        )
    )
    code = run_server(service)
    if store is not None:
        store.close()
    raise typer.Exit(code)
