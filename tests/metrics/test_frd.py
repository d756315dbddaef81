"""nodules/metrics/frd.py: the figure is frd-score's own (its compute_frd on the same PNG files), the Frechet
distance agrees with an independent eigenvalue formula, and the legacy stack says in one line what FRD needs.

FRD needs Python >= 3.10 with frd-score and pyradiomics-bhklab (requirements-metrics.txt); without them the tests
that compute it are skipped, with the reason printed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from nodules.data import dataset
from nodules.metrics import frd

REASON = frd.unavailable_reason()
needs_frd = pytest.mark.skipif(REASON is not None, reason=str(REASON))
if REASON:
    print('tests/metrics/test_frd.py: FRD tests skipped: %s' % REASON)


@pytest.fixture(scope='module')
def patches():
    """3 AIS and 3 IAC shipped phantoms, uint8 [3, 64, 64] each."""
    return {name: dataset.read_images(os.path.join(ROOT, 'processData', name, '%s-r06.tfrecords' % name),
                                      number=60)[::20, 0] for name in ('AIS', 'IAC')}


@pytest.fixture(scope='module')
def features(patches):
    if REASON:
        pytest.skip(REASON)
    return {name: frd.radiomic_features(images) for name, images in patches.items()}


def test_unavailable_reason_names_the_python_it_needs():
    if sys.version_info[:2] < (3, 10):
        assert REASON is not None and 'Python >= 3.10' in REASON and '\n' not in REASON
    elif REASON is not None:
        assert 'requirements-metrics.txt' in REASON


@needs_frd
def test_radiomic_features_of_8_bit_patches(features, patches):
    values, names = features['AIS']
    assert values.shape == (3, len(names)) and len(set(names)) == len(names)
    assert len(names) == 398  # v1 on 2-D patches: Original + 4 wavelet bands (LoG is 3-D only)
    assert np.all(np.isfinite(values))
    again, _ = frd.radiomic_features(patches['AIS'][:2, np.newaxis])  # [N, 1, H, W] too; deterministic
    assert np.array_equal(again, values[:2])
    with pytest.raises(ValueError, match='uint8'):
        frd.radiomic_features(patches['AIS'].astype(np.float32))


@needs_frd
@pytest.mark.slow  # ~2 s: the package in a subprocess of its own
def test_frd_is_the_packages_figure(features, patches, tmp_path):
    """frd-score's compute_frd on the same patches written as PNG folders gives exactly our value."""
    from PIL import Image
    folders = []
    for name in ('AIS', 'IAC'):
        folder = tmp_path / name
        folder.mkdir()
        for index, image in enumerate(patches[name]):
            Image.fromarray(image).save(str(folder / ('%d.png' % index)))
        folders.append(str(folder))
    # The package reads its configuration in the locale's encoding (our extractor() does not): in UTF-8 mode
    # it runs under any locale, as in a bare-C-locale CI.
    code = 'import frd_score, sys; print(repr(float(frd_score.compute_frd(sys.argv[1:], num_workers=1))))'
    output = subprocess.run([sys.executable, '-c', code] + folders, env=dict(os.environ, PYTHONUTF8='1'),
                            stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    expected = float(output.strip().splitlines()[-1])
    result = frd.frechet_radiomics_distance(features['AIS'][0], features['IAC'][0], features['AIS'][1])
    assert result['value'] == pytest.approx(expected, rel=1e-6)
    assert result['features_extracted'] == 398 and 0 < result['features_used'] <= 398
    assert result["real_count"] == result["fake_count"] == 3


def independent_frechet(a, b):
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), with symmetric eigendecompositions."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0, None))).dot(v.T)
    inner = np.linalg.eigvalsh(root.dot(sb).dot(root))
    diff = a.mean(axis=0) - b.mean(axis=0)
    return diff.dot(diff) + np.trace(sa) + np.trace(sb) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))


@needs_frd
def test_distance_and_standardisation_against_independent_formulas():
    rng = np.random.RandomState(0)
    real = rng.randn(200, 6) * [1, 2, 3, 4, 5, 6] + 10
    fake = rng.randn(150, 6) * 2 + 11
    real[:, 5] = 7.0  # constant in the real set: its z-score is infinite, the column is dropped
    real_z, fake_z, kept, info = frd.standardise(real, fake)
    assert info['features_used'] == 5 and kept == ['feature_%d' % i for i in range(5)]
    assert real_z.mean(axis=0) == pytest.approx(0, abs=1e-5) and real_z.std(axis=0) == pytest.approx(1, abs=1e-5)
    expected_fake = (fake[:, :5] - real[:, :5].mean(axis=0)) / real[:, :5].std(axis=0)
    assert fake_z == pytest.approx(expected_fake, abs=1e-4)
    result = frd.frechet_radiomics_distance(real, fake)
    expected = independent_frechet(real_z.astype(np.float64), fake_z.astype(np.float64))
    assert result['value'] == pytest.approx(np.log(expected), rel=1e-4)
    rows = fake.copy()
    rows[3, 2] = np.nan  # an image PyRadiomics could not describe is dropped, as the package does
    assert frd.frechet_radiomics_distance(real, rows)['rows_dropped'] == dict(real=0, fake=1)


@needs_frd
def test_settings_say_what_the_figure_means():
    settings = frd.frd_settings()
    assert settings['version'] == 'v1'
    assert settings['feature_classes'] == ['firstorder', 'glcm', 'glrlm', 'glszm', 'ngtdm']
    assert settings['package_versions']['frd-score'] and settings['package_versions']['pyradiomics-bhklab']
    assert 'z-score' in settings['normalisation']


@needs_frd
def test_extractor_builds_under_an_ascii_locale():
    """The package's configuration file has a non-ASCII comment; a C locale without UTF-8 must not break FRD."""
    code = ('from nodules.metrics import frd; e = frd.extractor(); '
            'print(sorted(e.enabledImagetypes), sorted(e.enabledFeatures), e.settings["binWidth"])')
    env = dict(os.environ, LC_ALL='C', LANG='C', PYTHONUTF8='0', PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    expected = frd.extractor()
    assert result.stdout.strip() == '%s %s %s' % (sorted(expected.enabledImagetypes),
                                                 sorted(expected.enabledFeatures), expected.settings['binWidth'])
