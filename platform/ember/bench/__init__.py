"""Benchmarks (`ember bench ...`): measured figures, never timed test assertions."""
