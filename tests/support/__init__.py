"""Helpers shared by the test packages: real tiny packages, nodes, daemons, brokers.

Plain functions and classes only; the fixtures built from them live in tests/conftest.py.
"""
