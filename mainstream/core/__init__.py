"""Layer 0: what every other part of Mainstream shares and that imports nothing of the project.

Errors, logging, the M-Package manifest and format (safe loading included), and the base-model
zoo with its cut points.
"""

__version__ = "0.1.0"
