"""Metrics, slices, fairness, explanations and promotion gates."""
