"""Prefect flows: wiring only, each task one call into the package.

``training_flow``: simulate or ingest → validate → features → Feast → training set → (tune) → train →
evaluate → gates → register → promote. ``batch_flow``: batch inference. ``monitoring_flow``: drift
and performance monitoring. ``deployments``: the scheduled deployments. ``runtime``: process set-up
(telemetry off). Importing a module here imports Prefect; nothing in the package imports them.
"""
