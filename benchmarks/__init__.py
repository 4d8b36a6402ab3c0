"""Benchmarks for keras_sparse (not tests): run each with `python -m benchmarks.<name>`.

Results (JSON + Markdown, with machine, versions and date) go to
`benchmarks/results/`. See docs/benchmark_protocol.md for the protocol.
"""
