"""Shared utilities: user errors, atomic outputs, the command-line helpers and the TensorFlow import."""
