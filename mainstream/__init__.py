"""Mainstream: shared-stem edge video analytics with an event-F1 scheduler."""

__version__ = "0.1.0"
