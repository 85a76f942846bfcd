"""Batched generation, judges and metrics."""
