"""Evaluation: scorers and metrics (see docs/interfaces.md)."""
