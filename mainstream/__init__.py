"""Mainstream: shared-stem edge video analytics with an event-F1 scheduler.

`core/` (layer 0) is shared by every part; `node/` (layer 3) composes the parts into a running
node; `cli/` (layer 5) is the `mainstream` command. docs/architecture.md has the whole table.
"""

from mainstream.core import __version__

__all__ = ["__version__"]
