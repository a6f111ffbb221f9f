"""M-Scheduler: the event-F1 model, the cost model and the search (pure logic, no I/O)."""
