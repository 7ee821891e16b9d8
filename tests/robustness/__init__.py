"""The robustness suite of issue 12 (a package, so its conftest never shadows tests/conftest.py)."""
