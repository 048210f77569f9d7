"""Experiments: datasets, training runners, benchmarks and plots."""
