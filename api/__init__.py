"""REST API: thin FastAPI routes over the services of the other packages."""
