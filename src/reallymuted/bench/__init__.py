"""Benchmarks (``make bench``): wall time and memory of the study's parts, against targets,
each beside a baseline measured in the same run (reallymuted.bench.common).

Timings are measured here, never asserted in unit tests. Each benchmark writes one JSON file
under the output directory with the baseline, what was measured, the ratio, the target and
whether it was met.
"""
