"""Metric functions and evaluation reports."""
