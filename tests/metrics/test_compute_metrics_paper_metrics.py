"""compute_metrics.py --metrics frd,prdc,memorization,spectral, --json and --closest-pairs, run in-process through
its main(argv) on small phantom datasets; figures checked against the metric modules called directly."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_failure, run_script
from nodules.data import dataset, phantoms
from nodules.metrics import frd, memorization, prdc, spectral

SCRIPT = 'compute_metrics.py'
FRD_REASON = frd.unavailable_reason()


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
    """32x32 phantom datasets: T (a generator's training set), H (held-out nodules), F (fresh samples)."""
    root = tmp_path_factory.mktemp('paper-metrics')
    images = {'T': phantoms.make_phantoms('AIS', 60, 21, resolution=32)[:, np.newaxis],
              'H': phantoms.make_phantoms('AIS', 60, 22, resolution=32)[:, np.newaxis],
              'F': phantoms.make_phantoms('AIS', 60, 23, resolution=32)[:, np.newaxis]}
    for name, data in images.items():
        dataset.write_dataset(str(root / name), data)
    return dict(root=root, images=images)


def run(sets, *args):
    root = sets['root']
    return run_script(SCRIPT, '--real', root / 'T', *[root / a if a in ('T', 'H', 'F') else a for a in args])


def read_json(path):
    with open(str(path)) as f:
        return json.load(f)


def test_memorization_flags_a_copying_generator_and_writes_json_and_picture(sets):
    root = sets['root']
    out, picture = root / 'copy.json', root / 'copy-pairs.png'
    # the 'generator' is its training set itself: every generated patch has a training twin
    result = run(sets, '--fake', 'T', '--metrics', 'memorization,spectral', '--heldout', 'H', '--json', out,
                 '--closest-pairs', picture)
    assert result.returncode == 0, result.stderr
    assert 'near-copy share' in result.stdout and 'wrote %s' % out in result.stdout
    report = read_json(out)
    assert report['memorization']['near_copy_share'] == 1.0 and report['memorization']['median_ratio'] < 1e-3
    assert report['memorization']['training_count'] == 60 and report['memorization']['space'] == 'pixels'
    assert set(report) >= {'memorization', 'spectral', 'real', 'fake', 'seed', 'versions', 'metrics'}
    assert 'swd' not in report and 'frd' not in report
    training = sets['images']['T'][:, 0]
    drawn = np.asarray(Image.open(str(picture)))
    first = report['memorization']['closest_pairs'][0]
    assert np.array_equal(drawn[:32, :32], training[first['generated']])
    assert np.array_equal(drawn[34:, :32], training[first['training']])
    expected = spectral.spectral_peaks(training)
    assert report['spectral']['real']['peak'] == pytest.approx(expected['peak'])
    assert report['spectral']['real']['frequency'] == expected['frequency']


def test_memorization_of_fresh_samples_matches_the_module(sets):
    root = sets['root']
    out = root / 'fresh.json'
    result = run(sets, '--fake', 'F', '--metrics', 'memorization', '--heldout', 'H', '--json', out)
    assert result.returncode == 0, result.stderr
    images = sets['images']
    expected = memorization.audit(images['F'], images['H'], images['T'])
    got = read_json(out)['memorization']
    assert got['near_copy_share'] == expected['near_copy_share'] < 0.2
    assert got['median_ratio'] == pytest.approx(expected['median_ratio'])


def test_prdc_in_pixel_space_and_the_json_file_rules(sets):
    root = sets['root']
    out = root / 'prdc.json'
    args = ('--fake', 'F', '--metrics', 'prdc', '--prdc-space', 'pixels', '--num', 40, '--json', out)
    assert run(sets, *args).returncode == 0
    report = read_json(out)
    expected = prdc.prdc(sets['images']['T'][:40], sets['images']['F'][:40])
    for key in ('precision', 'recall', 'density', 'coverage'):
        assert report[key] == pytest.approx(expected[key])
    assert report['prdc_settings']['feature_space']['name'] == 'pixels'
    assert report['prdc_settings']['k_precision_recall'] == 3 and report['prdc_settings']['k_density_coverage'] == 5
    before = out.read_bytes()
    assert run(sets, *args).returncode == 0 and out.read_bytes() == before  # the same command again: harmless
    different = run(sets, *(args[:-3] + ('36', '--json', out)))
    assert_clean_failure(different, 'already exists')
    assert out.read_bytes() == before
    assert run(sets, *(args[:-3] + ('36', '--json', out, '--overwrite'))).returncode == 0
    assert read_json(out)['prdc_settings']['real_count'] == 36


def test_default_metrics_are_unchanged_and_json_has_their_settings(sets):
    out = sets['root'] / 'default.json'
    result = run(sets, '--halves', '--json', out)
    assert result.returncode == 0, result.stderr
    report = read_json(out)
    assert report['metrics'] == ['swd', 'msssim'] and report['swd']['images_per_set'] == 30
    assert set(report['swd']['per_level']) == {'32x32', '16x16'} and 'real' in report['msssim']


@pytest.mark.parametrize('args, message', [
    (('--fake', 'F', '--metrics', 'memorization'), 'needs --heldout'),
    (('--fake', 'F', '--heldout', 'H'), 'used by --metrics memorization only'),
    (('--fake', 'F', '--closest-pairs', 'x.png'), 'used by --metrics memorization only'),
    (('--halves', '--metrics', 'memorization', '--heldout', 'H'), 'not two halves'),
    (('--fake', 'F', '--metrics', 'memorization', '--heldout', 'nowhere'), 'nowhere: no such dataset directory'),
    (('--fake', 'F', '--metrics', 'swd,fid'), "unknown metric 'fid'"),
    (('--fake', 'F', '--metrics', 'prdc', '--prdc-space', 'pixels', '--num', '5'), 'prdc needs at least 6 images'),
])
def test_bad_combinations_are_one_line_errors(sets, args, message):
    result = run(sets, *args)
    assert_clean_failure(result, message)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # PyRadiomics: 24 patches, ~0.15 CPU-s each (skipped at once where FRD is unavailable)
def test_frd_and_radiomic_prdc_or_one_line_saying_what_they_need(sets):
    root = sets['root']
    out = root / 'frd.json'
    result = run(sets, '--fake', 'F', '--metrics', 'frd,prdc', '--num', 6, '--json', out)
    if FRD_REASON:
        print('FRD unavailable here: %s' % FRD_REASON)
        assert_clean_failure(result, FRD_REASON)
        assert len(result.stderr.strip().splitlines()) == 1
        return
    assert result.returncode == 0, result.stderr
    report = read_json(out)
    images = sets['images']
    real, names = frd.radiomic_features(images['T'][:6])
    fake, _ = frd.radiomic_features(images['F'][:6])
    assert report['frd'] == pytest.approx(frd.frechet_radiomics_distance(real, fake, names)['value'])
    settings = report['frd_settings']
    assert settings['version'] == 'v1' and settings['features_extracted'] == len(names)
    assert settings['package_versions']['frd-score'] and 'z-score' in settings['normalisation']
    assert report['prdc_settings']['feature_space']['name'] == 'radiomics'
    real_z, fake_z, _, _ = frd.standardise(real, fake, names)
    assert report['coverage'] == pytest.approx(prdc.prdc(real_z.astype(float), fake_z.astype(float))['coverage'])
    assert 'Frechet Radiomics Distance' in result.stdout
