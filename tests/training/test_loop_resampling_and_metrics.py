"""Tests for 3-train.py --no-fused-scale and --blur-resampling (unfused, low-passed resampling in G and D),
--edge-padding (G's borders) and for the metrics 3-train.py logs at snapshots besides SWD: spectral and
memorization, computed by the same functions as compute_metrics.py.

Networks are tiny and datasets 16x16 (as in test_loop.py).  The layers themselves are checked against NumPy
references in tests/gan/test_networks.py (its 'unfused', 'blur' and 'edge' variants); here the setting has to reach them, train,
be saved, come back from the pickle and refuse to be mixed up on resume.
"""
import json
import os

import numpy as np
import pytest

from conftest import run_script
from nodules.data import dataset
from nodules.gan import legacy
from nodules.training import settings as training_settings
from nodules.util import outputs
from nodules.util.tfcompat import tf
from test_loop import LATENT, TINY_ARGS, fresh_session, read_config, run_dirs, tiny_dataset_images

SEED = 1000  # 3-train.py's default seed: the metric latents use seed + 1


def train(*args):
    result = run_script('3-train.py', *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def heldout_images():
    return np.random.RandomState(99).randint(0, 256, size=(24, 1, 16, 16)).astype(np.uint8)


def log_lines(run_dir, fragment):
    with open(os.path.join(run_dir, 'log.txt'), encoding='utf-8') as f:
        return [line.rstrip('\n') for line in f if fragment in line]


def scalars(run_dir):
    """{tag: [values]} of the run's TensorBoard events."""
    events = [n for n in os.listdir(run_dir) if n.startswith('events.out.tfevents.')]
    assert len(events) == 1, events
    tags = {}
    for event in tf.train.summary_iterator(os.path.join(run_dir, events[0])):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(value.simple_value)
    return tags


@pytest.fixture(scope='module')
def unfused_run(tmp_path_factory):
    """A tiny run with unfused, blurred resampling and an edge-padded G through 4x4, 8x8 and 16x16 in 1 kimg, a
    snapshot at every tick (0.512 and 1.024 kimg), spectral and memorization logged at each."""
    root = tmp_path_factory.mktemp('unfused')
    data_dir = dataset.write_dataset(str(root / 'tiny'), tiny_dataset_images())
    heldout_dir = dataset.write_dataset(str(root / 'heldout'), heldout_images())
    outdir = str(root / 'results')
    train('--data', data_dir, '--outdir', outdir, '--total-kimg', 1, '--tick-kimg', 0.5, '--snapshot-ticks', 1,
          '--no-fused-scale', '--blur-resampling', '--edge-padding', '--metrics', 'spectral', '--metrics', 'memorization', '--heldout', heldout_dir,
          *TINY_ARGS)
    dirs = run_dirs(outdir)
    assert len(dirs) == 1, dirs
    return dict(data_dir=data_dir, heldout_dir=heldout_dir, outdir=outdir, run_dir=os.path.join(outdir, dirs[0]),
                root=root)


def test_fused_resampling_stays_the_default_the_original_networks_use():
    assert training_settings.NETWORK_DEFAULTS['fused_scale'] is True
    G_kwargs, D_kwargs = training_settings.network_kwargs({}, defaults=True)
    assert G_kwargs['fused_scale'] is True and D_kwargs['fused_scale'] is True
    # A pickle that does not store the keyword (the original's) is taken as fused when a run resumes it.
    from nodules.training import loop as training_loop
    assert training_loop.BUILDER_DEFAULTS['fused_scale'] is True
    # No blur next to the resampling either, unless asked for (the original networks have none).
    assert G_kwargs['blur_resampling'] is False and D_kwargs['blur_resampling'] is False
    assert training_loop.BUILDER_DEFAULTS['blur_resampling'] is False
    # Zero padding in G likewise; D has no such setting.
    assert G_kwargs['edge_padding'] is False and 'edge_padding' not in D_kwargs
    assert training_loop.BUILDER_DEFAULTS['edge_padding'] is False


@pytest.mark.slow
def test_unfused_networks_train_and_come_back_from_their_pickle(unfused_run):
    run_dir = unfused_run['run_dir']
    config = read_config(run_dir)
    assert config['G_kwargs']['fused_scale'] is False and config['D_kwargs']['fused_scale'] is False
    assert config['G_kwargs']['blur_resampling'] is True and config['D_kwargs']['blur_resampling'] is True
    assert config['G_kwargs']['edge_padding'] is True and 'edge_padding' not in config['D_kwargs']
    final = os.path.join(run_dir, 'network-final.pkl')
    first = os.path.join(run_dir, 'network-snapshot-000000.512.pkl')
    with fresh_session():
        G0 = legacy.load_network_pkl(first, which=('G',))
        before = G0.get_vars()
    with fresh_session():
        G, D, Gs = legacy.load_network_pkl(final)
        for net in (G, D, Gs):
            assert net.static_kwargs['fused_scale'] is False
            assert net.static_kwargs['blur_resampling'] is True
        assert G.static_kwargs['edge_padding'] is True and Gs.static_kwargs['edge_padding'] is True
        names = set(G.get_vars())
        # Unfused layers: upscale then Conv0 in G, Conv1 then downscale in D; none of the fused layers' names.
        assert {'16x16/Conv0/weight', '8x8/Conv0/weight'} <= names
        assert not any('Conv0_up' in name for name in names)
        D_names = set(D.get_vars())
        assert {'16x16/Conv1/weight', '8x8/Conv1/weight'} <= D_names
        assert not any('Conv1_down' in name for name in D_names)
        # Both stored [3, 3, in, out], as an ordinary convolution (the fused up-scaling stores [3, 3, out, in]).
        assert G.get_vars()['16x16/Conv0/weight'].shape == (3, 3, 8, 4)  # 8 in (8x8), 4 out (16x16)
        after = G.get_vars()
        assert not np.array_equal(after['16x16/Conv0/weight'], before['16x16/Conv0/weight'])  # trained at 16x16
        # The pickled Gs, rebuilt from its stored keywords, draws the last fakes grid pixel for pixel.
        latents = np.random.RandomState(SEED).randn(32, LATENT).astype(np.float32)
        fakes = outputs.float_to_uint8(Gs.run(latents, np.zeros((32, 0), np.float32), minibatch_size=16))[..., 0]
    with open(os.path.join(run_dir, 'fakes000001.024.png'), 'rb') as f:
        from PIL import Image
        grid = np.asarray(Image.open(f))
    np.testing.assert_array_equal(grid, outputs.image_grid(fakes, columns=8))


@pytest.mark.slow
def test_resuming_unfused_networks_keeps_their_resampling_and_refuses_another(unfused_run):
    run_dir, outdir = unfused_run['run_dir'], unfused_run['outdir']
    snapshot = os.path.join(run_dir, 'network-snapshot-000001.024.pkl')
    refused = run_script('3-train.py', '--outdir', outdir, '--resume', snapshot, '--total-kimg', 1.2,
                         '--fused-scale')
    assert refused.returncode == 1 and 'Traceback' not in refused.stderr
    assert refused.stderr.strip() == ('error: %s: networks have fused_scale=False but the command line asks for '
                                      'True' % snapshot), refused.stderr
    refused = run_script('3-train.py', '--outdir', outdir, '--resume', snapshot, '--total-kimg', 1.2,
                         '--no-blur-resampling')
    assert refused.returncode == 1 and refused.stderr.strip() == (
        'error: %s: networks have blur_resampling=True but the command line asks for False' % snapshot), refused.stderr
    refused = run_script('3-train.py', '--outdir', outdir, '--resume', snapshot, '--total-kimg', 1.2,
                         '--no-edge-padding')
    assert refused.returncode == 1 and refused.stderr.strip() == (
        'error: %s: networks have edge_padding=True but the command line asks for False' % snapshot), refused.stderr
    # Resumed with its own settings and --metrics none: the restored --heldout is said to be unused.
    train('--outdir', outdir, '--resume', snapshot, '--total-kimg', 1.1, '--metrics', 'none')
    resumed = os.path.join(outdir, run_dirs(outdir)[-1])
    assert resumed != run_dir
    assert read_config(resumed)['G_kwargs']['fused_scale'] is False
    assert read_config(resumed)['D_kwargs']['blur_resampling'] is True
    assert read_config(resumed)['G_kwargs']['edge_padding'] is True
    assert read_config(resumed)['heldout_dir'] == os.path.abspath(unfused_run['heldout_dir'])
    assert log_lines(resumed, '--heldout %s: not used, --metrics has no memorization'
                     % os.path.abspath(unfused_run['heldout_dir']))
    assert not log_lines(resumed, 'memorization at kimg') and not log_lines(resumed, 'spectral peak')


def logged_number(line, fragment):
    return float(line.split(fragment, 1)[1].split()[0].rstrip(','))


@pytest.mark.slow
def test_snapshot_metrics_are_compute_metrics_figures(unfused_run, tmp_path):
    """At each snapshot, log.txt and TensorBoard carry the spectral peak and the memorization audit; those of the
    last snapshot are what compute_metrics.py reports for the final pickle with the same latents (seed + 1, the
    same count, batches of 16), the same training set and the same held-out set."""
    run_dir = unfused_run['run_dir']
    reals_line = log_lines(run_dir, 'spectral peak of the reals (32 images): ')
    assert len(reals_line) == 1
    spectral_lines = log_lines(run_dir, 'spectral peak at kimg')
    memorization_lines = log_lines(run_dir, 'memorization at kimg')
    assert [line.split(' at kimg ')[1].split(':')[0] for line in spectral_lines] == ['0.512', '1.024']
    # 0.512 kimg is before full resolution (lod > 0), 1.024 after the fade-in (lod 0): only the first is flagged.
    assert ['not meaningful before full resolution' in line for line in spectral_lines] == [True, False]
    assert [line.split(' at kimg ')[1].split(':')[0] for line in memorization_lines] == ['0.512', '1.024']
    assert all('(32 generated, 24 held-out, 32 training patches)' in line for line in memorization_lines)
    tags = scalars(run_dir)
    for tag in ('Metrics/spectral_peak', 'Metrics/spectral_peak_period2', 'Metrics/spectral_peak_period4',
                'Metrics/spectral_peak_period8', 'Metrics/memorization_median_ratio',
                'Metrics/memorization_near_copy_share'):
        assert len(tags.get(tag, [])) == 2, (tag, sorted(tags))
    assert 'Metrics/swd_average' not in tags  # only the metrics asked for

    report = str(tmp_path / 'metrics.json')
    result = run_script('compute_metrics.py', '--real', unfused_run['data_dir'], '--fake',
                        os.path.join(run_dir, 'network-final.pkl'), '--num', 32, '--seed', SEED + 1,
                        '--batch-size', 16, '--metrics', 'spectral,memorization', '--heldout',
                        unfused_run['heldout_dir'], '--json', report)
    assert result.returncode == 0, result.stderr
    with open(report, encoding='utf-8') as f:
        figures = json.load(f)
    peak = figures['spectral']['fake']['peak']
    assert logged_number(spectral_lines[-1], 'kimg 1.024: ') == pytest.approx(peak, abs=6e-4)
    assert tags['Metrics/spectral_peak'][-1] == pytest.approx(peak, rel=1e-6)
    for period, ratio in figures['spectral']['fake']['by_period'].items():
        assert tags['Metrics/spectral_peak_period%s' % period][-1] == pytest.approx(ratio, rel=1e-6)
    assert logged_number(reals_line[0], '(32 images): ') == pytest.approx(figures['spectral']['real']['peak'],
                                                                          abs=6e-4)
    audit = figures['memorization']
    assert logged_number(memorization_lines[-1], 'median ratio ') == pytest.approx(audit['median_ratio'], abs=6e-4)
    assert logged_number(memorization_lines[-1], 'near-copy share ') == pytest.approx(audit['near_copy_share'],
                                                                                      abs=6e-4)
    assert tags['Metrics/memorization_median_ratio'][-1] == pytest.approx(audit['median_ratio'], rel=1e-6)


def tiny_run_log(tmp_path, *args):
    data_dir = dataset.write_dataset(str(tmp_path / 'tiny'), tiny_dataset_images())
    outdir = str(tmp_path / 'results')
    train('--data', data_dir, '--outdir', outdir, '--total-kimg', 0.05, '--tick-kimg', 0.05, *(TINY_ARGS + list(args)))
    return os.path.join(outdir, run_dirs(outdir)[0])


@pytest.mark.slow
def test_memorization_without_heldout_is_skipped_with_a_reason(tmp_path):
    run_dir = tiny_run_log(tmp_path, '--metrics', 'memorization')
    assert len(log_lines(run_dir, 'memorization: skipped, no --heldout dataset of real patches the generator never '
                                  'sees to compare with')) == 1
    assert not log_lines(run_dir, 'memorization at kimg')
    assert os.path.isfile(os.path.join(run_dir, 'network-final.pkl'))


@pytest.mark.parametrize('case', ['spectral at 4x4', 'heldout of another size', 'heldout missing'])
def test_metrics_that_cannot_be_computed_are_refused_before_the_run(tmp_path, case):
    images = tiny_dataset_images()
    if case == 'spectral at 4x4':
        data_dir = dataset.write_dataset(str(tmp_path / 'small'), images[:, :, :4, :4])
        extra, fragment = ['--metrics', 'spectral'], '%s: --metrics spectral needs grayscale images of at least ' \
                                                     '8x8, these are 4x4 with 1 channels' % data_dir
    else:
        data_dir = dataset.write_dataset(str(tmp_path / 'tiny'), images)
        heldout = str(tmp_path / 'heldout')
        if case == 'heldout of another size':
            dataset.write_dataset(heldout, images[:, :, :8, :8])
            fragment = '%s: --heldout images are 8x8 with 1 channel(s), but %s has 16x16 with 1' % (heldout, data_dir)
        else:
            fragment = heldout
        extra = ['--metrics', 'memorization', '--heldout', heldout]
    outdir = str(tmp_path / 'results')
    result = run_script('3-train.py', '--data', data_dir, '--outdir', outdir, '--total-kimg', 0.05, *(TINY_ARGS + extra))
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert run_dirs(outdir) == []
