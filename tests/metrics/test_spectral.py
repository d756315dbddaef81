"""nodules/metrics/spectral.py: catches a checkerboard and a grid, stays near 1 on phantoms; the spectrum and the
neighbourhood ratio against references written with explicit sums and loops."""
import os

import numpy as np
import pytest

from conftest import ROOT
from nodules.data import dataset
from nodules.metrics import spectral


@pytest.fixture(scope='module')
def shipped():
    """The shipped AIS phantoms (300 patches, uint8 [N, 1, 64, 64])."""
    return dataset.read_images(os.path.join(ROOT, 'processData', 'AIS', 'AIS-r06.tfrecords'))


def dft_power(image):
    """|sum_y sum_x w(y, x) (image - mean) e^{-2 pi i (ky y / H + kx x / W)}|^2 for every (ky, kx), by matrices."""
    h, w = image.shape
    window = np.outer(np.sin(np.pi * np.arange(h) / h) ** 2, np.sin(np.pi * np.arange(w) / w) ** 2)  # periodic Hann
    x = (image - image.mean()) * window
    fy = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fx = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    return np.abs(fy.dot(x).dot(fx.T)) ** 2


def test_mean_power_spectrum_matches_an_explicit_dft():
    images = np.random.RandomState(0).randint(0, 256, size=(3, 16, 24)).astype(np.uint8)
    expected = np.mean([dft_power(image.astype(np.float64)) for image in images], axis=0)
    assert spectral.mean_power_spectrum(images[:, np.newaxis], batch=2) == pytest.approx(expected, rel=1e-9)


def test_peak_ratio_is_power_over_the_mean_of_its_24_neighbours():
    power = np.random.RandomState(1).rand(16, 16) + 0.5
    ratios = {(fy, fx): ratio for ratio, fy, fx in spectral.peak_ratios(power)}
    for (fy, fx), ratio in ratios.items():
        ky, kx = int(round(fy * 16)) % 16, int(round(fx * 16)) % 16
        others = [power[(ky + a) % 16, (kx + b) % 16] for a in range(-2, 3) for b in range(-2, 3) if (a, b) != (0, 0)]
        assert ratio == pytest.approx(power[ky, kx] / np.mean(others), rel=1e-12)
    # every multiple of 1/8 on both axes but (0, 0), one of each mirror pair: (64 - 4) / 2 + 3 self-mirrored
    assert len(ratios) == 33 and (0.0, 0.0) not in ratios


def test_phantoms_are_near_one(shipped):
    result = spectral.spectral_peaks(shipped)
    assert 0.9 < result['peak'] < 1.3
    assert result['image_count'] == 300 and sorted(result['by_period']) == ['2', '4', '8']


def test_a_checkerboard_is_caught_at_period_2(shipped):
    board = (np.indices((64, 64)).sum(axis=0) % 2) * 6.0 - 3.0  # +-3 grey levels
    result = spectral.spectral_peaks(np.clip(shipped[:, 0] + board, 0, 255))
    assert result['peak'] > 5.0
    assert [abs(f) for f in result['frequency']] == [0.5, 0.5] and result['period_px'] == [2.0, 2.0]
    assert result['by_period']['2'] == result['peak'] and result['by_period']['8'] < 1.3


def test_a_grid_every_8_pixels_is_caught(shipped):
    """Faint bright lines every 8 rows and columns (the lattice of undertrained up-sampling layers)."""
    grid = np.zeros((64, 64))
    grid[3::8, :] += 4.0
    grid[:, 5::8] += 4.0
    result = spectral.spectral_peaks(np.clip(shipped[:, 0] + grid, 0, 255))
    assert result['peak'] > 3.0 and result['by_period']['8'] > 2.0
    assert 'lattice period' in spectral.describe_peak(result)


def test_lattice_period_and_input_checks():
    assert spectral.lattice_period(0.5, 0.0) == 2
    assert spectral.lattice_period(0.25, -0.5) == 4
    assert spectral.lattice_period(0.375, 0.125) == 8
    with pytest.raises(ValueError, match='multiples of 8'):
        spectral.spectral_peaks(np.zeros((2, 20, 20)))
    with pytest.raises(ValueError, match='grayscale'):
        spectral.spectral_peaks(np.zeros((2, 3, 16, 16)))
