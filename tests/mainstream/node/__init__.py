"""Tests of `mainstream/node/`."""
