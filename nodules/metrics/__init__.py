"""Quality metrics of generated nodules, in NumPy (no TensorFlow): callers bring the images."""
