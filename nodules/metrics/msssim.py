"""MS-SSIM (Wang, Simoncelli & Bovik 2003) between consecutive images of one set: a diversity measure of generated
images (PGGAN, Odena et al.).  Lower = more diverse.  Plain NumPy; images are [N, C, H, W] on the 0..255 scale.
"""
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_taps(size, sigma):
    """Normalised 1-D Gaussian of `size` taps centred between the middle taps when `size` is even.

    Its outer product with itself is the reference implementations' 2-D window (the 2-D Gaussian is separable).
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-x * x / (2.0 * sigma * sigma))
    return taps / taps.sum()


def _filter_valid(images, taps):
    """Separable 'valid' filtering of the last two axes: [..., H, W] -> [..., H - k + 1, W - k + 1]."""
    k = len(taps)
    height, width = images.shape[-2] - k + 1, images.shape[-1] - k + 1
    rows = sum(taps[i] * images[..., i:i + height, :] for i in range(k))
    return sum(taps[i] * rows[..., i:i + width] for i in range(k))


def _ssim_and_contrast(a, b, max_value, filter_size, filter_sigma, k1, k2):
    """Per-image SSIM and contrast-structure term at one scale (means over channels and 'valid' pixels)."""
    size = min(filter_size, a.shape[-2], a.shape[-1])
    taps = gaussian_taps(size, filter_sigma * size / float(filter_size))
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a * mu_a
    var_b = _filter_valid(b * b, taps) - mu_b * mu_b
    covariance = _filter_valid(a * b, taps) - mu_a * mu_b
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    contrast = (2.0 * covariance + c2) / (var_a + var_b + c2)
    luminance = (2.0 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
    axes = (1, 2, 3)
    return np.mean(luminance * contrast, axis=axes), np.mean(contrast, axis=axes)


def _average_down(images):
    """2x2 block average; an odd side first repeats its last row/column (the reference's 'reflect' edge)."""
    pad = [(0, 0)] * (images.ndim - 2) + [(0, images.shape[-2] % 2), (0, images.shape[-1] % 2)]
    if any(p[1] for p in pad):
        images = np.pad(images, pad, mode='edge')
    return 0.25 * (images[..., 0::2, 0::2] + images[..., 0::2, 1::2]
                   + images[..., 1::2, 0::2] + images[..., 1::2, 1::2])


def ms_ssim(images_a, images_b, max_value=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03,
            weights=MS_SSIM_WEIGHTS, chunk=256):
    """Multi-scale SSIM of each pair (images_a[i], images_b[i]); float64 [N], 1 for identical images.

    Scales: the images, then 2x2 averages of the previous scale (len(weights) scales; sides >= 2**(scales-1)).
    At each scale a Gaussian window filters with 'valid' borders; on small scales it shrinks to
    size = min(filter_size, height, width) taps with sigma = filter_sigma * size / filter_size (e.g. 64x64
    images: 11, 11, 11, 8 and 4 taps, sigma 1.5, 1.5, 1.5, 1.09, 0.545). Per image, SSIM and the
    contrast-structure term are averaged over channels and pixels; the result is
    prod_{s < last} cs_s ** w_s * ssim_last ** w_last, with negative terms clipped to 0 first (as TensorFlow's
    ssim_multiscale does), so values lie in 0..1.
    """
    a, b = np.asarray(images_a), np.asarray(images_b)
    if a.ndim == 3:
        a, b = a[:, None], b[:, None]
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError('MS-SSIM compares image batches of one shape [N, C, H, W], got %s and %s'
                         % (list(np.shape(images_a)), list(np.shape(images_b))))
    smallest = 2 ** (len(weights) - 1)
    if min(a.shape[2:]) < smallest:
        raise ValueError('MS-SSIM over %d scales needs images of at least %dx%d, got %dx%d'
                         % (len(weights), smallest, smallest, a.shape[3], a.shape[2]))
    result = np.ones(a.shape[0])
    for start in range(0, a.shape[0], chunk):  # bounded float64 temporaries for large sets
        x = a[start:start + chunk].astype(np.float64)
        y = b[start:start + chunk].astype(np.float64)
        for scale, weight in enumerate(weights):
            ssim, contrast = _ssim_and_contrast(x, y, max_value, filter_size, filter_sigma, k1, k2)
            last = scale == len(weights) - 1
            result[start:start + chunk] *= np.maximum(ssim if last else contrast, 0.0) ** weight
            if not last:
                x, y = _average_down(x), _average_down(y)
    return result


def ms_ssim_consecutive_pairs(images, **kwargs):
    """Mean MS-SSIM of the pairs (0, 1), (2, 3), ... of one set (an odd last image is left out).

    A diversity measure: near-duplicates score close to 1, unrelated images far lower.
    """
    images = np.asarray(images)
    pairs = len(images) // 2
    if pairs < 1:
        raise ValueError('MS-SSIM of consecutive pairs needs at least 2 images, got %d' % len(images))
    return float(np.mean(ms_ssim(images[0:2 * pairs:2], images[1:2 * pairs:2], **kwargs)))
