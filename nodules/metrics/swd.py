"""Sliced Wasserstein distance (SWD, Karras et al. 2018), offline and in plain NumPy.

SWD compares the distributions of 7x7 neighbourhoods of two image sets at every level of a Laplacian pyramid,
from full resolution down to 16x16.  Lower = closer.

Nothing is downloaded, and nothing here uses TensorFlow or a network: callers bring the images (compute_metrics.py
reads datasets, and generates through nodules/generation.py).  Images are uint8 (or any real numbers on the 0..255
scale) [N, C, H, W], C = 1 or 3.

Random draws (neighbourhood positions, projection directions) come from NumPy RandomState streams keyed by the
seed, so a result depends only on the images and the seed, on every stack:
  positions of set k (0 = images_a, 1 = images_b) at level l:
      RandomState([seed, k, l]).randint(3, size - 3, size=(N * 128, 2))   -> (row, column) of each centre
  directions at level l: RandomState([seed, 2, l]).randn(147, 128) per repeat, each column scaled to unit length
(l = 0 is full resolution; 147 = 3 channels x 7 x 7; image n owns the rows n*128 .. n*128+127).
"""
import numpy as np

from nodules.util import values

# ---------------------------------------------------------------------------------------------------------------
# Gaussian and Laplacian pyramids (Burt & Adelson), as PGGAN's SWD uses them

BINOMIAL_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # outer product with itself = the 5x5 kernel / 256


def _binomial_blur(images):
    """Filter the last two axes with the 5x5 binomial kernel, mirror edges (d c b | a b c d | c b a).

    The kernel is separable, so it runs as two 5-tap passes; output has the input's shape, in float64.
    """
    x = np.asarray(images, dtype=np.float64)
    height, width = x.shape[-2:]
    if min(height, width) < 3:
        raise ValueError('the 5x5 pyramid filter needs images of at least 3x3, got %dx%d' % (height, width))
    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (2, 2)], mode='reflect')
    t = BINOMIAL_TAPS
    x = (t[0] * x[..., 0:height, :] + t[1] * x[..., 1:height + 1, :] + t[2] * x[..., 2:height + 2, :]
         + t[3] * x[..., 3:height + 3, :] + t[4] * x[..., 4:height + 4, :])
    return (t[0] * x[..., 0:width] + t[1] * x[..., 1:width + 1] + t[2] * x[..., 2:width + 2]
            + t[3] * x[..., 3:width + 3] + t[4] * x[..., 4:width + 4])


def pyramid_down(images):
    """Blur, then keep every second row and column (even indices): [..., H, W] -> [..., ceil(H/2), ceil(W/2)]."""
    return _binomial_blur(images)[..., 0::2, 0::2]


def pyramid_up(images):
    """Insert zeros between samples ([..., H, W] -> [..., 2H, 2W]) and blur with 4x the kernel (keeps the mean)."""
    x = np.asarray(images, dtype=np.float64)
    up = np.zeros(x.shape[:-2] + (2 * x.shape[-2], 2 * x.shape[-1]))
    up[..., 0::2, 0::2] = x
    return 4.0 * _binomial_blur(up)


