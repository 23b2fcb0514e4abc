"""GPU benchmarks against PyTorch: ``python -m benchmarks run SUITE`` (suites in suites.py)."""
