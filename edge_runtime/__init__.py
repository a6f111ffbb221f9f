"""Edge runtime: camera ingestion, the shared-stem DAG executor, event detection, profiler."""
