"""Helpers for the demo, the test suite and the benchmarks (not part of the wheel)."""
