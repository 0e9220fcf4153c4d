"""Feature build speed: ``build_features`` against a straightforward pandas reference, and at 10M rows.

Usage: ``.venv/bin/python bench/bench_features.py [--rounds N] [--path FILE] [--sim-customers N]``
(``--reference-customers N`` runs the reference on the first N customers only, if it is too slow).

What is compared, on the handbook raw file read through the ``handbook`` contract:

* ``ours``: :func:`fraud_detection.features.engineering.build_features`;
* ``reference``: :func:`pandas_reference` below, the same definitions the way a data scientist
  writes them first: ``groupby().rolling()`` time windows, the delayed terminal windows as the
  difference of a ``delay + n`` and a ``delay`` window (as the handbook does), ``Series.apply``
  for the calendar flags (as the handbook does).

1. Memory and cold time: each phase once in its own fresh subprocess, all launched before this
   process loads any data (Linux keeps a parent's ``ru_maxrss`` in a child across fork and exec):
   ``ours``, ``reference``, and ``simulated`` (``simulate(SimulatorConfig(n_customers=...))``,
   about 10M rows at 28,500 customers, generated in the subprocess, then ``build_features`` once).
   Each reports its peak RSS (``ru_maxrss``) and the peak during the compute alone (``VmHWM``
   reset through ``/proc/self/clear_refs`` once the input is loaded).
2. Agreement: the reference's output of step 1 against ours on the same rows, feature by feature.
3. Warm time: N rounds in this process after one warm-up call of ours, each round timing ours and
   the reference back to back (alternating which goes first), so machine noise hits both alike.
   The speed-up is the median over rounds of the per-round ratio of rows per second.

Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: the parent must stay small until its children ran
    import pandas as pd

    from fraud_detection.features.engineering import FeatureConfig

DEFAULT_PATH = Path("../shared/datasets/fraud-handbook/raw/transactions_raw.parquet")
CONTRACTS_DIR = Path("configs/contract")
FEATURE_CONFIG = Path("configs/features/default.yaml")
PHASES = ("ours", "reference", "simulated")
ATOL = 1e-9


# ---------------------------------------------------------------------------- the pandas reference


def pandas_reference(
    transactions: pd.DataFrame, config: FeatureConfig
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every feature of ``build_features``, written the straightforward pandas way.

    Time windows are ``groupby(entity).rolling("<n>D")`` on ``event_timestamp``. The terminal
    window ``(t - (delay + n), t - delay]`` is the ``delay + n`` window minus the ``delay``
    window. Rolling windows are positional, so for two transactions of one customer in the same
    second the first sees only itself: that is where this differs from the documented tie rule.
    Returns the same columns as ``build_features``, in the input's row order.
    """
    import numpy as np
    import pandas as pd

    delay = config.label_delay_days
    frame = transactions[
        ["transaction_id", "event_timestamp", "customer_id", "terminal_id", "amount", "is_fraud"]
    ]
    out = frame[["transaction_id", "event_timestamp", "customer_id", "terminal_id", "amount"]].copy()
    timings = {}

    started = time.perf_counter()
    out["tx_during_weekend"] = frame["event_timestamp"].apply(lambda ts: int(ts.weekday() >= 5))
    out["tx_during_night"] = frame["event_timestamp"].apply(lambda ts: int(ts.hour <= 6))
    timings["calendar_apply"] = time.perf_counter() - started

    started = time.perf_counter()
    by_customer = frame.sort_values(["customer_id", "event_timestamp"], kind="stable")
    amounts = by_customer.set_index("event_timestamp").groupby("customer_id")["amount"]
    customer = pd.DataFrame(index=by_customer.index)  # rolling results come in this sorted order
    for n in config.windows_days:
        window = amounts.rolling(f"{n}D")
        customer[f"customer_nb_tx_{n}d"] = window.count().to_numpy()
        customer[f"customer_avg_amount_{n}d"] = window.mean().to_numpy()
    prior = amounts.rolling(f"{config.history_days}D", closed="neither").mean().fillna(0.0)
    customer[config.prior_avg_amount_feature] = prior.to_numpy()
    gap = by_customer.groupby("customer_id")["event_timestamp"].diff().dt.total_seconds()
    customer["customer_seconds_since_prev_tx"] = gap.fillna(-1.0).to_numpy()
    out[list(customer.columns)] = customer  # aligned back to the input rows by index
    prior_avg = out[config.prior_avg_amount_feature]
    out[config.amount_ratio_feature] = np.where(prior_avg > 0, out["amount"] / prior_avg, 1.0)
    timings["customer_rolling"] = time.perf_counter() - started

    # Outliers: each row's z-score against its strictly earlier history, then rolling counts and
    # maxima of the earlier rows' z-scores ("neither": (t - n, t), the current row excluded).
    started = time.perf_counter()
    history = amounts.rolling(f"{config.history_days}D", closed="neither")
    mean, std, count = history.mean().to_numpy(), history.std(ddof=0).to_numpy(), history.count().to_numpy()
    flat = (count < 2) | ~(std > 1e-6 * np.maximum(np.abs(mean), 1.0))
    zscore = np.where(flat, 0.0, (by_customer["amount"].to_numpy() - mean) / np.where(flat, 1.0, std))
    scored = by_customer[["customer_id", "event_timestamp"]].assign(
        zscore=zscore, outlier=(zscore >= config.outlier_zscore).astype(np.float64)
    )
    earlier = scored.set_index("event_timestamp").groupby("customer_id")
    outliers = pd.DataFrame(index=by_customer.index)
    for n in config.outlier_windows_days:
        outliers[f"customer_nb_outlier_amounts_{n}d"] = (
            earlier["outlier"].rolling(f"{n}D", closed="neither").sum().fillna(0.0).to_numpy()
        )
        outliers[f"customer_max_amount_zscore_{n}d"] = (
            earlier["zscore"].rolling(f"{n}D", closed="neither").max().fillna(0.0).to_numpy()
        )
    out[list(outliers.columns)] = outliers
    timings["customer_outliers"] = time.perf_counter() - started

    started = time.perf_counter()
    by_terminal = frame.sort_values(["terminal_id", "event_timestamp"], kind="stable")
    labels = by_terminal.set_index("event_timestamp").groupby("terminal_id")["is_fraud"]
    terminal = pd.DataFrame(index=by_terminal.index)
    recent = labels.rolling(f"{delay}D")
    recent_count, recent_frauds = recent.count().to_numpy(), recent.sum().to_numpy()
    for n in config.windows_days:
        window = labels.rolling(f"{delay + n}D")
        count = window.count().to_numpy() - recent_count
        frauds = window.sum().to_numpy() - recent_frauds
        terminal[f"terminal_nb_tx_{n}d"] = count
        terminal[f"terminal_risk_{n}d"] = np.where(count > 0, frauds / np.maximum(count, 1), 0.0)
    out[list(terminal.columns)] = terminal
    timings["terminal_rolling"] = time.perf_counter() - started

    # The terminal's latest known labels (at or before t - delay), one terminal at a time.
    started = time.perf_counter()
    delay_td = pd.Timedelta(days=delay)
    with_ratio = by_terminal.assign(ratio=out.loc[by_terminal.index, config.amount_ratio_feature])

    def known_fraud(group: pd.DataFrame) -> pd.DataFrame:
        times = group["event_timestamp"].to_numpy()
        labels_ = group["is_fraud"].to_numpy()
        ratios = group["ratio"].to_numpy()
        rows = np.arange(len(group))
        last_known = np.searchsorted(times, times - delay_td.to_timedelta64(), side="right") - 1
        latest_fraud = np.maximum.accumulate(np.where(labels_ == 1, rows, -1))[np.maximum(last_known, 0)]
        latest_genuine = np.maximum.accumulate(np.where(labels_ == 0, rows, -1))[np.maximum(last_known, 0)]
        has_fraud = (last_known >= 0) & (latest_fraud >= 0)
        has_genuine = (last_known >= 0) & (latest_genuine >= 0)
        fraud_time, genuine_time = times[np.maximum(latest_fraud, 0)], times[np.maximum(latest_genuine, 0)]
        last_is_fraud = has_fraud & (~has_genuine | (fraud_time > genuine_time))
        start = np.where(has_genuine, np.searchsorted(times, genuine_time, side="right"), 0)
        count = np.where(last_is_fraud, last_known + 1 - start, 0)
        ratio_sums = np.concatenate([[0.0], np.cumsum(ratios)])
        day = np.timedelta64(1, "D")
        return pd.DataFrame(
            {
                "terminal_last_known_fraud": last_is_fraud.astype(np.int64),
                "terminal_days_since_known_fraud": np.where(has_fraud, (times - fraud_time) / day, -1.0),
                "terminal_known_fraud_streak_days": np.where(
                    last_is_fraud,
                    (times - times[np.minimum(start, len(times) - 1)]) / day,
                    -1.0,
                ),
                "terminal_known_fraud_streak_count": count.astype(np.float64),
                "terminal_known_fraud_streak_amount_ratio": np.where(
                    last_is_fraud,
                    (ratio_sums[np.maximum(last_known + 1, 0)] - ratio_sums[start]) / np.maximum(count, 1),
                    -1.0,
                ),
            },
            index=group.index,
        )

    known = with_ratio.groupby("terminal_id", group_keys=False)[
        ["event_timestamp", "is_fraud", "ratio"]
    ].apply(known_fraud)
    out[list(known.columns)] = known
    timings["terminal_known_fraud_apply"] = time.perf_counter() - started

    started = time.perf_counter()
    by_time = frame.sort_values("event_timestamp", kind="stable")
    first = by_time.groupby(["customer_id", "terminal_id"]).cumcount() == 0
    out["customer_terminal_first_use"] = first.astype(np.int64)  # aligned by index
    timings["first_use"] = time.perf_counter() - started
    return out[
        ["transaction_id", "event_timestamp", "customer_id", "terminal_id", *config.feature_names]
    ], timings


