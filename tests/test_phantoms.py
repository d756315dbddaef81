"""Tests for phantoms.py: the synthetic (not patient) lung-CT nodule patches used by the demo datasets."""
import numpy as np
import pytest

import phantoms   # the project root is on sys.path via tests/conftest.py

STATS_COUNT = 64
STATS_SEED = 2024


@pytest.fixture(scope='module')
def batches():
    """A few dozen patches per subtype, shared by the statistical tests."""
    return {s: phantoms.make_phantoms(s, STATS_COUNT, STATS_SEED).astype(np.float64) for s in phantoms.SUBTYPES}


def centre(images, half=2):
    """The (2 * half)^2 pixels around the patch centre, where the nodule sits (jittered by up to 3 px)."""
    mid = images.shape[1] // 2
    return images[:, mid - half:mid + half, mid - half:mid + half].reshape(len(images), -1)


def border(images, width=6):
    """The frame along the patch edges: mostly lung parenchyma."""
    return np.concatenate([images[:, :width, :].reshape(len(images), -1),
                           images[:, -width:, :].reshape(len(images), -1)], axis=1)


# ----------------------------------------------------------------------------- interface

@pytest.mark.parametrize('subtype', phantoms.SUBTYPES)
def test_shape_and_dtype(subtype):
    images = phantoms.make_phantoms(subtype, 3, 0)
    assert images.shape == (3, 64, 64)
    assert images.dtype == np.uint8


@pytest.mark.parametrize('resolution', [16, 32, 128])
def test_other_resolutions(resolution):
    images = phantoms.make_phantoms('MIA', 2, 1, resolution=resolution)
    assert images.shape == (2, resolution, resolution)
    assert images.dtype == np.uint8
    assert images.std() > 3


@pytest.mark.parametrize('kwargs', [
    dict(subtype='XYZ', count=1, seed=0),
    dict(subtype='ais', count=1, seed=0),
    dict(subtype='AIS', count=0, seed=0),
    dict(subtype='AIS', count=-3, seed=0),
    dict(subtype='AIS', count=2.0, seed=0),
    dict(subtype='AIS', count=1, seed=-1),
    dict(subtype='AIS', count=1, seed=0, resolution=48),
    dict(subtype='AIS', count=1, seed=0, resolution=8),
    dict(subtype='AIS', count=1, seed=0, resolution=0),
])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        phantoms.make_phantoms(**kwargs)


def test_unknown_subtype_message_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        phantoms.make_phantoms('LCNEC', 1, 0)
    assert 'AIS' in str(info.value) and 'IAC' in str(info.value)


def test_progress_reports_every_patch():
    seen = []
    phantoms.make_phantoms('IAC', 70, 5, progress=seen.append)
    assert sum(seen) == 70
    assert len(seen) >= 2     # reported as it goes, not once at the end


# ----------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize('subtype', phantoms.SUBTYPES)
def test_same_seed_same_bytes(subtype):
    a = phantoms.make_phantoms(subtype, 5, 42)
    b = phantoms.make_phantoms(subtype, 5, 42)
    assert a.tobytes() == b.tobytes()


def test_different_seed_or_subtype_differs():
    a = phantoms.make_phantoms('AIS', 4, 1)
    assert not np.array_equal(a, phantoms.make_phantoms('AIS', 4, 2))
    assert not np.array_equal(a, phantoms.make_phantoms('MIA', 4, 1))
    # patches within one run differ from each other too
    assert not np.array_equal(a[0], a[1])


def test_prefix_of_a_longer_run():
    long_run = phantoms.make_phantoms('MIA', 40, 9)
    assert np.array_equal(phantoms.make_phantoms('MIA', 7, 9), long_run[:7])
    assert np.array_equal(phantoms.make_phantoms('MIA', 33, 9), long_run[:33])


def test_output_does_not_depend_on_chunking(monkeypatch):
    reference = phantoms.make_phantoms('IAC', 12, 3)
    monkeypatch.setattr(phantoms, '_CHUNK', 5)
    assert np.array_equal(phantoms.make_phantoms('IAC', 12, 3), reference)


def test_large_seed():
    images = phantoms.make_phantoms('AIS', 2, 2 ** 64 - 1)
    assert not np.array_equal(images, phantoms.make_phantoms('AIS', 2, 2 ** 32 - 1))


# ----------------------------------------------------------------------------- appearance

def test_parenchyma_is_dark_grey_not_black(batches):
    for subtype, images in batches.items():
        lung = np.median(np.median(border(images), axis=1))
        assert 60 < lung < 120, (subtype, lung)
        assert lung < centre(images).mean() - 10, subtype


def test_nodule_density_orders_ais_mia_iac(batches):
    means = dict((s, centre(images).mean()) for s, images in batches.items())
    assert means['AIS'] < means['MIA'] < means['IAC'], means
    assert means['IAC'] > 190, means    # solid: close to soft tissue


def test_ais_is_faint_ground_glass(batches):
    images = batches['AIS']
    lift = centre(images).mean() - np.median(border(images))
    assert 10 < lift < 70, lift         # above parenchyma, far below soft tissue
    # no solid component: the centre is rarely as bright as soft tissue
    assert np.median(centre(images, half=4).max(axis=1)) < 190


def test_mia_has_a_small_dense_core(batches):
    mia, iac = batches['MIA'], batches['IAC']
    assert np.median(centre(mia, half=4).max(axis=1)) > 200
    # ... but its solid part is much smaller than an invasive nodule's
    solid_mia = (centre(mia, half=10) > 190).mean()
    solid_iac = (centre(iac, half=10) > 190).mean()
    assert solid_iac > 2.5 * solid_mia, (solid_mia, solid_iac)


def test_images_have_structure_and_noise(batches):
    for subtype, images in batches.items():
        assert images.std(axis=(1, 2)).min() > 3, subtype
        background = images[:, :8, :]
        lag1 = np.abs(np.diff(background, axis=2)).mean()
        lag3 = np.abs(background[:, :, 3:] - background[:, :, :-3]).mean()
        assert 1.5 < lag1 < 20, (subtype, lag1)
        # correlated (CT-kernel) noise: neighbours are more alike than pixels three apart
        assert lag1 < 0.9 * lag3, (subtype, lag1, lag3)
        assert images.min() >= 0 and images.max() <= 255


def test_features_scale_with_resolution():
    """The field of view stays the same, so the nodule covers the same fraction of the patch."""
    fractions = []
    for resolution in (32, 64):
        images = phantoms.make_phantoms('IAC', 24, 8, resolution=resolution)
        fractions.append((centre(images, half=resolution // 6) > 190).mean())
    assert 0.6 < fractions[0] / fractions[1] < 1.6, fractions
