"""The API's routes, one module per resource; each route validates input and calls a service."""
