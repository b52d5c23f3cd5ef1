"""optim: export, quantize, check, benchmark and report vision models for deployment."""

__version__ = "0.1.0"
