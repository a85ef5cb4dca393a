"""safetyml: risk models for a delivery platform's safety team."""

__version__ = "0.1.0"
