"""Tests of `mainstream/core/`."""
