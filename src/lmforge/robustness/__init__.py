"""Robustness of trained runs: the word-substitution attack of ``lmforge attack``."""
