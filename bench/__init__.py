"""Benchmarks: the lab's table reproduced, and load tests against nginx and Varnish."""
