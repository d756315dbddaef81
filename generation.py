"""Turning a trained generator into nodule images: latents, batched generation, interpolation strips."""
import os

import numpy as np

from errors import UserError
import outputs

PRECISIONS = ('float32', 'bfloat16', 'float16')


def random_latents(number, latent_size, seed):
    """Standard-normal latent vectors; the same seed gives the same vectors on every stack (RandomState)."""
    return np.random.RandomState(seed).randn(number, latent_size).astype(np.float32)


def load_latents(path, latent_size):
    """Latent vectors [N, latent_size] from a .npy file, checked against the generator."""
    if not os.path.isfile(path):
        raise UserError('%s: no such latents file' % path)
    try:
        latents = np.load(path, allow_pickle=False)
    except Exception:
        raise UserError('%s: not a NumPy .npy array' % path)
    if latents.ndim != 2 or latents.shape[1] != latent_size or latents.shape[0] == 0:
        raise UserError('%s: latents have shape %s; this generator needs [N, %d]'
                        % (path, list(latents.shape), latent_size))
    if not np.all(np.isfinite(latents)):
        raise UserError('%s: latents contain NaN or infinite values' % path)
    return latents.astype(np.float32)


def one_hot_labels(number, label_size, label_index=None):
    """Labels for a conditional generator (all of one class), or the empty [N, 0] input of an unconditional one."""
    labels = np.zeros((number, label_size), dtype=np.float32)
    if label_size:
        if label_index is None or not 0 <= label_index < label_size:
            raise UserError('this generator is conditional on %d classes: pass --label-index 0..%d'
                            % (label_size, label_size - 1))
        labels[:, label_index] = 1.0
    return labels


def generate_images(Gs, latents, label_index=None, batch_size=32, precision='float32', progress=None):
    """uint8 images for `latents`: [N, H, W] for grayscale generators, [N, H, W, 3] for RGB ones.

    Pixels are clip(rint((x + 1) / 2 * 255), 0, 255) of the generator output x, as in the original.
    """
    from tfcompat import TF_VERSION, tf
    labels = one_hot_labels(len(latents), Gs.input_shapes[1][1], label_index)
    try:
        images = Gs.run(latents, labels, minibatch_size=batch_size, progress=progress, dtype=precision)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError):
        if precision == 'float32':
            raise
        raise UserError('TensorFlow %s has no %s kernels for these layers on this device; use --precision float32'
                        % (TF_VERSION, precision))
    images = outputs.float_to_uint8(images)
    return images[..., 0] if images.shape[-1] == 1 else images


def interpolation_latents(endpoints, steps):
    """For pairs of latents (rows 0-1, 2-3, ...) the strip [a, `steps` points between, b] of each pair,
    linearly interpolated: returns [pairs * (steps + 2), latent_size]."""
    a, b = endpoints[0::2], endpoints[1::2]
    t = np.linspace(0.0, 1.0, steps + 2, dtype=np.float32)[np.newaxis, :, np.newaxis]
    strips = a[:, np.newaxis] * (1 - t) + b[:, np.newaxis] * t  # this form ends exactly on a and b
    return strips.reshape(-1, endpoints.shape[1])
