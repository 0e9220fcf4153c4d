"""Fraud detection: the whole ML lifecycle, from a data contract to monitored serving.

Importing the package has no side effects: no logging set-up, no directories, no network.
"""

__version__ = "0.1.0"
