"""Feast definitions of the fraud feature store: declarations only, built from a ``FeatureConfig``.

Nothing here touches a store. :func:`build_definitions` turns the feature config (the single list of
feature names, ``fraud_detection.features.engineering.FeatureConfig``) into Feast objects;
``fraud_detection.features.store`` (the only module that talks to Feast) applies and queries them.
The objects depend on the config (window lengths name the fields), so they are built by a function
rather than declared at module level, and ``feast apply`` on this folder finds nothing to apply: use
``fraud features apply`` (see ``.feastignore``).

Objects (names are the contract; change them only with a new service version):

* entities ``customer`` (``customer_id``) and ``terminal`` (``terminal_id``), both INT64;
* batch feature views over the tables ``fraud features build`` writes, each row an entity's state
  as of one transaction *including* it (``engineering.split_feature_tables``), event time
  ``event_timestamp``: ``customer_windows`` (customer), ``terminal_windows`` (terminal) and
  ``customer_terminal_usage`` (customer + terminal). Source paths are the files in the feature
  folder the store is opened on (``source_dir``, absolute).
* on-demand view ``transaction_request_features``: ``amount``, ``tx_during_weekend``,
  ``tx_during_night`` and ``customer_amount_ratio_{h}d`` from the request fields
  ``request_amount`` and ``request_timestamp`` plus the customer's
  ``customer_prior_avg_amount_{h}d``, computed by ``engineering.time_features`` and
  ``engineering.amount_ratio``, the functions the batch build uses, so the two paths cannot skew.
  The request fields are not called ``amount``/``event_timestamp``: ``event_timestamp`` is the
  entity frame's join time in historical retrieval, and an input named ``amount`` would collide
  with the output feature ``amount`` (Feast then returns two ``amount`` columns).
* feature service ``fraud_v1``: every model feature, in ``FeatureConfig.feature_names`` order
  (request features, customer, terminal, customer-terminal).

**TTL: 90 days** on ``customer_windows`` and ``terminal_windows``. It is longer than every window
(30 days + the 7-day label delay), so within it a stored row is still meaningful; beyond it the
offline store treats the entity as unknown (Feast's file store drops the entity row) and
``store.online_features`` does the same online (Feast itself does not apply a TTL online):
``store`` then uses its documented defaults and flags the result as degraded, and
``store.historical_features`` raises by default. ``customer_terminal_usage`` has **no TTL**
(``timedelta(0)``): first use looks at the customer's whole history on the terminal, so an old
row is still the right answer.

**Ties.** Several rows of one entity at the same timestamp (simultaneous transactions) hold the
same values by construction (``engineering``'s tie rule), so whichever one Feast's point-in-time
join or the online store keeps, the features are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    RequestSource,
    ValueType,
)
from feast.types import Float64, Int64, UnixTimestamp

from fraud_detection.features.build import table_file
from fraud_detection.features.engineering import FeatureConfig

FEATURE_SERVICE_NAME = "fraud_v1"
TTL = timedelta(days=90)  # customer and terminal windows
PAIR_TTL = timedelta(0)  # none: first use is over the whole history
TIMESTAMP_FIELD = "event_timestamp"

CUSTOMER_VIEW = "customer_windows"
TERMINAL_VIEW = "terminal_windows"
PAIR_VIEW = "customer_terminal_usage"
REQUEST_VIEW = "transaction_request_features"
REQUEST_SOURCE = "transaction_request"

REQUEST_AMOUNT = "request_amount"
REQUEST_TIMESTAMP = "request_timestamp"

CUSTOMER_KEY = "customer_id"
TERMINAL_KEY = "terminal_id"

#: Features stored as 0/1 integers (every other feature is a float: counts, means, risks, ratios,
#: seconds). Matches the dtypes ``engineering.build_features`` produces (tested).
INTEGER_FEATURES = frozenset(
    {"tx_during_weekend", "tx_during_night", "customer_terminal_first_use", "terminal_last_known_fraud"}
)

#: Feature table (``engineering.split_feature_tables`` key) behind each batch view.
VIEW_TABLES = {CUSTOMER_VIEW: "customer", TERMINAL_VIEW: "terminal", PAIR_VIEW: "customer_terminal"}


def feature_fields(names: Iterable[str]) -> list[Field]:
    """Feast fields for feature ``names``: Int64 for the 0/1 flags, Float64 for the rest."""
    return [Field(name=name, dtype=Int64 if name in INTEGER_FEATURES else Float64) for name in names]


@dataclass(frozen=True)
class FeatureDefinitions:
    """Every Feast object of the store, built from one ``FeatureConfig``."""

    config: FeatureConfig
    customer: Entity
    terminal: Entity
    views: dict[str, FeatureView]  # by view name, in service order
    request_view: OnDemandFeatureView
    service: FeatureService

    def objects(self) -> list[Any]:
        """What ``FeatureStore.apply`` registers."""
        return [self.customer, self.terminal, *self.views.values(), self.request_view, self.service]

    def view_features(self) -> dict[str, list[str]]:
        """Feature names per view (the on-demand view included), in service order."""
        return {
            projection.name: [field.name for field in projection.features]
            for projection in self.service.feature_view_projections
        }


def request_features(
    inputs: dict[str, list[Any]], prior_avg_feature: str, ratio_feature: str
) -> dict[str, list[Any]]:
    """The on-demand view's transform (python mode: columns as lists), by the batch build's functions.

    An unknown customer's prior average arrives as None: NaN gives the neutral ratio 1.0, as 0 does.
    """
    import numpy as np
    import pandas as pd

    from fraud_detection.features import engineering

    flags = engineering.time_features(pd.Series(pd.to_datetime(inputs[REQUEST_TIMESTAMP], utc=True)))
    amount = np.asarray(inputs[REQUEST_AMOUNT], dtype=np.float64)
    prior = np.asarray([np.nan if v is None else v for v in inputs[prior_avg_feature]], dtype=np.float64)
    return {
        "amount": amount.tolist(),
        "tx_during_weekend": flags["tx_during_weekend"].tolist(),
        "tx_during_night": flags["tx_during_night"].tolist(),
        ratio_feature: engineering.amount_ratio(amount, prior).tolist(),
    }


# Feast stores a UDF's source text in the registry and re-executes it (not the pickled function)
# wherever the view is loaded, in a namespace holding only pandas and numpy: so the registered UDF
# is this self-contained stub, with the config's feature names as literals, that imports and calls
# ``request_features`` above.
_UDF_SOURCE = """def {name}(inputs):
    from fraud_detection.features.repo.definitions import request_features

    return request_features(inputs, {prior_avg_feature!r}, {ratio_feature!r})
