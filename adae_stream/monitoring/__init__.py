"""Prometheus metrics, the sliding score window, KS drift and the /metrics + /healthz server."""
