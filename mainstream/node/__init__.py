"""Layer 3: the running node — settings, registry, services per resource, the node itself
(the composition root), the re-planner, fleet pulls and training jobs."""
