"""Subtype classification: the CNN, the cross-validated experiment, and its statistics and reports."""
