"""Benchmarks: print figures, never assert timings.

`make bench` or `python -m benchmarks`, from a checkout: the benchmarks are not part of the wheel.
"""
