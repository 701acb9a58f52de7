"""ember's version, in the bottom tier so that any layer can record it without importing ``ember``."""

__version__ = "0.1.0"
