"""Data augmentation (``data.augment``, ``lmforge augment``) and the synonym sources the
word-substitution attack shares with it."""
