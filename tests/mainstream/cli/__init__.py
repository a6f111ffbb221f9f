"""Tests of `mainstream/cli/`."""
