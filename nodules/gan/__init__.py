"""The progressive-growing GAN: networks, losses, augmentation, the TensorFlow network wrapper and its pickles."""
