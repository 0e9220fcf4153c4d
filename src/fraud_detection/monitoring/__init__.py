"""Monitoring a deployed model: performance on delayed labels, alerts, A/B comparison, the monitoring pass.

Drift itself is computed by :mod:`fraud_detection.evaluation.drift`; this package joins what the server
logged with what arrived later and decides what deserves a person's attention.
"""
