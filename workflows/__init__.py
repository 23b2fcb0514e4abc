"""Runnable end-to-end examples and the ``cupyrt`` command line."""
