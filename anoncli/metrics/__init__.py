"""Recognizers used as evaluators, and image metrics."""
