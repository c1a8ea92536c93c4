"""modelreg: the system of record for ML models, served over gRPC."""

__version__ = "0.1.0"
