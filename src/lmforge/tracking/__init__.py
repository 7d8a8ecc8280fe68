"""Run folders, metrics logs, TensorBoard events and HTML reports."""