"""


def _request_udf(config: FeatureConfig) -> tuple[Callable[[dict], dict], str]:
    source = _UDF_SOURCE.format(
        name=REQUEST_VIEW,
        prior_avg_feature=config.prior_avg_amount_feature,
        ratio_feature=config.amount_ratio_feature,
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the same text Feast executes when it loads the view
    return namespace[REQUEST_VIEW], source


def build_definitions(config: FeatureConfig, source_dir: str) -> FeatureDefinitions:
    """Entities, views, the on-demand view and the ``fraud_v1`` service for ``config``'s features.

    ``source_dir`` is the folder (absolute path or URL) holding the tables ``fraud features build``
    wrote; sources name their files there, since offline stores differ in how they resolve paths.
    """
    customer = Entity(
        name="customer",
        join_keys=[CUSTOMER_KEY],
        value_type=ValueType.INT64,
        description="A payment card (the handbook's customer).",
    )
    terminal = Entity(
        name="terminal",
        join_keys=[TERMINAL_KEY],
        value_type=ValueType.INT64,
        description="A payment terminal.",
    )

    def view(
        name: str, entities: list[Entity], features: list[str], description: str, ttl: timedelta = TTL
    ) -> FeatureView:
        table = VIEW_TABLES[name]
        source = FileSource(
            name=f"{table}_features",
            path=f"{source_dir.rstrip('/')}/{table_file(table)}",
            timestamp_field=TIMESTAMP_FIELD,
        )
        return FeatureView(
            name=name,
            entities=entities,
            ttl=ttl,
            schema=feature_fields(features),
            source=source,
            online=True,
            description=description,
            tags={"owner": "fraud", "table": table},
        )

    customer_view = view(
        CUSTOMER_VIEW,
        [customer],
        config.customer_features,
        "The customer's windows as of one of its transactions, that transaction included.",
    )
    terminal_view = view(
        TERMINAL_VIEW,
        [terminal],
        config.terminal_features,
        "The terminal's label-delayed windows as of one of its transactions.",
    )
    pair_view = view(
        PAIR_VIEW,
        [customer, terminal],
        config.pair_features,
        "Whether the transaction is the customer's first on this terminal.",
        ttl=PAIR_TTL,
    )
    request = RequestSource(
        name=REQUEST_SOURCE,
        schema=[
            Field(name=REQUEST_AMOUNT, dtype=Float64),
            Field(name=REQUEST_TIMESTAMP, dtype=UnixTimestamp),
        ],
        description="The transaction being scored: its amount and time.",
    )
    udf, udf_source = _request_udf(config)
    request_view = OnDemandFeatureView(
        name=REQUEST_VIEW,
        sources=[request, customer_view[[config.prior_avg_amount_feature]]],
        schema=feature_fields(config.request_features),
        udf=udf,
        udf_string=udf_source,
        mode="python",
        description="Request-time features, computed by the batch build's own functions.",
    )
    service = FeatureService(
        name=FEATURE_SERVICE_NAME,
        features=[request_view, customer_view, terminal_view, pair_view],
        description="Model features of fraud-xgb, in the model's column order.",
        tags={"model": "fraud-xgb"},
    )
    return FeatureDefinitions(
        config=config,
        customer=customer,
        terminal=terminal,
        views={v.name: v for v in (customer_view, terminal_view, pair_view)},
        request_view=request_view,
        service=service,
    )
