"""Task-agnostic exploration policies, registered by name (see `base.EXPLORERS`)."""

from collector.explorers.base import EXPLORERS, Explorer, ExplorerSpec, explorer_class, make_explorer

__all__ = ["EXPLORERS", "Explorer", "ExplorerSpec", "explorer_class", "make_explorer"]
