"""Decisions from live evidence: anytime-valid tests on the paired outcomes the feedback join counts."""
