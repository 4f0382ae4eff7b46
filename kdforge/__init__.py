"""kdforge: distil big vision models into small deployable ones, export them and profile their cost."""

__version__ = "0.1.0"
