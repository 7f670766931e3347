"""Latency: measurement (paired, interleaved timings), the regression gate, benchmark history."""
