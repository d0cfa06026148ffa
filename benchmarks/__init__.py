"""Benchmarks: print figures, never assert timings. `python -m benchmarks` or `adae-stream bench`."""
