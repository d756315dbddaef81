"""Spectral artifact check: does a generator draw a lattice at its up-sampling periods?

Nearest-neighbour and fused transposed-convolution up-scaling leave faint periodic patterns (grids, checkerboards)
whose periods divide the up-sampling steps: 2, 4 and 8 px for three doublings.  They are hard to see in one patch
and plain in the mean power spectrum of many: a narrow peak above the smooth spectrum of natural texture.

  1. each patch minus its mean, times a 2-D Hann window (periodic, so no frequency is favoured; the window keeps
     the patch borders from spreading power along the axes);
  2. mean over patches of |FFT|^2;
  3. at every frequency (fy, fx) whose two components are multiples of 1/8 cycle per pixel (periods 2, 4, 8 px or
     constant along an axis), except (0, 0): its power over the mean power of its neighbours within +-2 bins on
     each axis (a 5x5 block without itself; the spectrum is periodic, so neighbours wrap around);
  4. report the largest ratio and where it is.
Real patches and phantoms give ~1.0-1.2 (a smooth spectrum); a lattice gives a clear peak (the undertrained demo
generators reached 1.4 at period 8).

Images: uint8 or float [N, H, W] or [N, 1, H, W], H and W multiples of 8.  Plain NumPy: both stacks.
"""
import numpy as np

BASE_PERIOD = 8        # candidates: multiples of 1/BASE_PERIOD cycle per pixel (periods 8, 4 and 2 px)
NEIGHBOUR_RADIUS = 2   # bins on each side, on each axis


def _as_patches(images):
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError('spectral check needs grayscale images [N, H, W] or [N, 1, H, W], N >= 1; got shape %s'
                         % (x.shape,))
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError('spectral check: images contain NaN or infinite values')
    return x


def hann_window(height, width):
    """Periodic 2-D Hann window [height, width]: outer product of 0.5 - 0.5 cos(2 pi n / N)."""
    def periodic(n):
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    return np.outer(periodic(height), periodic(width))


def mean_power_spectrum(images, batch=256):
    """float64 [H, W]: mean over images of |FFT2(hann * (image - mean(image)))|^2; index [ky, kx] is the
    frequency (ky / H, kx / W) cycles per pixel, modulo 1 (numpy.fft order, (0, 0) at [0, 0])."""
    x = _as_patches(images)
    window = hann_window(x.shape[1], x.shape[2])
    total = np.zeros(x.shape[1:])
    for start in range(0, len(x), batch):
        part = x[start:start + batch]
        part = (part - part.mean(axis=(1, 2), keepdims=True)) * window
        total += np.sum(np.abs(np.fft.fft2(part)) ** 2, axis=0)
    return total / len(x)


def neighbourhood_mean(power, ky, kx, radius=NEIGHBOUR_RADIUS):
    """Mean of power[ky + a, kx + b] for a, b in -radius..radius, (a, b) != (0, 0), indices wrapping around."""
    height, width = power.shape
    rows = (ky + np.arange(-radius, radius + 1)) % height
    cols = (kx + np.arange(-radius, radius + 1)) % width
    block = power[np.ix_(rows, cols)]
    return (block.sum() - power[ky, kx]) / (block.size - 1)


def peak_ratios(power, base_period=BASE_PERIOD, radius=NEIGHBOUR_RADIUS):
    """[(ratio, fy, fx)] at every candidate frequency of a mean power spectrum (see the module docstring);
    fy, fx in cycles per pixel, in [-0.5, 0.5).  A frequency and its mirror image (-fy, -fx) have the same power
    (real images), so only one of each pair is listed."""
    height, width = power.shape
    if height % base_period or width % base_period:
        raise ValueError('spectral check at periods dividing %d px needs image sizes that are multiples of %d, '
                         'got %dx%d' % (base_period, base_period, width, height))
    if min(height, width) < 2 * radius + 1:
        raise ValueError('spectral check needs images of at least %dx%d' % (2 * radius + 1, 2 * radius + 1))
    step_y, step_x = height // base_period, width // base_period
    results = []
    for a in range(-(base_period // 2), base_period // 2):
        for b in range(-(base_period // 2), base_period // 2):
            fy, fx = a / float(base_period), b / float(base_period)
            if (a, b) == (0, 0):
                continue
            mirror = ((-a + base_period // 2) % base_period - base_period // 2,
                      (-b + base_period // 2) % base_period - base_period // 2)
            if (a, b) < mirror:  # its mirror image is listed instead (or it is its own mirror: kept)
                continue
            ky, kx = (a * step_y) % height, (b * step_x) % width
            neighbours = neighbourhood_mean(power, ky, kx, radius)
            ratio = power[ky, kx] / neighbours if neighbours > 0 else (np.inf if power[ky, kx] > 0 else 1.0)
            results.append((float(ratio), fy, fx))
    return results


def lattice_period(fy, fx, base_period=BASE_PERIOD):
    """The shortest period P (px, dividing base_period) of a lattice with a harmonic at (fy, fx): both
    components multiples of 1/P."""
    for period in range(2, base_period + 1):
        if base_period % period == 0 and _whole(fy * period) and _whole(fx * period):
            return period
    return base_period


def _whole(value):
    return abs(value - round(value)) < 1e-9


def _period(f):
    return None if f == 0 else 1.0 / abs(f)


def spectral_peaks(images, base_period=BASE_PERIOD, radius=NEIGHBOUR_RADIUS):
    """The check on a set of patches: dict (JSON-ready) with
      peak:            the largest ratio (power over its neighbourhood) at the candidate frequencies
      frequency:       [fy, fx] of that peak, cycles per pixel
      period_px:       [period along y, period along x] of that peak (None = constant along that axis)
      by_period:       {'2': largest ratio among the frequencies of a lattice of period 2 px, '4': the same for
                       period 4 px but not 2, '8': for period 8 but not 4}
      image_count, base_period, neighbour_radius
    """
    power = mean_power_spectrum(images)
    ratios = peak_ratios(power, base_period, radius)
    peak, fy, fx = max(ratios)
    by_period = {}
    for ratio, y, x in ratios:
        period = lattice_period(y, x, base_period)
        by_period[str(period)] = max(by_period.get(str(period), 0.0), ratio)
    return dict(peak=peak, frequency=[fy, fx], period_px=[_period(fy), _period(fx)], by_period=by_period,
                image_count=int(len(np.asarray(images))), base_period=int(base_period),
                neighbour_radius=int(radius))


def describe_peak(result):
    """'1.117 at (fy, fx) = (0.375, 0.125) cycles/px, lattice period 8 px' and the like, for terminals."""
    fy, fx = result['frequency']
    return '%.3f at (fy, fx) = (%g, %g) cycles/px, lattice period %d px' % (
        result['peak'], fy, fx, lattice_period(fy, fx, result['base_period']))
