"""The common ground of the per-resource services."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mainstream.node.registry import (
    Registry,
)
from mainstream.node.settings import Settings

if TYPE_CHECKING:
    from mainstream.node.node import Node


logger = logging.getLogger(__name__)


class NodeService:
    """What every resource's service shares: the node, its registry and its settings."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def registry(self) -> Registry:
        return self.node.registry

    @property
    def settings(self) -> Settings:
        return self.node.settings
