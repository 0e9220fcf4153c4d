"""Scoring: the framework-free scorer and its online and batch shells."""
