"""Held-out evaluation: the metrics that make reward over-optimization visible."""
