"""Nodule generation with a progressive-growing WGAN: the library behind the numbered scripts."""
