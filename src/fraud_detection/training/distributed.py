"""Train XGBoost on a Dask cluster (``xgboost.dask``) when one machine is not enough.

The same training config drives both paths: parameters come from
:func:`~fraud_detection.training.trainer.booster_params`, and early stopping uses the same holdout
as on one machine (the last day of the training window, from ``days``). ``tree_method: hist`` reads
the data through a ``DaskQuantileDMatrix`` (no full copy per worker); ``approx`` through a
``DaskDMatrix``; ``exact`` has no distributed implementation in XGBoost and is refused.

On one small machine Dask only adds overhead (XGBoost already uses every core); it pays off when
the data is read as Dask collections across several workers. Importing this module imports neither
Dask nor XGBoost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from fraud_detection.errors import ConfigError
from fraud_detection.training.trainer import booster_params, last_day_holdout

if TYPE_CHECKING:
    import xgboost
    from distributed import Client

_log = structlog.get_logger(__name__)

LOCAL = "local"


@contextmanager
def dask_client(address: str, *, n_jobs: int = 2, timeout_s: float = 10.0) -> Iterator[Client]:
    """A Dask client: ``"local"`` starts an in-process cluster (one worker, ``n_jobs`` threads, no
    dashboard); anything else connects to the scheduler at that address within ``timeout_s``.

    A scheduler that cannot be reached (or an address that cannot be parsed) is a
    :class:`~fraud_detection.errors.ConfigError` naming the address.
    """
    from distributed import Client, LocalCluster

    if address == LOCAL:
        # Threads, not processes: no re-import of __main__, and start-up in ~0.1 s instead of ~8 s.
        # No dashboard; the scheduler's HTTP routes still start, so on a free loopback port rather
        # than on 8787 for every interface (a second cluster there only warns and moves).
        with (
            LocalCluster(
                processes=False,
                n_workers=1,
                threads_per_worker=n_jobs,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout=timeout_s)
    # distributed raises OSError on a timeout or refusal, ValueError on a malformed address.
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot connect to the Dask scheduler at {address!r} within {timeout_s:g} s: {err}; "
            f"expected {LOCAL!r} or a reachable scheduler address such as tcp://host:8786"
        ) from err
    with client:
        _log.info("dask connected", scheduler=address, workers=len(client.nthreads()))
        yield client


def _as_dask_array(data: Any, row_chunks: int | tuple[int, ...]) -> Any:
    """``data`` as a Dask array in ``row_chunks`` row blocks (a block size, or the exact blocks of
    the features so that labels and days line up with them). Dask collections get known chunk
    lengths first: masking rows and lining up need them."""
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(data, (dd.DataFrame, dd.Series)):
        array = data.to_dask_array(lengths=True)
    elif isinstance(data, da.Array):
        array = data.compute_chunk_sizes() if any(math.isnan(n) for n in data.shape) else data
    else:
        array = np.asarray(data)
        return da.from_array(array, chunks=(row_chunks, *array.shape[1:]))
    return array if isinstance(row_chunks, int) else array.rechunk({0: row_chunks})


def fit_xgboost_dask(
    client: Client,
    x: Any,
    y: Any,
    feature_names: list[str],
    params: dict[str, Any],
    seed: int,
    *,
    days: Any = None,
) -> xgboost.Booster:
    """Fit the configured XGBoost model on the cluster behind ``client``.

    ``x``/``y``/``days`` are NumPy arrays or Dask collections (arrays, or a DataFrame/Series) with the
    same rows; ``x`` holds ``feature_names`` in order. ``days`` (the calendar day of each row) is
    needed only with ``early_stopping_rounds``. Returns a plain ``xgboost.Booster``, like the
    single-machine path (after early stopping it carries ``best_iteration``; the bundle trims it).
    """
    from xgboost import dask as dxgb

    tree_method = params["tree_method"]
    if tree_method == "exact":
        raise ConfigError(
            "model.xgboost.tree_method 'exact' trains on one machine only; use 'hist' or 'approx' on Dask"
        )
    stop = params["early_stopping_rounds"]
    if stop is not None and days is None:
        raise ConfigError(
            "early_stopping_rounds on Dask needs each row's day (days=...) to hold out the window's last day"
        )
    n_workers = max(1, len(client.nthreads()))
    # NumPy input: one block per worker, each worker holding one contiguous slice of rows. Labels and
    # days given as NumPy follow the features' blocks, so the rows line up.
    x_d = _as_dask_array(x, max(1, math.ceil(len(x) / n_workers)) if isinstance(x, np.ndarray) else 1)
    rows = x_d.chunks[0]
    y_d = _as_dask_array(y, rows)

    def matrix(mask: Any, ref: Any = None) -> Any:
        data, label = (x_d, y_d) if mask is None else (x_d[mask], y_d[mask])
        if tree_method == "hist":
            return dxgb.DaskQuantileDMatrix(
                client, data, label, feature_names=feature_names, max_bin=params["max_bin"], ref=ref
            )
        return dxgb.DaskDMatrix(client, data, label, feature_names=feature_names)

    translated = booster_params(params, seed)
    rounds = params["n_estimators"]
    # Every Dask computation here (ours and xgboost.dask's) runs on ``client``: with another client
    # created later in the same process, xgboost.dask otherwise hangs (measured) on the default one.
    with client.as_current():
        if stop is None:
            output = dxgb.train(client, translated, matrix(None), rounds, verbose_eval=False)
        else:
            holdout = last_day_holdout(y_d, _as_dask_array(days, rows))
            train = matrix(~holdout)
            evaluation = matrix(holdout, ref=train if tree_method == "hist" else None)
            output = dxgb.train(
                client,
                translated,
                train,
                rounds,
                evals=[(evaluation, "last_day")],
                early_stopping_rounds=stop,
                verbose_eval=False,
            )
    booster: xgboost.Booster = output["booster"]
    _log.info("dask xgboost trained", workers=n_workers, rounds=booster.num_boosted_rounds())
    return booster