def gaussian_pyramid(images, levels):
    """[g0, g1, ...] with g0 = the images (float64) and g(k+1) = pyramid_down(gk); `levels` entries in all."""
    if levels < 1:
        raise ValueError('a pyramid needs at least one level, got %d' % levels)
    pyramid = [np.asarray(images, dtype=np.float64)]
    for _ in range(levels - 1):
        pyramid.append(pyramid_down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(images, levels):
    """Band-pass levels [g0 - up(g1), g1 - up(g2), ..., g(L-1)] of float images [N, C, H, W] (float64).

    The last entry is the low-pass Gaussian level itself, so reconstruct_laplacian() returns the input.
    H and W must be multiples of 2**(levels - 1).
    """
    shape = np.shape(images)
    step = 2 ** (levels - 1)
    if len(shape) < 2 or shape[-1] % step or shape[-2] % step:
        raise ValueError('a %d-level pyramid needs sizes divisible by %d, got %s' % (levels, step, list(shape)))
    gaussian = gaussian_pyramid(images, levels)
    bands = [fine - pyramid_up(coarse) for fine, coarse in zip(gaussian[:-1], gaussian[1:])]
    return bands + [gaussian[-1]]


def reconstruct_laplacian(pyramid):
    """Invert laplacian_pyramid(): upsample the coarsest level and add each band back, coarse to fine."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = pyramid_up(image) + band
    return image


# ---------------------------------------------------------------------------------------------------------------
# Sliced Wasserstein distance

SWD_MIN_RESOLUTION = 16


def swd_resolutions(size, min_resolution=SWD_MIN_RESOLUTION):
    """The pyramid levels SWD reports for square images of side `size`: size, size/2, ... >= min_resolution."""
    resolutions = []
    while size >= min_resolution:
        resolutions.append(size)
        size //= 2
    return resolutions


def _check_images(images, name, min_size):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise ValueError('%s: expected a non-empty batch [N, C, H, W] with C = 1 or 3, got shape %s'
                         % (name, list(images.shape)))
    if images.dtype.kind not in 'uif':
        raise ValueError('%s: expected real-valued pixels, got %s' % (name, images.dtype))
    size = images.shape[2]
    if images.shape[3] != size or not values.is_power_of_two(size, min_size):
        raise ValueError('%s: images must be square with a power-of-two side of at least %d, got %dx%d'
                         % (name, min_size, images.shape[3], size))
    return images


class _Descriptors(object):
    """The 7x7 neighbourhoods of one image set at one pyramid level, normalised per channel.

    Grayscale sets keep one channel: tiling it to three channels would store three equal copies, and the
    projection of such a tiled descriptor on a direction equals the projection of the single copy on the sum
    of that direction's three channel parts, which is what project() uses.
    """

    def __init__(self, images, level, levels, seed, set_index, nhood_size, nhoods_per_image, chunk, progress):
        count, channels, size = images.shape[0], images.shape[1], images.shape[2]
        half = nhood_size // 2
        level_size = size >> level
        if level_size < nhood_size:
            raise ValueError('%dx%d pyramid level is smaller than the %dx%d neighbourhoods'
                             % (level_size, level_size, nhood_size, nhood_size))
        rng = np.random.RandomState([seed, set_index, level])
        centres = rng.randint(half, level_size - half, size=(count * nhoods_per_image, 2))
        offsets = np.arange(-half, half + 1)
        self.channels = channels
        self.data = np.empty((count * nhoods_per_image, channels * nhood_size * nhood_size), dtype=np.float32)
        sums = np.zeros(channels)
        squares = np.zeros(channels)
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            # Only the Gaussian levels down to level + 1 are needed for this band.
            gaussian = gaussian_pyramid(images[start:stop], min(level + 2, levels))
            band = gaussian[level] - pyramid_up(gaussian[level + 1]) if level + 1 < levels else gaussian[level]
            rows = slice(start * nhoods_per_image, stop * nhoods_per_image)
            which = np.repeat(np.arange(stop - start), nhoods_per_image)
            y = centres[rows, 0:1] + offsets  # [m, 7]
            x = centres[rows, 1:2] + offsets
            patches = band[which[:, None, None], :, y[:, :, None], x[:, None, :]]  # [m, 7, 7, C]
            patches = patches.transpose(0, 3, 1, 2)  # [m, C, 7, 7]
            sums += patches.sum(axis=(0, 2, 3))
            squares += np.square(patches).sum(axis=(0, 2, 3))
            self.data[rows] = patches.reshape(len(which), -1)
            if progress is not None:
                progress(stop - start)
        values = float(self.data.shape[0] * nhood_size * nhood_size)
        mean = sums / values
        std = np.sqrt(np.maximum(squares / values - mean * mean, 0.0))
        std[std == 0] = 1.0  # a set without any variation at this level: centre it, nothing to scale
        per_channel = self.data.reshape(self.data.shape[0], channels, -1)
        per_channel -= mean.astype(np.float32)[:, None]
        per_channel /= std.astype(np.float32)[:, None]

    def project(self, directions):
        """Projections [K, M] (float32) of the M descriptors on K unit directions given as [3 * 49, K]."""
        if self.channels == 1:
            directions = directions.reshape(3, -1, directions.shape[1]).sum(axis=0)
        return np.dot(directions.T.astype(np.float32), self.data.T)


def _sliced_wasserstein(descriptors_a, descriptors_b, rng, dir_repeats, dirs_per_repeat, budget_bytes=2 ** 27):
    """Mean over dir_repeats x dirs_per_repeat random unit directions of the mean |sorted(pa) - sorted(pb)|."""
    count = descriptors_a.data.shape[0]
    dims = 3 * descriptors_a.data.shape[1] // descriptors_a.channels
    step = int(max(1, min(dirs_per_repeat, budget_bytes // (16 * count))))  # four [step, M] float32 arrays live
    total = 0.0
    for _ in range(dir_repeats):
        directions = rng.randn(dims, dirs_per_repeat)
        directions /= np.sqrt(np.sum(np.square(directions), axis=0, keepdims=True))
        for first in range(0, dirs_per_repeat, step):
            block = directions[:, first:first + step]
            projected_a = descriptors_a.project(block)
            projected_a.sort(axis=1)
            projected_b = descriptors_b.project(block)
            projected_b.sort(axis=1)
            projected_a -= projected_b
            total += float(np.abs(projected_a).sum(dtype=np.float64))
    return total / (float(dir_repeats) * dirs_per_repeat * count)


def sliced_wasserstein_distance(images_a, images_b, seed=0, nhood_size=7, nhoods_per_image=128, dir_repeats=4,
                                dirs_per_repeat=128, min_resolution=SWD_MIN_RESOLUTION, chunk=256, progress=None):
    """SWD between two equally large image sets [N, C, H, W] (0..255 scale; C = 1 or 3, may differ).

    Per pyramid level (full resolution, /2, ... down to `min_resolution`): `nhoods_per_image` random
    `nhood_size`^2 neighbourhoods per image of the Laplacian band (the coarsest level is the Gaussian low-pass),
    grayscale counted as three equal channels, each set's descriptors normalised per channel by that set's mean
    and standard deviation; then `dir_repeats` x `dirs_per_repeat` random unit directions, projections sorted,
    mean absolute difference. Returns (per-level distances x 1e3 from full resolution down, their average).

    Memory: one level at a time, float32 descriptors (N * 128 * 49 values per grayscale set) and projections
    computed in blocks of directions; images are filtered `chunk` at a time. `progress`, if given, is called
    with the number of images just processed (len(swd_resolutions(size)) * (Na + Nb) in all).
    """
    if not values.is_seed(seed):
        raise ValueError('the SWD seed must be %s, got %r' % (values.SEED_RANGE, seed))
    seed = int(seed)
    images_a = _check_images(images_a, 'images_a', min_resolution)
    images_b = _check_images(images_b, 'images_b', min_resolution)
    if images_a.shape[0] != images_b.shape[0]:
        raise ValueError('SWD compares sets of equal size, got %d and %d images'
                         % (images_a.shape[0], images_b.shape[0]))
    if images_a.shape[2:] != images_b.shape[2:]:
        raise ValueError('SWD compares images of one size, got %dx%d and %dx%d'
                         % (images_a.shape[3], images_a.shape[2], images_b.shape[3], images_b.shape[2]))
    levels = len(swd_resolutions(images_a.shape[2], min_resolution))
    distances = []
    for level in range(levels):
        described = [_Descriptors(images, level, levels, seed, index, nhood_size, nhoods_per_image, chunk, progress)
                     for index, images in enumerate((images_a, images_b))]
        rng = np.random.RandomState([seed, 2, level])
        distances.append(1e3 * _sliced_wasserstein(described[0], described[1], rng, dir_repeats, dirs_per_repeat))
        del described
    return distances, float(np.mean(distances))
