"""optim's version (a module of its own: the package face imports the API, which stands above everything)."""

__version__ = "0.1.0"
