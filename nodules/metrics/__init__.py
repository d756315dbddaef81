"""Quality metrics of generated nodules, in NumPy (no TensorFlow; frd.py also uses the optional frd-score and
PyRadiomics): callers bring the images."""