# ---------------------------------------------------------------------------- measurement helpers


def _status_mib() -> dict[str, float]:
    """Current and peak resident memory (VmRSS, VmHWM) of this process, in MiB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _load_handbook(path: Path, customers: int | None):
    from fraud_detection.data.contract import load_contract
    from fraud_detection.data.loaders import read_transactions

    transactions, _ = read_transactions(str(path), load_contract("handbook", CONTRACTS_DIR))
    if customers is not None:
        kept = transactions["customer_id"].isin(sorted(transactions["customer_id"].unique())[:customers])
        transactions = transactions[kept].reset_index(drop=True)
    return transactions


def _run_phase(args: argparse.Namespace) -> dict[str, Any]:
    """One phase in this (fresh) process; writes the handbook outputs for the comparison."""
    from fraud_detection.features.engineering import build_features, load_feature_config

    config = load_feature_config(FEATURE_CONFIG)
    result: dict[str, Any] = {}
    if args.phase == "simulated":
        from fraud_detection.data.simulator import SimulatorConfig, simulate

        started = time.perf_counter()
        transactions = simulate(SimulatorConfig(n_customers=args.sim_customers)).transactions
        result["simulate_seconds"] = round(time.perf_counter() - started, 2)
        result["simulate_peak_rss_mib"] = round(_max_rss_mib(), 1)
    else:
        customers = args.reference_customers if args.phase == "reference" else None
        transactions = _load_handbook(args.path, customers)
    result["rows"] = len(transactions)
    result["input_rss_mib"] = round(_status_mib()["VmRSS"], 1)
    peak_reset = _reset_peak()

    timings: list[float] = []
    if args.phase == "reference":
        started = time.perf_counter()
        features, result["step_seconds"] = pandas_reference(transactions, config)
        timings.append(time.perf_counter() - started)
        result["step_seconds"] = {step: round(value, 2) for step, value in result["step_seconds"].items()}
    else:
        started = time.perf_counter()
        features = build_features(transactions, config)
        timings.append(time.perf_counter() - started)
    result["cold_seconds"] = round(timings[0], 3)
    result["compute_peak_rss_mib"] = round(_status_mib()["VmHWM"], 1) if peak_reset else None
    result["peak_rss_mib"] = round(_max_rss_mib(), 1)
    if args.out is not None:
        features.to_parquet(args.out, index=False)
    return result


def _compare(args: argparse.Namespace, reference_path: Path) -> dict[str, Any]:
    """Feature-by-feature agreement of ours and the reference's output, and where and why they differ.

    Ours is recomputed here on exactly the reference's input rows (with a customer subset, the
    terminal windows only hold that subset's transactions, for both).
    """
    import numpy as np
    import pandas as pd

    from fraud_detection.features.engineering import build_features, load_feature_config

    config = load_feature_config(FEATURE_CONFIG)
    reference = pd.read_parquet(reference_path).set_index("transaction_id")
    ours = build_features(_load_handbook(args.path, args.reference_customers), config)
    ours = ours.set_index("transaction_id").loc[reference.index]
    tied = ours.duplicated(["customer_id", "event_timestamp"], keep=False).to_numpy()
    diff = (ours[config.feature_names].astype(float) - reference[config.feature_names].astype(float)).abs()
    differs = (diff > ATOL).any(axis=1).to_numpy()
    handbook = [
        f"{kind}_{n}d"
        for n in config.windows_days
        for kind in ("customer_nb_tx", "customer_avg_amount", "terminal_nb_tx", "terminal_risk")
    ] + ["tx_during_weekend", "tx_during_night"]
    per_feature = {name: int((diff[name] > ATOL).sum()) for name in config.feature_names}
    return {
        "rows_compared": len(diff),
        "max_abs_diff_all_features": float(diff.to_numpy().max()),
        "max_abs_diff_handbook_features_untied_rows": float(diff.loc[~tied, handbook].to_numpy().max()),
        "max_abs_diff_all_features_untied_rows": float(diff.loc[~tied].to_numpy().max()),
        "same_customer_same_second_rows": int(tied.sum()),
        "rows_differing": int(differs.sum()),
        "rows_differing_outside_those_ties": int((differs & ~tied).sum()),
        "rows_differing_per_feature": {name: count for name, count in per_feature.items() if count},
        "nan_in_reference": int(reference[config.feature_names].isna().sum().sum()),
        "nan_in_ours": int(ours[config.feature_names].isna().sum().sum()),
        "identical_columns_order": list(np.asarray(ours.columns)) == list(np.asarray(reference.columns)),
    }


def _warm_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """Ours and the reference timed back to back in this process, ``args.rounds`` times."""
    from fraud_detection.features.engineering import build_features, load_feature_config

    config = load_feature_config(FEATURE_CONFIG)
    full = _load_handbook(args.path, None)
    subset = full if args.reference_customers is None else _load_handbook(args.path, args.reference_customers)
    build_features(full, config)  # warm-up
    seconds: dict[str, list[float]] = {"ours": [], "reference": []}
    steps: dict[str, list[float]] = {}
    ratios = []
    for round_ in range(args.rounds):
        order = ("ours", "reference") if round_ % 2 == 0 else ("reference", "ours")
        for name in order:
            started = time.perf_counter()
            if name == "ours":
                build_features(full, config)
            else:
                _, step_seconds = pandas_reference(subset, config)
                for step, value in step_seconds.items():
                    steps.setdefault(step, []).append(value)
            seconds[name].append(time.perf_counter() - started)
        ratios.append((len(full) / seconds["ours"][-1]) / (len(subset) / seconds["reference"][-1]))
    ours_s, reference_s = statistics.median(seconds["ours"]), statistics.median(seconds["reference"])
    reference_steps = {step: statistics.median(values) for step, values in steps.items()}
    without_apply = sum(value for step, value in reference_steps.items() if step != "calendar_apply")
    return {
        "rounds": args.rounds,
        "ours_seconds_median": round(ours_s, 3),
        "ours_seconds_all": [round(value, 3) for value in seconds["ours"]],
        "reference_seconds_median": round(reference_s, 2),
        "reference_seconds_all": [round(value, 2) for value in seconds["reference"]],
        "reference_step_seconds_median": {step: round(value, 2) for step, value in reference_steps.items()},
        "ours_rows_per_second": round(len(full) / ours_s),
        "reference_rows_per_second": round(len(subset) / reference_s),
        "speedup_per_round": [round(ratio, 1) for ratio in ratios],
        "speedup_median": round(statistics.median(ratios), 1),
        "speedup_vs_reference_without_calendar_apply": round(
            (len(full) / ours_s) / (len(subset) / without_apply), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds of ours + reference")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--sim-customers", type=int, default=28_500, help="about 10M transactions")
    parser.add_argument("--reference-customers", type=int, default=None, help="reference on a subset")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.path.is_file():
        parser.error(f"--path {str(args.path)!r} does not exist (the handbook data lives in ../shared)")
    if args.phase:
        print(json.dumps(_run_phase(args)))
        return

    command = " ".join([".venv/bin/python bench/bench_features.py", *sys.argv[1:]])
    cold: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        outputs = {"reference": Path(tmp) / "reference.parquet"}
        phases = [phase for phase in PHASES if not (phase == "simulated" and args.skip_simulated)]
        for phase in phases:  # each in a fresh process, before this one loads anything
            child = [sys.executable, __file__, "--phase", phase, "--path", str(args.path)]
            child += ["--sim-customers", str(args.sim_customers)]
            if args.reference_customers is not None:
                child += ["--reference-customers", str(args.reference_customers)]
            if phase in outputs:
                child += ["--out", str(outputs[phase])]
            started = time.perf_counter()
            completed = subprocess.run(child, check=True, capture_output=True, text=True)
            cold[phase] = json.loads(completed.stdout.strip().splitlines()[-1])
            cold[phase]["subprocess_wall_seconds"] = round(time.perf_counter() - started, 1)
        agreement = _compare(args, outputs["reference"])
    warm = _warm_rounds(args)

    import numpy as np
    import pandas as pd
    import pyarrow

    simulated = cold.get("simulated")
    if simulated is not None:
        simulated["rows_per_second"] = round(simulated["rows"] / simulated["cold_seconds"])
    report = {
        "benchmark": "build_features vs a pandas groupby().rolling()/apply reference on the handbook raw "
        "file; build_features on ~10M simulated transactions",
        "command": command,
        "handbook_rows": cold["ours"]["rows"],
        "reference_rows": cold["reference"]["rows"],
        "reference_subset": None
        if args.reference_customers is None
        else f"first {args.reference_customers} customers",
        "warm": warm,
        "cold_fresh_process": {
            "ours": cold["ours"],
            "reference": cold["reference"],
            "speedup": round(
                (cold["ours"]["rows"] / cold["ours"]["cold_seconds"])
                / (cold["reference"]["rows"] / cold["reference"]["cold_seconds"]),
                1,
            ),
        },
        "agreement": agreement,
        "simulated": simulated,
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cpus, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
