"""The training recipe and its parts: optimizer, schedules, checkpoints, early stopping."""
