"""lmforge: one tool for the working life of a language model."""

__version__ = "0.1.0"
