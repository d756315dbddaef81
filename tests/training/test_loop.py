"""Tests for nodules/training/loop.py, nodules/training/settings.py and 3-train.py: the schedule, the settings and their checks,
one D and one G step, the Gs moving average, one device against two, and short real runs of 3-train.py (outputs,
inference from the result, resume with the run's own settings, a run killed with SIGKILL, a dataset file that goes
bad while training, bad input).

Expected values are computed here from what the original PGGAN does (the schedule, the EMA, the processing of the
reals); the code under test is only used to build and run what is being tested.  Networks are tiny
(fmap_base 32, fmap_max 8, latent size 8) and datasets are 16x16, so every graph builds in seconds on a CPU.
"""
import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import re
import signal
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_clean_failure, load_script, run_script
from nodules.util.tfcompat import tf
from nodules.gan import augment
from nodules.data import dataset
from nodules.gan import legacy
from nodules.util import outputs
from nodules.gan import tfutil
from nodules.training import settings as training_settings
from nodules.training import loop as training_loop

TINY = dict(fmap_base=32, fmap_max=8)
LATENT = 8
TINY_ARGS = ['--fmap-base', 32, '--fmap-max', 8, '--latent-size', LATENT,
             '--lod-training-kimg', 0.2, '--lod-transition-kimg', 0.2]
SNAPSHOT = re.compile(r'^network-snapshot-(\d{6})(\.\d{3})?\.pkl$')
FAKES = re.compile(r'^fakes\d{6}(\.\d{3})?\.png$')
RUN_DIR = re.compile(r'^\d{5}-')
MINIBATCHES_PER_SCHEDULE = 4   # the original takes a fresh minibatch configuration every 4 minibatches


# ----------------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def fresh_session(cpu_devices=1, seed=None):
    """A new graph with a default session on it (tfutil works on the default session)."""
    graph = tf.Graph()
    config = tfutil.session_config()
    if cpu_devices > 1:
        config.device_count['CPU'] = cpu_devices
    with graph.as_default():
        if seed is not None:
            tf.set_random_seed(seed)
        with tf.Session(graph=graph, config=config) as session, session.as_default():
            yield session


def tiny_networks(resolution=16, G_kwargs=None, D_kwargs=None):
    G = tfutil.Network('G', 'G_paper', num_channels=1, resolution=resolution, latent_size=LATENT,
                       **dict(TINY, **(G_kwargs or {})))
    D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=resolution, **dict(TINY, **(D_kwargs or {})))
    G.init_vars()
    D.init_vars()
    return G, D


def trainable_values(net):
    values = net.get_vars()
    return {name: values[name] for name in net.trainables}


def run_dirs(outdir):
    return sorted(d for d in os.listdir(outdir) if RUN_DIR.match(d)) if os.path.isdir(outdir) else []


def read_png(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


TICK_LINE = re.compile(r'kimg\s+(?P<kimg>[-\d.]+)\s+lod\s+(?P<lod>[-\d.]+)\s+resolution\s+(?P<resolution>\d+)\s+'
                       r'minibatch\s+(?P<minibatch>\d+)\s+sec/kimg\s+(?P<sec>[-\d.]+)\s+G_loss\s+(?P<G_loss>\S+)\s+'
                       r'D_loss\s+(?P<D_loss>\S+)\s+gradient_penalty\s+(?P<gradient_penalty>\S+)\s+'
                       r'augment_p\s+(?P<augment_p>\S+)\s+r_t\s+(?P<r_t>\S+)')


def tick_lines(run_dir):
    with open(os.path.join(run_dir, 'log.txt')) as f:
        lines = [line for line in f if ' tick ' in line]
    ticks = []
    for line in lines:
        match = TICK_LINE.search(line)
        assert match, line
        ticks.append({k: float(v) for k, v in match.groupdict().items()})
    return ticks


def read_config(run_dir):
    with open(os.path.join(run_dir, 'config.json')) as f:
        return json.load(f)


def expected_lod(kimg, resolution, training=600.0, transition=600.0, initial_resolution=4):
    """The original's schedule, written out stage by stage: each resolution trains for `training` kimg, then the next one fades in
    linearly over `transition` kimg; lod starts at log2(resolution / initial) and stops at 0."""
    lod = float(np.log2(resolution) - np.log2(initial_resolution))
    left = float(kimg)
    while lod > 0:
        left -= training
        if left <= 0:
            break
        if left < transition:
            return lod - left / transition
        lod -= 1.0
        left -= transition
    return max(lod, 0.0)


def expected_resolution(lod, resolution):
    """The resolution a graph must reach at this lod: during a fade-in, the higher of the two."""
    return resolution // 2 ** int(math.floor(lod))


def tick_nimgs(start_kimg, total_kimg, tick_kimg, minibatch=16):
    """Where the ticks of a run fall (images shown): the loop advances in steps of 4 minibatches and logs once a
    tick's worth has passed, and always at the end."""
    chunk = MINIBATCHES_PER_SCHEDULE * minibatch
    cur = tick_start = int(round(start_kimg * 1000))
    total = int(round(total_kimg * 1000))
    ticks = []
    while cur < total:
        cur += chunk
        if cur >= tick_start + tick_kimg * 1000 or cur >= total:
            ticks.append(cur)
            tick_start = cur
    return ticks


# ----------------------------------------------------------------------------------------------------------------
# Fixtures


def tiny_dataset_images():
    return np.random.RandomState(1234).randint(0, 256, size=(32, 1, 16, 16)).astype(np.uint8)


@pytest.fixture(scope='module')
def tiny_images():
    return tiny_dataset_images()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, tiny_images):
    return dataset.write_dataset(str(tmp_path_factory.mktemp('data') / 'tiny'), tiny_images)


# ----------------------------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.parametrize('kimg, lod, resolution', [
    (0, 4.0, 4), (599, 4.0, 4), (600, 4.0, 4), (900, 3.5, 8), (1200, 3.0, 8), (1800, 3.0, 8), (2100, 2.5, 16),
    (3000, 2.0, 16), (3300, 1.5, 32), (4799, 1.0 / 600, 64), (4800, 0.0, 64), (15000, 0.0, 64)])
def test_schedule_at_chosen_kimg_64(kimg, lod, resolution):
    phase = training_loop.Schedule(64).at(kimg)
    assert phase.lod == pytest.approx(lod, abs=1e-9)
    assert phase.lod == pytest.approx(expected_lod(kimg, 64), abs=1e-9)
    assert phase.resolution == resolution == expected_resolution(lod, 64)
    assert phase.minibatch == 16
    assert phase.lr == pytest.approx(0.001)
    assert phase.kimg == kimg


def test_schedule_follows_the_formula_everywhere():
    for resolution in (16, 64):
        schedule = training_loop.Schedule(resolution)
        last = None
        for kimg in np.arange(0.0, 6000.0, 37.5):
            phase = schedule.at(kimg)
            lod = expected_lod(kimg, resolution)
            assert phase.lod == pytest.approx(lod, abs=1e-9), (resolution, kimg)
            assert phase.resolution == expected_resolution(lod, resolution), (resolution, kimg)
            assert last is None or phase.lod <= last + 1e-12  # never goes back up
            last = phase.lod
    # 16x16 reaches full resolution after two stages of 600 + 600 kimg.
    assert training_loop.Schedule(16).at(2399).lod > 0
    assert training_loop.Schedule(16).at(2400).lod == 0


def test_schedule_custom_lengths_as_the_test_runs_use():
    schedule = training_loop.Schedule(16, lod_training_kimg=0.2, lod_transition_kimg=0.2)
    for kimg in np.arange(0.0005, 1.2, 0.013):  # (never exactly on a boundary)
        lod = expected_lod(kimg, 16, 0.2, 0.2)
        phase = schedule.at(kimg)
        assert phase.lod == pytest.approx(lod, abs=1e-6), kimg
        assert phase.resolution == expected_resolution(lod, 16)
    assert schedule.at(0.3).lod == pytest.approx(1.5)
    assert schedule.at(0.704).lod == pytest.approx(0.48)
    # No transition: the resolution switches at once.
    abrupt = training_loop.Schedule(16, lod_training_kimg=100, lod_transition_kimg=0)
    assert [abrupt.at(k).lod for k in (0, 99.9, 100, 199.9, 200, 1000)] == [2, 2, 1, 1, 0, 0]


def test_schedule_minibatch_and_learning_rate_overrides():
    schedule = training_loop.Schedule(64, minibatch=16, minibatch_dict={4: 64, 8: 30, 32: 3}, lr_dict={16: 0.002})
    assert schedule.at(0).minibatch == 64          # 4x4
    assert schedule.at(1200).minibatch == 30       # 8x8
    assert schedule.at(2400).minibatch == 16       # 16x16: the base value
    assert schedule.at(2400).lr == pytest.approx(0.002)
    assert schedule.at(1200).lr == pytest.approx(0.001)
    assert schedule.at(3600).minibatch == 3        # 32x32
    assert schedule.at(4800).minibatch == 16       # 64x64


def test_schedule_tick_lengths():
    schedule = training_loop.Schedule(64)
    assert [schedule.at(k).tick_kimg for k in (0, 1200, 2400, 3600, 4800)] == [160, 140, 120, 100, 80]
    assert training_loop.Schedule(64, tick_kimg=0.5).at(2400).tick_kimg == 0.5


# ----------------------------------------------------------------------------------------------------------------
# Settings, config.json and snapshot names


@pytest.mark.parametrize('settings, fragment', [
    (dict(total_kimg=float('nan')), 'total_kimg must be a number > 0'),
    (dict(total_kimg=float('inf')), 'total_kimg'),
    (dict(lod_training_kimg=float('nan')), 'lod_training_kimg'),
    (dict(lod_transition_kimg=-1.0), 'lod_transition_kimg'),
    (dict(lod_training_kimg=0.0, lod_transition_kimg=0.0), 'never leave'),
    (dict(G_smoothing=1.0), 'G_smoothing'),
    (dict(G_smoothing=float('nan')), 'G_smoothing'),
    (dict(lr=0.0), 'lr must be a number > 0'),
    (dict(minibatch=True), 'minibatch'),
    (dict(num_devices=3), 'minibatch 16 cannot be split evenly over 3 devices'),
    (dict(num_devices=2, minibatch_dict={8: 9}), 'minibatch at 8x8 9 cannot be split evenly over 2 devices'),
    (dict(minibatch=6), 'minibatch-stddev groups of 4'),
    (dict(minibatch_dict={6: 8}), 'minibatch_dict'),
    (dict(seed=2 ** 32), 'seed'),
    (dict(metrics=['fid']), 'metrics'),
    (dict(loss_kwargs={'wgan_lambda': float('nan')}), 'loss_kwargs'),
    (dict(shuffle=True), 'unknown settings shuffle'),
])
def test_settings_that_cannot_train_are_refused(settings, fragment):
    with pytest.raises(training_settings.UserError) as error:
        training_settings.check_settings(settings, 'somewhere')
    assert str(error.value).startswith('somewhere: ') and fragment in str(error.value)


def test_settings_that_can_train_are_completed_with_the_defaults():
    complete = training_settings.check_settings(dict(minibatch=8, num_devices=2, minibatch_dict={4: 2}))
    assert complete == dict(training_settings.DEFAULTS, minibatch=8, num_devices=2, minibatch_dict={4: 2})
    # Shares below the group size form one smaller group; without the layer any share works.
    training_settings.check_settings(dict(minibatch=6, num_devices=2))
    training_settings.check_settings(dict(minibatch=6), mbstd_group_size=0)


@pytest.mark.parametrize('nimg, label', [(0, '000000'), (600000, '000600'), (256, '000000.256'),
                                         (1024, '000001.024'), (15000001, '015000.001'), (4800064, '004800.064')])
def test_snapshot_names_carry_the_exact_kimg(nimg, label):
    assert training_settings.kimg_label(nimg) == label
    assert training_settings.snapshot_name(nimg) == 'network-snapshot-%s.pkl' % label
    assert training_settings.fakes_name(nimg) == 'fakes%s.png' % label
    assert training_settings.nimg_of_snapshot('/a/b/' + training_settings.snapshot_name(nimg)) == nimg
    assert SNAPSHOT.match(training_settings.snapshot_name(nimg)) and FAKES.match(training_settings.fakes_name(nimg))


def test_snapshot_names_of_short_ticks_never_collide():
    """Ticks of a run with 0.1-kimg ticks and minibatch 16 (every 64 images is a schedule step)."""
    ticks = tick_nimgs(0, 3, 0.1)
    names = [training_settings.snapshot_name(n) for n in ticks]
    assert len(set(names)) == len(names) == len(ticks)
    assert [training_settings.nimg_of_snapshot(n) for n in names] == ticks
    assert training_settings.nimg_of_snapshot('network-final.pkl') is None
    assert training_settings.nimg_of_snapshot('.network-snapshot-000001.pkl.123-abc.tmp') is None


def test_latest_snapshot_is_the_newest_complete_one(tmp_path):
    outdir = str(tmp_path / 'results')
    older = os.path.join(outdir, '00000-a')
    newer = os.path.join(outdir, '00001-a')
    newest = os.path.join(outdir, '00002-a')  # started, no snapshot yet
    for path in (older, newer, newest):
        os.makedirs(path)
    for run, names in ((older, ['network-snapshot-000900.pkl']),
                       (newer, ['network-snapshot-000010.pkl', 'network-snapshot-000120.pkl',
                                'network-snapshot-000120.064.pkl', 'network-snapshot-000040.960.pkl',
                                '.network-snapshot-000200.pkl.123-abcd.tmp', 'network-final.pkl']),
                       (newest, ['log.txt'])):
        for name in names:
            open(os.path.join(run, name), 'wb').close()
    latest = training_settings.find_latest_snapshot(outdir)
    assert latest == os.path.join(newer, 'network-snapshot-000120.064.pkl')
    assert training_settings.nimg_of_snapshot(latest) == 120064


def write_config(run_dir, settings, **details):
    os.makedirs(run_dir)
    with open(training_settings.config_path(run_dir), 'wb') as f:
        f.write(training_settings.config_bytes(dict(training_settings.DEFAULTS, **settings), **details))


def test_resume_takes_the_runs_settings_unless_given(tmp_path):
    run_dir = str(tmp_path / 'results' / '00003-tiny-16x16')
    saved = dict(data_dir=str(tmp_path / 'tiny'), total_kimg=3.0, lod_training_kimg=0.3, lod_transition_kimg=0.1,
                 minibatch=8, minibatch_dict={4: 32, 8: 16}, lr=0.002, G_smoothing=0.99, mirror=True, seed=5,
                 tick_kimg=0.128, snapshot_ticks=3, metrics=['swd'], metric_images=100,
                 loss_kwargs={'wgan_epsilon': 0.01})
    write_config(run_dir, saved, G_params=10, devices=['cpu'])
    snapshot = os.path.join(run_dir, 'network-snapshot-000001.024.pkl')
    open(snapshot, 'wb').close()

    settings, resume, resume_kimg, origins = training_settings.resolve_settings(
        {'resume': 'latest', 'total_kimg': 5.0, 'mirror': False}, str(tmp_path / 'results'))
    assert resume == snapshot and resume_kimg == 1.024
    assert settings == dict(training_settings.DEFAULTS, **dict(saved, total_kimg=5.0, mirror=False))
    assert settings['minibatch_dict'] == {4: 32, 8: 16}  # resolutions are numbers again, not JSON strings
    config = training_settings.config_path(run_dir)
    assert origins == dict({name: config for name in training_settings.DEFAULTS}, total_kimg='command line',
                           mirror='command line')

    # An explicit --resume-kimg wins over the file name; without config.json only the defaults remain.
    bare = str(tmp_path / 'elsewhere' / 'weights.pkl')
    os.makedirs(os.path.dirname(bare))
    open(bare, 'wb').close()
    settings, resume, resume_kimg, origins = training_settings.resolve_settings({'resume': bare, 'resume_kimg': 7.5})
    assert (resume, resume_kimg, origins) == (bare, 7.5, {})
    assert settings == training_settings.DEFAULTS
    with pytest.raises(training_settings.UserError, match='pass --resume-kimg'):
        training_settings.resolve_settings({'resume': bare})
    with pytest.raises(training_settings.UserError, match='nothing left to train'):
        training_settings.resolve_settings({'resume': snapshot, 'total_kimg': 1.024})

    # A run's network-final.pkl is its last snapshot (a hard link, or a copy): it resumes at that snapshot's kimg;
    # a file of that name that is neither refuses as any other name does.
    with open(snapshot, 'wb') as f:
        f.write(b'last snapshot')
    earlier = os.path.join(run_dir, 'network-snapshot-000000.512.pkl')
    with open(earlier, 'wb') as f:
        f.write(b'earlier snapshot')
    final = os.path.join(run_dir, 'network-final.pkl')
    for make_final in (lambda: os.link(snapshot, final), lambda: shutil.copyfile(snapshot, final)):
        make_final()
        assert training_settings.resolve_settings({'resume': final})[2] == 1.024
        os.remove(final)
    shutil.copyfile(earlier, final)
    with pytest.raises(training_settings.UserError, match='network-final.pkl: cannot tell how far .* --resume-kimg'):
        training_settings.resolve_settings({'resume': final})
    assert training_settings.resolve_settings({'resume': final, 'resume_kimg': 0.512})[2] == 0.512
    with pytest.raises(training_settings.UserError, match='cannot be split evenly over 3 devices'):
        training_settings.resolve_settings({'resume': snapshot, 'num_devices': 3})  # the restored minibatch 8

    # A config.json with some settings only: the others take their defaults.
    with open(config, 'w') as f:
        json.dump(dict(total_kimg=3, lod_training_kimg=0.3, resume=None), f)
    settings, _, _, origins = training_settings.resolve_settings({'resume': snapshot})
    assert settings == dict(training_settings.DEFAULTS, total_kimg=3.0, lod_training_kimg=0.3)
    assert sorted(origins) == ['lod_training_kimg', 'total_kimg']


def example_value(setting, base):
    """(argv, value): a valid value of `setting` unlike its default and base's, and the flags that give it."""
    kind, flag = setting.kind, setting.flag
    if isinstance(kind, training_settings.Switch):
        value = not setting.default
        return [flag if value else '--no-' + flag[2:]], value
    if isinstance(kind, training_settings.Choice):
        value = [c for c in kind.choices if c not in (setting.default, base.get(setting.name))][0]
        return [flag, value], value
    if isinstance(kind, training_settings.Repeated):
        return [flag, kind.choices[0]], [kind.choices[0]]
    if isinstance(kind, training_settings.CommaList):
        return [flag, 'cutout'], ['cutout']
    if isinstance(kind, training_settings.ResolutionMap):
        return [flag, '8:32,16:8'], {8: 32, 16: 8}
    if isinstance(kind, training_settings.Text):
        return [flag, '/some/where/data'], '/some/where/data'
    candidates = [0.5, 0.25, 2.5, 7.0] if isinstance(kind, training_settings.Number) else [8, 2, 3, 64]
    for value in candidates:
        try:
            training_settings.check_value(setting.name, value)
        except ValueError:
            continue
        if value != setting.default:
            return [flag, repr(value)], value
    raise AssertionError('no example value for %s' % setting.name)


def test_every_setting_round_trips_through_the_command_line_and_config_json(tmp_path):
    """3-train.py's parser is built from the settings table: each setting's flag gives exactly that setting,
    with its type; run settings come back from config.json as they went in (numbers as numbers, resolutions as
    numbers, not JSON strings), network settings go to the networks that use them."""
    parse = load_script('3-train.py')
    run_dir = tmp_path / '00000-x'
    run_dir.mkdir()
    snapshot = str(run_dir / 'network-snapshot-000001.pkl')
    base = dict(training_settings.DEFAULTS, data_dir=str(tmp_path / 'data'), augment='ada')  # ada: any augment_*
    flags = [s for s in training_settings.SETTINGS if s.flag]
    assert len(flags) == len(training_settings.SETTINGS) - 1  # loss_kwargs: config.json and Python only
    for setting in flags:
        argv, value = example_value(setting, base)
        given = parse.explicit_settings(parse.parse_args(argv + (['--resume', snapshot]
                                                                 if setting.name == 'resume_kimg' else [])))
        given.pop('resume', None)
        assert given == {setting.name: value} and type(given[setting.name]) is type(value), (argv, given)
        if setting.name in training_settings.NETWORK_DEFAULTS:
            G_kwargs, D_kwargs = training_settings.network_kwargs(given)
            assert (setting.name in G_kwargs, setting.name in D_kwargs) == ('G' in setting.users,
                                                                            'D' in setting.users)
            continue
        if setting.name not in training_settings.DEFAULTS:
            continue  # resume_kimg: where a resume starts, not a setting of the run
        settings = dict(base, **given)
        (run_dir / 'config.json').write_bytes(training_settings.config_bytes(settings, G_params=10))
        restored, _ = training_settings.saved_settings(snapshot)
        assert restored == settings, setting.name
        for name in settings:
            assert type(restored[name]) is type(settings[name]), name
    # Whole numbers that JSON wrote without a fraction are the float settings' floats again.
    (run_dir / 'config.json').write_text(json.dumps(dict(total_kimg=3, ada_kimg=2, minibatch_dict={'8': 4})))
    restored, _ = training_settings.saved_settings(snapshot)
    assert restored == dict(total_kimg=3.0, ada_kimg=2.0, minibatch_dict={8: 4})
    assert type(restored['total_kimg']) is float and type(restored['ada_kimg']) is float


def test_help_shows_every_default():
    help_text = ' '.join(run_script('3-train.py', '-h').stdout.split())
    for setting in training_settings.SETTINGS:
        if setting.flag:
            assert setting.flag in help_text
            assert '(default: %s' % training_settings.default_text(setting) in help_text, setting.name
    assert '--no-mirror' in help_text and '--no-conditional' in help_text


@pytest.mark.parametrize('kwargs', [dict(fmap_base=32, fmap_max=8, latent_size=8), dict(fmap_base=64, fmap_max=16),
                                    dict(fmap_base=48, fmap_max=8, label_size=3, mbstd_group_size=0)])
def test_network_parameters_are_counted_without_building_the_networks(kwargs):
    with fresh_session():
        G = tfutil.Network('G', 'G_paper', num_channels=1, resolution=16,
                           **{k: v for k, v in kwargs.items() if k != 'mbstd_group_size'})
        D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=16,
                           **{k: v for k, v in kwargs.items() if k != 'latent_size'})
        assert training_settings.network_parameters(16, **kwargs) == (G.num_params(), D.num_params())


def test_memory_estimate_refuses_what_cannot_fit():
    settings = dict(training_settings.DEFAULTS, minibatch_dict={4: 65536})
    network = dict(fmap_base=1024, fmap_max=128)
    needed = [training_settings.training_bytes(r, 16, **network) for r in (4, 8, 16, 32, 64)]
    assert needed == sorted(needed) and needed[-1] < 1e9  # the small CPU configuration: well under 1 GB
    training_settings.check_memory(settings, network, [8, 16, 32, 64], 'small', available=2e9)
    with pytest.raises(training_settings.UserError) as error:  # the 4x4 minibatch override is the problem
        training_settings.check_memory(settings, network, [4, 8], 'small', available=2e9)
    assert str(error.value).startswith('small: training at 4x4 needs about ') and 'minibatch 65536' in str(error.value)
    assert 'more than the 2 GB this machine has' in str(error.value)


@pytest.mark.parametrize('total_kimg, lod_kimg, start_kimg, fragments', [
    (3000, 600, 0, ['--total-kimg 3000 ends at 16x16 (lod 2.00)', 'the full 64x64 (lod 0) needs 4800 kimg',
                    '--lod-training-kimg 600 and --lod-transition-kimg 600']),
    (3300, 600, 0, ['ends at the fade-in of 32x32 (lod 1.50)']),
    (10, 600, 0, ['ends at 4x4', 'this run trains 10 kimg', 'trails G by about 16 kimg (--g-smoothing 0.999 at '
                                                           'minibatch 16)']),
    (4800, 600, 0, []),
    (4810, 600, 4800, ['this run trains 10 kimg']),
])
def test_short_runs_are_warned_of(total_kimg, lod_kimg, start_kimg, fragments):
    cfg = types.SimpleNamespace(**dict(training_settings.DEFAULTS, total_kimg=float(total_kimg),
                                       lod_training_kimg=float(lod_kimg), lod_transition_kimg=float(lod_kimg)))
    lines = training_loop.schedule_warnings(cfg, training_loop.Schedule(64, lod_kimg, lod_kimg), start_kimg * 1000)
    text = '\n'.join(lines)
    assert all(line.startswith('warning: ') for line in lines)
    for fragment in fragments:
        assert fragment in text, text
    assert bool(lines) == bool(fragments)


def test_conditional_refuses_labels_that_are_not_one_hot(tmp_path, tiny_images):
    labels = np.zeros((len(tiny_images), 2), np.float32)
    labels[:, 0] = 1.0
    labels[3] = [0.5, 0.5]
    data = dataset.write_dataset(str(tmp_path / 'mixed'), tiny_images, labels=labels)
    outdir = str(tmp_path / 'results')
    result = train('--data', data, '--outdir', outdir, '--conditional', '--total-kimg', 1, *TINY_ARGS)
    assert_clean_failure(result, dataset.labels_path(data), 'row 3 is not one-hot (0.5 0.5)', '--conditional')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert run_dirs(outdir) == []


@pytest.mark.parametrize('contents, fragment', [
    (b'{"total_kimg": ', 'not a readable run configuration'),
    (b'\xff\xfe', 'not a readable run configuration'),
    (b'[1, 2]', 'not a run configuration'),
    (b'{"total_kimg": NaN}', 'total_kimg must be a number > 0'),
    (b'{"minibatch_dict": {"x": 4}}', 'minibatch_dict'),
    (b'{"minibatch_dict": null}', 'minibatch_dict'),
    (b'{"lr": "fast"}', 'lr must be'),
    (b'{"metrics": "swd"}', 'metrics must be'),
])
def test_a_damaged_config_json_is_refused(tmp_path, contents, fragment):
    run_dir = tmp_path / '00000-x'
    run_dir.mkdir()
    (run_dir / 'config.json').write_bytes(contents)
    snapshot = run_dir / 'network-snapshot-000002.pkl'
    snapshot.write_bytes(b'')
    with pytest.raises(training_settings.UserError) as error:
        training_settings.resolve_settings({'resume': str(snapshot)})
    assert str(error.value).startswith(str(run_dir / 'config.json') + ': ') and fragment in str(error.value)


# ----------------------------------------------------------------------------------------------------------------
# One D step and one G step


@pytest.fixture(scope='module')
def tiny_training(data_dir):
    """Tiny 16x16 networks with the training graph of 16x16 (minibatch 8, one device)."""
    graph = tf.Graph()
    session = tf.Session(graph=graph, config=tfutil.session_config())
    with graph.as_default(), session.as_default():
        tf.set_random_seed(5)
        G, D = tiny_networks()
        Gs = G.clone('Gs')
        schedule = training_loop.Schedule(16, initial_resolution=16, minibatch=8)
        graphs = training_loop.TrainingGraphs(G, D, Gs, data_dir, schedule, training_loop.available_devices(1),
                                              seed=5)
        graphs.build(4)
        tfutil.initialize_uninitialized_vars()
        initial = {net: net.get_vars() for net in (G, D, Gs)}

    class Tiny(object):
        pass
    tiny = Tiny()
    tiny.G, tiny.D, tiny.Gs, tiny.graphs = G, D, Gs, graphs

    @contextlib.contextmanager
    def active():
        """Back at the initial weights with fresh Adam state, as the default graph and session."""
        with graph.as_default(), session.as_default():
            for net, values in initial.items():
                net.set_vars(values)
            graphs.reset_optimizers()
            yield tiny
    tiny.active = active
    yield tiny
    session.close()


def changed(before, after):
    return sorted(name for name in before if not np.array_equal(before[name], after[name]))


@pytest.mark.slow
def test_one_D_step_and_one_G_step_change_the_weights(tiny_training):
    with tiny_training.active() as t:
        G, D, Gs, graphs = t.G, t.D, t.Gs, t.graphs
        ops = graphs.build(4)
        graphs.set_lod(0.5)  # halfway through the fade-in of 16x16: 16x16 and 8x8 paths both in use
        Gs.set_vars({name: value + 0.25 for name, value in trainable_values(Gs).items()})  # Gs apart from G
        G0, D0, Gs0 = trainable_values(G), trainable_values(D), trainable_values(Gs)

        # The D step, with the Gs update as in the original: Gs <- G + (Gs - G) * 0.999 from G before its step.
        _, D_loss, penalty = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']],
                                        {graphs.lr_in: 0.001})
        assert np.isfinite(D_loss) and np.isfinite(penalty) and penalty >= 0
        G1, D1, Gs1 = trainable_values(G), trainable_values(D), trainable_values(Gs)
        assert changed(G0, G1) == []
        for name in G0:
            np.testing.assert_allclose(Gs1[name], G0[name] + (Gs0[name] - G0[name]) * 0.999, rtol=1e-6, atol=1e-7)
        assert Gs.get_vars()['lod'] == 0.5  # copied, not averaged
        # Every D weight on the path at lod 0.5 moves; the 4x4 FromRGB only enters below lod 1, so its gradient is
        # exactly zero and Adam leaves it alone.
        unused_D = [n for n in D0 if n.startswith('FromRGB_lod2/')]
        assert len(unused_D) == 2
        assert changed(D0, D1) == sorted(n for n in D0 if n not in unused_D)
        # A first Adam step with beta1 = 0 moves each weight by about lr (m / sqrt(v) = sign(g)).
        steps = np.concatenate([np.abs(D1[n] - D0[n]).ravel() for n in D0 if n not in unused_D])
        assert np.median(steps) == pytest.approx(0.001, rel=0.01)

        # The G step leaves D and Gs alone.
        _, G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {graphs.lr_in: 0.001})
        assert np.isfinite(G_loss)
        G2, D2, Gs2 = trainable_values(G), trainable_values(D), trainable_values(Gs)
        assert changed(D1, D2) == [] and changed(Gs1, Gs2) == []
        unused_G = [n for n in G0 if n.startswith('ToRGB_lod2/')]
        assert len(unused_G) == 2
        assert changed(G1, G2) == sorted(n for n in G0 if n not in unused_G)
        assert G.get_vars()['lod'] == 0.5 and D.get_vars()['lod'] == 0.5

        # step() does both and reports the three losses.
        values = graphs.step(4, 0.001)
        assert len(values) == 3 and np.all(np.isfinite(values))
        assert changed(G2, trainable_values(G)) and changed(D2, trainable_values(D))


@pytest.mark.slow
def test_non_finite_gradients_skip_the_update(tiny_training):
    with tiny_training.active() as t:
        D, graphs = t.D, t.graphs
        ops = graphs.build(4)
        graphs.set_lod(0.0)
        D.set_vars({'4x4/Dense1/bias': np.array([np.nan], np.float32)})
        before = D.get_vars()
        slots_before = tfutil.run(graphs.D_opt.variables())
        _, D_loss = tfutil.run([ops['D_step'], ops['D_loss']], {graphs.lr_in: 0.001})
        assert not np.isfinite(D_loss)
        after = D.get_vars()
        for name in before:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        for old, new in zip(slots_before, tfutil.run(graphs.D_opt.variables())):
            np.testing.assert_array_equal(new, old)  # the optimizer state is untouched too


@pytest.mark.slow
def test_reset_optimizers_clears_adam_state(tiny_training):
    with tiny_training.active() as t:
        graphs = t.graphs
        graphs.set_lod(0.0)
        graphs.step(4, 0.001)
        slots = [v for v in graphs.G_opt.variables() + graphs.D_opt.variables() if v.shape.ndims]
        assert slots and any(np.any(value != 0) for value in tfutil.run(slots))
        graphs.reset_optimizers()
        assert all(np.all(value == 0) for value in tfutil.run(slots))


# ----------------------------------------------------------------------------------------------------------------
# The reals during a fade-in


def original_processed_reals(reals, lod):
    """The original's processing of reals read at resolution R / 2^floor(lod) (NHWC here, float64): blend with
    their 2x2 block means by lod - floor(lod), then nearest-upscale by 2^floor(lod) to full resolution."""
    reals = reals.astype(np.float64)
    n, h, w, c = reals.shape
    means = reals.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4), keepdims=True)
    blocks = np.broadcast_to(means, (n, h // 2, 2, w // 2, 2, c)).reshape(reals.shape)
    faded = reals + (blocks - reals) * (lod - np.floor(lod))
    factor = 2 ** int(np.floor(lod))
    return np.repeat(np.repeat(faded, factor, axis=1), factor, axis=2)


@pytest.mark.parametrize('lod', [0.0, 0.5, 1.0, 1.25, 2.0, 2.75])
def test_reals_fade_as_in_the_original(lod):
    """fade_reals at the graph of resolution R / 2^floor(lod), upscaled, equals the original's full-size reals."""
    full, factor = 16, 2 ** int(np.floor(lod))
    reals = np.random.RandomState(int(lod * 4)).uniform(-1, 1, (3, full // factor, full // factor, 1))
    with fresh_session():
        lod_in = tf.placeholder(tf.float32, [])
        faded = training_loop.fade_reals(tf.constant(reals.astype(np.float32)), lod_in, float(np.floor(lod)))
        faded = tfutil.run(faded, {lod_in: lod})
    upscaled = np.repeat(np.repeat(faded, factor, axis=1), factor, axis=2)
    np.testing.assert_allclose(upscaled, original_processed_reals(reals.astype(np.float32), lod), rtol=0, atol=1e-6)
    if lod == np.floor(lod):
        np.testing.assert_array_equal(faded, reals.astype(np.float32))  # untouched outside fade-ins


# ----------------------------------------------------------------------------------------------------------------
# Gs: the moving average of G


def test_Gs_is_the_moving_average_of_G():
    rng = np.random.RandomState(3)
    beta = 0.9
    with fresh_session(seed=6):
        G = tfutil.Network('G', 'G_paper', num_channels=1, resolution=8, latent_size=LATENT, **TINY)
        Gs = tfutil.Network('Gs', 'G_paper', num_channels=1, resolution=8, latent_size=LATENT, **TINY)
        G.init_vars()
        Gs.init_vars()
        update = Gs.setup_as_moving_average_of(G, beta=beta)
        update_default = Gs.setup_as_moving_average_of(G)
        expected = {name: value.astype(np.float64) for name, value in Gs.get_vars().items()}
        assert not all(np.array_equal(expected[n], v) for n, v in G.get_vars().items())  # they start apart
        for k, lod in enumerate([0.25, 1.0, 2.0]):
            values = {name: rng.randn(*var.shape.as_list()).astype(np.float32) for name, var in G.trainables.items()}
            values['lod'] = np.float32(lod)
            G.set_vars(values)
            tfutil.run(update)
            for name in G.trainables:
                expected[name] = values[name] + (expected[name] - values[name]) * beta
            expected['lod'] = lod
            got = Gs.get_vars()
            assert list(got) == list(expected)
            for name in G.trainables:
                np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
            assert got['lod'] == lod  # copied, not averaged
        # Closed form after the three updates: Gs = sum_k (1 - beta) beta^(2-k) G_k + beta^3 Gs_0 -- checked
        # implicitly above; the default rate is 0.999.
        before = Gs.get_vars()
        G_now = G.get_vars()
        tfutil.run(update_default)
        after = Gs.get_vars()
        for name in G.trainables:
            np.testing.assert_allclose(after[name], G_now[name] + (before[name] - G_now[name]) * 0.999,
                                       rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# One device against two


class _FixedDraws(object):
    """Stands in for `tf` inside training_loop while the training graphs are built: the latents and mixing factors
    become constants from a seeded NumPy stream, in call order, so that two graphs get the same draws."""

    def __init__(self, real_tf, seed):
        self._tf = real_tf
        self._rng = np.random.RandomState(seed)
        self.calls = []

    def __getattr__(self, name):
        return getattr(self._tf, name)

    def random_normal(self, shape, *args, **kwargs):
        self.calls.append(('normal', list(shape)))
        return self._tf.constant(self._rng.randn(*shape).astype(np.float32))

    def random_uniform(self, shape, minval=0.0, maxval=None, *args, **kwargs):
        self.calls.append(('uniform', list(shape)))
        return self._tf.constant(self._rng.uniform(minval, maxval, shape).astype(np.float32))


def _one_training_step(num_devices, initial, reals, monkeypatch, augment_policy=None):
    with fresh_session(cpu_devices=num_devices, seed=9):
        G, D = tiny_networks()
        G.set_vars(initial['G'])
        D.set_vars(initial['D'])
        Gs = G.clone('Gs')
        devices = training_loop.available_devices(num_devices)
        assert len(set(devices)) == num_devices
        if num_devices > 1:
            assert all(':CPU:' in d for d in devices)
        fixed = _FixedDraws(tf, seed=21)
        with monkeypatch.context() as patch:
            patch.setattr(training_loop, 'tf', fixed)
            patch.setattr(augment, 'tf', fixed)
            patch.setattr(training_loop.dataset, 'training_batches',
                          lambda *args, **kwargs: (tf.constant(reals), tf.zeros([len(reals), 0])))
            schedule = training_loop.Schedule(16, initial_resolution=16, minibatch=len(reals))
            # Every augmentation at p = 1, the bilinear ones included: the worst case for splitting the draws.
            pipe = augment.AugmentPipe(augment_policy, initial_p=1.0, ada_target=None, cutout=True) \
                if augment_policy else None
            graphs = training_loop.TrainingGraphs(G, D, Gs, '<unused>', schedule, devices, augment_pipe=pipe)
            graphs.build(4)
        # The draws really are the fixed ones: no random op of the training graph is left.
        if pipe is None:
            assert sorted(kind for kind, _ in fixed.calls) == ['normal', 'normal', 'uniform']
        assert [op.name for op in tf.get_default_graph().get_operations()
                if op.type.startswith('Random') and not op.name.startswith(('G/', 'D/', 'Gs/'))] == []
        tfutil.initialize_uninitialized_vars()
        graphs.set_lod(0.5)
        results = []
        for _ in range(2):
            ops = graphs.build(4)
            D_values = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']], {graphs.lr_in: 0.001})[1:]
            after_D = trainable_values(D)
            G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {graphs.lr_in: 0.001})[1]
            results.append(dict(D_loss=D_values[0], penalty=D_values[1], G_loss=G_loss, after_D=after_D,
                                G=trainable_values(G), Gs=trainable_values(Gs)))
        if pipe is not None:  # r_t from the real scores of every device's share
            results[-1]['rt'] = graphs.update_augment()[1]
        return results


@pytest.mark.slow
@pytest.mark.parametrize('augment_policy', [None, 'ada'])
def test_two_devices_give_the_same_step_as_one(tiny_images, monkeypatch, augment_policy):
    """Minibatch 8 with the minibatch-stddev layer on (group 4): split over two logical CPU devices (4 each) the
    losses and the weights after two D and two G steps equal those of one device, to float tolerance; with every
    augmentation on too (the draws are made for the whole minibatch and shared out with the images)."""
    reals = (tiny_images[:8].transpose(0, 2, 3, 1).astype(np.float32) / 127.5 - 1.0)
    with fresh_session(seed=8):
        G, D = tiny_networks()
        assert D.static_kwargs.get('mbstd_group_size', 4) == 4
        initial = {'G': G.get_vars(), 'D': D.get_vars()}
    one = _one_training_step(1, initial, reals, monkeypatch, augment_policy)
    two = _one_training_step(2, initial, reals, monkeypatch, augment_policy)
    if augment_policy:
        assert two[-1]['rt'] == one[-1]['rt']
    # Tolerances: the first step sees the same numbers summed in another order (a few 1e-7 apart); by the second,
    # Adam (which divides by the gradient's own size) has amplified those into the 1e-6 range.  Splitting the
    # minibatch into the wrong minibatch-stddev groups moves weights by about 2e-3 (2 * lr) on the first step.
    for step, (a, b) in enumerate(zip(one, two)):
        loss_rtol, weight_atol = (1e-5, 1e-6) if step == 0 else (1e-4, 1e-5)
        if augment_policy:  # the bilinear resampling adds its own differently ordered sums (1.2e-6 on TF 1.12)
            weight_atol *= 4
        for key in ('D_loss', 'penalty', 'G_loss'):
            assert np.isfinite(a[key])
            assert float(b[key]) == pytest.approx(float(a[key]), rel=loss_rtol, abs=1e-7), (step, key)
        for key in ('after_D', 'G', 'Gs'):
            atol = weight_atol * (1.0 if key != 'Gs' else 0.01)  # Gs moves by 0.001 of G's step
            for name in a[key]:
                np.testing.assert_allclose(b[key][name], a[key][name], rtol=0, atol=atol,
                                           err_msg='step %d %s %s' % (step, key, name))
        assert changed(a['after_D'], initial['D']) and changed(a['G'], initial['G'])


# ----------------------------------------------------------------------------------------------------------------
# Real runs of 3-train.py


def train(*args, **kwargs):
    return run_script('3-train.py', *args, **kwargs)


def test_resume_names_the_config_json_of_a_data_dir_that_is_gone(tmp_path):
    """The dataset a resumed run trained on was moved: the line says where that folder name came from."""
    run_dir = tmp_path / 'results' / '00000-tiny-16x16'
    run_dir.mkdir(parents=True)
    settings = dict(training_settings.DEFAULTS, data_dir=str(tmp_path / 'moved'), total_kimg=2.0)
    (run_dir / 'config.json').write_bytes(training_settings.config_bytes(settings, G_params=10))
    snapshot = run_dir / 'network-snapshot-000001.024.pkl'
    snapshot.write_bytes(b'never read: the dataset is checked first')
    result = train('--outdir', tmp_path / 'results', '--resume', snapshot)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines() == [
        'error: %s: no such dataset directory (the data_dir recorded in %s; give --data DIR to resume on a dataset '
        'elsewhere)' % (tmp_path / 'moved', run_dir / 'config.json')]
    assert sorted(os.listdir(str(tmp_path / 'results'))) == ['00000-tiny-16x16']


def check_ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    return result


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, data_dir):
    """A complete tiny run: 16x16 through all three resolutions in 1 kimg, a tick every 0.25 kimg."""
    outdir = str(tmp_path_factory.mktemp('results'))
    result = check_ok(train('--data', data_dir, '--outdir', outdir, '--total-kimg', 1, '--tick-kimg', 0.25,
                            '--snapshot-ticks', 2, '--metrics', 'swd', *TINY_ARGS))
    dirs = run_dirs(outdir)
    assert len(dirs) == 1, dirs
    return outdir, os.path.join(outdir, dirs[0]), result


@pytest.mark.slow
def test_run_writes_every_output(first_run, tiny_images, data_dir):
    outdir, run_dir, result = first_run
    assert os.path.basename(run_dir) == '00000-tiny-16x16'
    names = set(os.listdir(run_dir))
    ticks = tick_nimgs(0, 1, 0.25)
    assert ticks == [256, 512, 768, 1024]
    fakes = {'fakes000000.png', 'fakes000000.256.png', 'fakes000000.512.png', 'fakes000000.768.png',
             'fakes000001.024.png'}  # every tick, named by its exact kimg
    snapshots = {'network-snapshot-000000.512.pkl', 'network-snapshot-000001.024.pkl'}  # every 2nd and the last
    events = [n for n in names if n.startswith('events.out.tfevents.')]
    assert len(events) == 1
    expected = {'log.txt', 'config.json', 'reals.png', 'network-final.pkl'} | fakes | snapshots | set(events)
    assert names == expected  # and nothing half-written left behind

    # The reals grid: the first 32 images, 8 per row.
    mode, grid = read_png(os.path.join(run_dir, 'reals.png'))
    assert mode == 'L' and grid.shape == (64, 128)
    for index in range(32):
        row, col = divmod(index, 8)
        np.testing.assert_array_equal(grid[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16], tiny_images[index, 0])
    for name in fakes:
        mode, grid = read_png(os.path.join(run_dir, name))
        assert mode == 'L' and grid.shape == (64, 128)
    # The last grid shows what the final Gs generates for RandomState(seed) latents, 8 per row.
    with fresh_session():
        Gs = legacy.load_network_pkl(os.path.join(run_dir, 'network-final.pkl'), which=('Gs',))
        latents = np.random.RandomState(1000).randn(32, LATENT).astype(np.float32)
        final_fakes = outputs.float_to_uint8(Gs.run(latents, np.zeros((32, 0), np.float32),
                                                     minibatch_size=16))[..., 0]
    _, grid = read_png(os.path.join(run_dir, 'fakes000001.024.png'))
    np.testing.assert_array_equal(grid, outputs.image_grid(final_fakes, columns=8))

    config = read_config(run_dir)
    assert config['total_kimg'] == 1 and config['resume'] is None and config['resume_kimg'] == 0
    assert config['lod_training_kimg'] == 0.2 and config['lod_transition_kimg'] == 0.2 and config['minibatch'] == 16
    assert config['G_kwargs']['latent_size'] == LATENT and config['G_kwargs']['fmap_base'] == 32
    assert config['D_kwargs']['fmap_max'] == 8
    assert os.path.samefile(config['data_dir'], data_dir)

    # One log line per tick, at the kimg, lod and resolution the schedule gives.
    logged = tick_lines(run_dir)
    assert len(logged) == len(ticks)
    for tick, nimg in zip(logged, ticks):
        schedule_kimg = (nimg - MINIBATCHES_PER_SCHEDULE * 16) / 1000.0  # where the last 4 minibatches began
        lod = expected_lod(schedule_kimg, 16, 0.2, 0.2)
        assert tick['kimg'] == pytest.approx(nimg / 1000.0, abs=0.051)
        assert tick['lod'] == pytest.approx(lod, abs=0.0006)
        assert tick['resolution'] == expected_resolution(lod, 16)
        assert tick['minibatch'] == 16 and tick['sec'] > 0
        for key in ('G_loss', 'D_loss', 'gradient_penalty'):
            assert np.isfinite(tick[key]), tick
        assert tick['augment_p'] == 0 and -1 <= tick['r_t'] <= 1  # nothing augmented; D's overfitting measured
    assert [t['resolution'] for t in logged] == [4, 8, 16, 16]
    with open(os.path.join(run_dir, 'log.txt')) as f:
        log_text = f.read()
    assert log_text.strip().splitlines()[-1].endswith(os.path.join(run_dir, 'network-final.pkl'))
    assert 'tick' in result.stdout
    # network-final.pkl is the last snapshot itself: a hard link (where the file system has them, as here).
    assert os.path.samefile(os.path.join(run_dir, 'network-final.pkl'),
                            os.path.join(run_dir, 'network-snapshot-000001.024.pkl'))
    # It says what it is doing before the first tick, builds each resolution's graph when its phase starts, and
    # warns that 1 kimg is too short for Gs's moving average to follow G.
    out = result.stdout
    steps = ['reading and checking every file of %s' % data_dir, 'creating the networks', 'run %s' % run_dir,
             'warning: this run trains 1 kimg, but Gs', 'checking the 4x4 file and building its training graph',
             '4x4 training graph built in', ' tick 1 ', 'checking the 8x8 file', 'checking the 16x16 file']
    assert [out.index(text) for text in steps] == sorted(out.index(text) for text in steps), out
    assert 'warning: --total-kimg' not in out  # 16x16 is reached at 0.8 kimg

    # TensorBoard: the same values, one event per tick.
    tags = {}
    for event in tf.train.summary_iterator(os.path.join(run_dir, events[0])):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(value.simple_value)
    for tag in ('Progress/lod', 'Progress/resolution', 'Progress/minibatch', 'Timing/sec_per_kimg', 'Loss/G',
                'Loss/D', 'Loss/gradient_penalty', 'Progress/augment_p', 'Loss/signs_real'):
        assert len(tags.get(tag, [])) == len(ticks), (tag, sorted(tags))
    np.testing.assert_allclose(tags['Progress/lod'], [t['lod'] for t in logged], atol=0.0006)

    # --metrics swd: one SWD line and one summary per network snapshot, finite and positive.
    swd_lines = [line for line in log_text.splitlines() if 'swd x1e3 at kimg' in line]
    assert len(swd_lines) == len(snapshots) == len(tags['Metrics/swd_average'])
    assert len(tags['Metrics/swd_16x16']) == len(snapshots)
    assert all(np.isfinite(v) and v > 0 for v in tags['Metrics/swd_average'])

    # The pickles load with the safe loader and hold the networks that were asked for.
    for name in snapshots | {'network-final.pkl'}:
        with fresh_session():
            G, D, Gs = legacy.load_network_pkl(os.path.join(run_dir, name))
            assert (G.name, D.name, Gs.name) == ('G', 'D', 'Gs')
            assert G.input_shapes[0] == [None, LATENT] and G.output_shapes[0] == [None, 16, 16, 1]
            assert G.static_kwargs['resolution'] == 16 and D.static_kwargs['fmap_base'] == 32
            for net in (G, D, Gs):
                assert all(np.all(np.isfinite(v)) for v in net.get_vars().values())
            assert Gs.get_vars()['lod'] == G.get_vars()['lod']  # copied into Gs with every D step
            if name == 'network-final.pkl':
                assert G.get_vars()['lod'] == 0.0


@pytest.mark.slow
def test_final_pickle_generates_images_with_2_inference(first_run, tmp_path):
    _, run_dir, _ = first_run
    outdir = str(tmp_path / 'generated')
    check_ok(run_script('2-inference.py', '--model', os.path.join(run_dir, 'network-final.pkl'),
                        '--outdir', outdir, '--number', 4))
    assert sorted(os.listdir(outdir)) == ['inference_img_%d.png' % i for i in range(4)]
    images = [read_png(os.path.join(outdir, 'inference_img_%d.png' % i)) for i in range(4)]
    for mode, image in images:
        assert mode == 'L' and image.shape == (16, 16) and image.dtype == np.uint8
    assert not np.array_equal(images[0][1], images[1][1])


@pytest.fixture(scope='module')
def resumed_run(first_run, data_dir):
    """A second run in the same results directory, resumed from the first one's last snapshot (taken at 1.024 kimg)
    with a learning rate of 1e-30, too small to move any weight in float32 (a step is at most about 10 lr): G and
    D must stay exactly as loaded, Gs must drift towards G as the closed-form moving average says."""
    outdir, first_dir, _ = first_run
    snapshot = os.path.join(first_dir, 'network-snapshot-000001.024.pkl')
    with open(os.path.join(first_dir, 'log.txt')) as f:
        first_log = f.read()
    result = check_ok(train('--data', data_dir, '--outdir', outdir, '--resume', snapshot, '--total-kimg', 2.2,
                            '--tick-kimg', 0.25, '--snapshot-ticks', 2, '--lr', 1e-30, '--metrics', 'none',
                            *TINY_ARGS))
    dirs = run_dirs(outdir)
    assert len(dirs) == 2, dirs
    with open(os.path.join(first_dir, 'log.txt')) as f:
        assert f.read() == first_log  # the first run is left alone
    return snapshot, os.path.join(outdir, dirs[1]), result


@pytest.mark.slow
def test_second_run_gets_a_new_directory(resumed_run, first_run):
    _, run_dir, _ = resumed_run
    assert os.path.basename(run_dir) == '00001-tiny-16x16'
    assert 'network-final.pkl' in os.listdir(run_dir)


@pytest.mark.slow
def test_resume_continues_at_the_exact_kimg_of_the_snapshot(resumed_run):
    snapshot, run_dir, _ = resumed_run
    config = read_config(run_dir)
    assert os.path.samefile(config['resume'], snapshot)
    assert config['resume_kimg'] == 1.024 and config['total_kimg'] == 2.2 and config['lr'] == 1e-30
    assert config['metrics'] == []  # --metrics none turns off what the resumed run computed
    ticks = tick_nimgs(1.024, 2.2, 0.25)
    assert ticks == [1280, 1536, 1792, 2048, 2240]
    logged = tick_lines(run_dir)
    assert [int(round(t['kimg'] * 1000)) for t in logged] == ticks
    assert all(t['lod'] == 0 and t['resolution'] == 16 for t in logged)  # not back at 4x4
    names = set(os.listdir(run_dir))
    assert {n for n in names if SNAPSHOT.match(n)} == {'network-snapshot-000001.536.pkl',
                                                       'network-snapshot-000002.048.pkl',
                                                       'network-snapshot-000002.240.pkl'}
    assert {n for n in names if n.startswith('fakes')} == {training_settings.fakes_name(n) for n in [1024] + ticks}


@pytest.mark.slow
def test_resume_loads_the_snapshot_networks(resumed_run):
    snapshot, run_dir, _ = resumed_run
    steps = (tick_nimgs(1.024, 2.2, 0.25)[-1] - 1024) // 16
    with fresh_session():
        G0, D0, Gs0 = [net.get_vars() for net in legacy.load_network_pkl(snapshot)]
    with fresh_session():
        G1, D1, Gs1 = [net.get_vars() for net in legacy.load_network_pkl(os.path.join(run_dir, 'network-final.pkl'))]
    assert list(G1) == list(G0) and list(D1) == list(D0) and list(Gs1) == list(Gs0)
    assert any(not np.array_equal(G0[n], Gs0[n]) for n in G0 if n != 'lod')  # Gs has somewhere to go
    for name in G0:
        if name == 'lod':
            continue
        np.testing.assert_array_equal(G1[name], G0[name], err_msg=name)  # exactly as loaded
        expected = G0[name] + (Gs0[name].astype(np.float64) - G0[name]) * 0.999 ** steps
        np.testing.assert_allclose(Gs1[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)
    for name in D0:
        if name != 'lod':
            np.testing.assert_array_equal(D1[name], D0[name], err_msg=name)


def test_run_directories_are_numbered_past_every_existing_one(tmp_path):
    outdir = str(tmp_path / 'results')
    first = training_loop.new_run_dir(outdir, 'tiny-16x16')
    assert os.path.basename(first) == '00000-tiny-16x16' and os.listdir(first) == []
    os.makedirs(os.path.join(outdir, '00007-other-64x64'))
    os.makedirs(os.path.join(outdir, 'notes'))
    second = training_loop.new_run_dir(outdir, 'tiny-16x16')
    assert os.path.basename(second) == '00008-tiny-16x16'
    assert training_loop.new_run_dir(outdir, 'x') == os.path.join(outdir, '00009-x')


# ----------------------------------------------------------------------------------------------------------------
# A run killed at an arbitrary moment (SIGKILL), then resumed from the latest snapshot


@pytest.mark.slow
def test_run_killed_mid_write_resumes_cleanly(tmp_path, data_dir):
    outdir = str(tmp_path / 'results')
    log_path = str(tmp_path / 'killed-run.log')
    command = [sys.executable, os.path.join(ROOT, '3-train.py'), '--data', data_dir, '--outdir', outdir,
               '--total-kimg', 1000, '--tick-kimg', 0.001, '--snapshot-ticks', 1] + TINY_ARGS
    with open(log_path, 'w') as log:
        process = subprocess.Popen([str(a) for a in command], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.time() + 300
        run_dir = None
        while time.time() < deadline:  # until the first snapshot is complete
            assert process.poll() is None, open(log_path).read()
            dirs = run_dirs(outdir)
            if dirs:
                run_dir = os.path.join(outdir, dirs[0])
                if any(SNAPSHOT.match(n) for n in os.listdir(run_dir)):
                    break
            time.sleep(0.05)
        else:
            pytest.fail('no snapshot after 300 s: ' + open(log_path).read())
        # Snapshots now come every 64 images.  Kill while a temporary file is being written if we catch one,
        # otherwise after a couple of seconds, wherever the run happens to be.
        caught = False
        deadline = time.time() + 3.0
        while time.time() < deadline and not caught:
            caught = any(n.startswith('.') and n.endswith('.tmp') for n in os.listdir(run_dir))
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    names = os.listdir(run_dir)
    snapshots = sorted(n for n in names if SNAPSHOT.match(n))
    assert snapshots
    for name in names:  # everything is either complete and named, or an obviously temporary hidden file
        known = (SNAPSHOT.match(name) or FAKES.match(name) or name.startswith('events.out.')
                 or name in ('log.txt', 'config.json', 'reals.png'))
        assert known or (name.startswith('.') and name.endswith('.tmp')), name
        if not known:
            assert not SNAPSHOT.match(name.lstrip('.'))
    for name in snapshots:
        with fresh_session():
            G, D, Gs = legacy.load_network_pkl(os.path.join(run_dir, name))
            assert all(np.all(np.isfinite(v)) for v in Gs.get_vars().values())
    for name in names:
        if name.endswith('.png'):
            read_png(os.path.join(run_dir, name))  # complete images

    latest = os.path.join(run_dir, snapshots[-1])
    # Resume with nothing but the length: the dataset, schedule, ticks and network size come from the killed run.
    match = SNAPSHOT.match(snapshots[-1])
    latest_nimg = int(match.group(1)) * 1000 + int((match.group(2) or '.0')[1:])
    total_nimg = latest_nimg + 256
    result = check_ok(train('--outdir', outdir, '--resume', 'latest', '--total-kimg', total_nimg / 1000.0))
    dirs = run_dirs(outdir)
    assert len(dirs) == 2
    resumed = os.path.join(outdir, dirs[1])
    config, killed_config = read_config(resumed), read_config(run_dir)
    assert os.path.samefile(config['resume'], latest) and config['resume_kimg'] == latest_nimg / 1000.0
    for key in ('data_dir', 'lod_training_kimg', 'lod_transition_kimg', 'tick_kimg', 'snapshot_ticks', 'G_kwargs',
                'D_kwargs', 'minibatch', 'lr', 'G_smoothing', 'seed', 'mirror'):
        assert config[key] == killed_config[key], key
    assert config['tick_kimg'] == 0.001 and config['G_kwargs']['fmap_base'] == 32
    with open(os.path.join(resumed, 'log.txt')) as f:
        log_text = f.read()
    assert 'settings restored from %s' % os.path.join(run_dir, 'config.json') in log_text
    assert 'settings from the command line: total_kimg=%s' % (total_nimg / 1000.0) in log_text
    logged = tick_lines(resumed)
    assert [int(round(t['kimg'] * 1000)) for t in logged] == tick_nimgs(latest_nimg / 1000.0,
                                                                         total_nimg / 1000.0, 0.001)
    with fresh_session():
        legacy.load_network_pkl(os.path.join(resumed, 'network-final.pkl'))
    # The killed run's directory is left as it was, except for its temporary files.
    assert sorted(os.listdir(run_dir)) == sorted(n for n in names if not n.endswith('.tmp'))
    assert 'Traceback' not in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, a non-zero status, and no run directory


PARSE_TIME_REFUSALS = {
    'total-kimg nan': (['--total-kimg', 'nan'], ['--total-kimg', 'nan']),
    'total-kimg inf': (['--total-kimg', 'inf'], ['--total-kimg', 'inf']),
    'total-kimg 0': (['--total-kimg', '0'], ['--total-kimg', '> 0']),
    'lod-training-kimg nan': (['--lod-training-kimg', 'nan'], ['--lod-training-kimg']),
    'lod-training-kimg negative': (['--lod-training-kimg', '-1'], ['--lod-training-kimg', '>= 0']),
    'lod-transition-kimg nan': (['--lod-transition-kimg', 'nan'], ['--lod-transition-kimg']),
    'no schedule': (['--lod-training-kimg', '0', '--lod-transition-kimg', '0'], ['never leave']),
    'resume-kimg negative': (['--resume', 'x.pkl', '--resume-kimg', '-5'], ['--resume-kimg', '-5']),
    'resume-kimg without resume': (['--resume-kimg', '5'], ['--resume-kimg needs --resume']),
    'num-gpus 3, minibatch 16': (['--num-gpus', '3'], ['minibatch 16', '3 devices']),
    'num-gpus 2, per-res 9': (['--num-gpus', '2', '--minibatch-per-res', '4:32,8:9'], ['8x8', '9', '2 devices']),
    'minibatch 6': (['--minibatch', '6'], ['minibatch-stddev']),
    'per-res not a resolution': (['--minibatch-per-res', '5:16'], ['--minibatch-per-res']),
    'per-res garbage': (['--minibatch-per-res', 'big'], ['RES:SIZE']),
    'g-smoothing nan': (['--g-smoothing', 'nan'], ['--g-smoothing']),
    'g-smoothing 1': (['--g-smoothing', '1'], ['--g-smoothing', 'below 1']),
    'g-smoothing negative': (['--g-smoothing', '-0.1'], ['--g-smoothing']),
    'lr nan': (['--lr', 'nan'], ['--lr']),
    'lr 0': (['--lr', '0'], ['--lr', '> 0']),
    'lr negative': (['--lr', '-0.001'], ['--lr']),
    'tick-kimg 0': (['--tick-kimg', '0'], ['--tick-kimg']),
    'tick-kimg nan': (['--tick-kimg', 'nan'], ['--tick-kimg']),
    'seed too large': (['--seed', str(2 ** 32)], ['--seed']),
    'snapshot-ticks 0': (['--snapshot-ticks', '0'], ['--snapshot-ticks']),
    'metric-images 0': (['--metric-images', '0'], ['--metric-images']),
    'metrics unknown': (['--metrics', 'fid'], ['--metrics']),
    'resume latest, no results dir': (['--resume', 'latest'], ['no such results directory']),
    'augment unknown': (['--augment', 'gan'], ['--augment', 'gan']),
    'augment-enable unknown': (['--augment', 'ada', '--augment-enable', 'blur'], ['--augment-enable', 'blur']),
    'augment-enable and -disable': (['--augment', 'ada', '--augment-enable', 'cutout', '--augment-disable',
                                     'xflip,cutout'], ['cutout', 'both enabled and disabled']),
    'augment none with p': (['--augment-p', '0.5'], ['augment is none']),
    'augment none with an augmentation': (['--augment-enable', 'xflip'], ['augment is none']),
    'diffaugment with p': (['--augment', 'diffaugment', '--augment-p', '0.5'], ['applies to ada']),
    'augment-p above 1': (['--augment', 'ada', '--augment-p', '1.5'], ['--augment-p']),
    'ada-target nan': (['--ada-target', 'nan'], ['--ada-target']),
    'ada-kimg 0': (['--ada-kimg', '0'], ['--ada-kimg']),
    # Sizes whose memory no machine has: refused from the settings, before TensorFlow builds anything.
    'fmap absurd': (['--fmap-base', '1000000000', '--fmap-max', '1000000000'],
                    ['--fmap-base 1000000000 --fmap-max 1000000000', 'training at 4x4 needs about', 'GB']),
    'latent-size absurd': (['--latent-size', '2000000000'], ['--latent-size 2000000000', 'of memory']),
    'minibatch absurd': (['--minibatch', '10000000000'], ['--minibatch 10000000000', 'minibatch 10000000000']),
    'num-gpus absurd': (['--num-gpus', '2147483648'], ['--num-gpus', 'from 1 to 64']),
}


@pytest.fixture(scope='module')
def parse_time_refusals(tmp_path_factory):
    """Every invocation that must be refused before TensorFlow is even imported; run in parallel."""
    base = str(tmp_path_factory.mktemp('refused'))
    outdirs = {case: os.path.join(base, 'out-%d' % i) for i, case in enumerate(sorted(PARSE_TIME_REFUSALS))}

    def invoke(case):
        return train(*(PARSE_TIME_REFUSALS[case][0] + ['--outdir', outdirs[case]]))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(sorted(PARSE_TIME_REFUSALS), pool.map(invoke, sorted(PARSE_TIME_REFUSALS))))
    return {case: (results[case], outdirs[case]) for case in PARSE_TIME_REFUSALS}


@pytest.mark.parametrize('case', sorted(PARSE_TIME_REFUSALS))
def test_bad_settings_are_refused_at_once(parse_time_refusals, case):
    """One line, no traceback, and nothing created: not even the results directory."""
    result, outdir = parse_time_refusals[case]
    assert_clean_failure(result, *PARSE_TIME_REFUSALS[case][1])
    assert result.returncode in (1, 2)  # argparse's usage error, or a bad combination
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(outdir)


def corrupt_record_data(path, record=1):
    """Flip one byte inside the data of a record (its length stays valid, its data checksum no longer matches)."""
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    position = 0
    for _ in range(record):  # skip whole records: 8 length + 4 length CRC + data + 4 data CRC
        position += 16 + int.from_bytes(bytes(data[position:position + 8]), 'little')
    data[position + 12 + 20] ^= 0xFF
    with open(path, 'wb') as f:
        f.write(bytes(data))


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory, data_dir):
    """Bad invocations that are found once the dataset and the networks are looked at, all at once (they spend
    most of their time importing TensorFlow, so run them in parallel).
    Returns {case: (result, outdir, run dirs before, fragments)}."""
    base = str(tmp_path_factory.mktemp('bad'))
    empty = os.path.join(base, 'empty')
    os.makedirs(empty)
    with open(os.path.join(empty, 'readme.txt'), 'w') as f:
        f.write('not a dataset\n')
    garbage = os.path.join(base, 'garbage', 'network-snapshot-000000.512.pkl')
    os.makedirs(os.path.dirname(garbage))
    with open(garbage, 'wb') as f:
        f.write(b'this is not a pickle\n' * 10)
    no_snapshots = os.path.join(base, 'no-snapshots')
    os.makedirs(os.path.join(no_snapshots, '00000-tiny-16x16'))
    small = dataset.write_dataset(os.path.join(base, 'small'),
                                  np.random.RandomState(0).randint(0, 256, (8, 1, 8, 8)).astype(np.uint8))
    corrupt = dataset.write_dataset(os.path.join(base, 'corrupt'), tiny_dataset_images())
    corrupt_record_data(dataset.tfrecord_path(corrupt, 3))
    snapshot = os.path.join(base, 'run', 'network-snapshot-000000.256.pkl')  # tiny 16x16 networks
    os.makedirs(os.path.dirname(snapshot))
    with fresh_session(seed=1):
        G, D = tiny_networks()
        legacy.save_network_pkl(snapshot, (G, D, G.clone('Gs')))
    missing_pkl = os.path.join(base, 'gone', 'network-snapshot-000003.pkl')
    odd_name = os.path.join(base, 'gone', 'weights.pkl')
    cases = {
        'missing dataset': (['--data', os.path.join(base, 'nope')], ['nope', 'no such dataset directory']),
        'no tfrecords': (['--data', empty], [empty, 'tfrecords']),
        'corrupt lower resolution': (['--data', corrupt], [dataset.tfrecord_path(corrupt, 3)]),
        'missing resume file': (['--data', data_dir, '--resume', missing_pkl], [missing_pkl, 'no such']),
        'missing resume file without kimg': (['--data', data_dir, '--resume', odd_name], [odd_name]),
        'resume not a pickle': (['--data', data_dir, '--resume', garbage], [garbage, 'pickle']),
        'resume latest, no snapshots': (['--data', data_dir, '--resume', 'latest'], ['network-snapshot']),
        'resume other resolution': (['--data', small, '--resume', snapshot], ['resolution']),
        'resume other network size': (['--data', data_dir, '--resume', snapshot, '--fmap-base', 64],
                                      [snapshot, 'fmap_base=32', 'command line', '64']),
        'resume with nothing left to train': (['--data', data_dir, '--resume', snapshot, '--total-kimg', 0.2],
                                              [snapshot, 'nothing left to train']),
        'conditional without labels': (['--data', data_dir, '--conditional'],
                                       [data_dir, 'has no labels', 'dataset_tool.py merge']),
    }
    outdirs = {case: os.path.join(base, 'out-%d' % i) for i, case in enumerate(sorted(cases))}
    outdirs['resume latest, no snapshots'] = no_snapshots
    before = {case: run_dirs(outdirs[case]) for case in cases}

    def invoke(case):
        args, _ = cases[case]
        extra = [] if '--total-kimg' in args else ['--total-kimg', 1]
        return train(*(TINY_ARGS + args + ['--outdir', outdirs[case]] + extra))  # the case's flags win

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(sorted(cases), pool.map(invoke, sorted(cases))))
    return {case: (results[case], outdirs[case], before[case], cases[case][1]) for case in cases}


@pytest.mark.slow
@pytest.mark.parametrize('case', ['missing dataset', 'no tfrecords', 'corrupt lower resolution',
                                  'missing resume file', 'missing resume file without kimg', 'resume not a pickle',
                                  'resume latest, no snapshots', 'resume other resolution',
                                  'resume other network size', 'resume with nothing left to train',
                                  'conditional without labels'])
def test_bad_input_fails_cleanly_without_a_run_directory(bad_runs, case):
    result, outdir, before, fragments = bad_runs[case]
    assert_clean_failure(result, *fragments)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert run_dirs(outdir) == before, 'a run directory was left behind by a failed start'


# ----------------------------------------------------------------------------------------------------------------
# Small-data training: ADA's p through a run and its resume, one conditional model of two classes

ADA_STEP = 64 / 2000.0  # p moves by the images of 4 minibatches of 16 over ada_kimg 2 (2000 images) per update


@pytest.fixture(scope='module')
def labelled_data_dir(tmp_path_factory, tiny_images):
    """The tiny images as two named classes, 16 each, as dataset_tool.py merge would label them."""
    labels = np.zeros((len(tiny_images), 2), np.float32)
    labels[np.arange(len(tiny_images)), np.arange(len(tiny_images)) // 16] = 1.0
    return dataset.write_dataset(str(tmp_path_factory.mktemp('labelled') / 'two'), tiny_images, labels=labels,
                                 metadata={'classes': ['AIS', 'MIA']})


@pytest.fixture(scope='module')
def ada_run(tmp_path_factory, labelled_data_dir):
    """--conditional --augment ada with target -1, so that p rises with every update (r_t is never below -1),
    ADA_STEP at a time; then a resume from its last snapshot for 0.256 kimg more."""
    outdir = str(tmp_path_factory.mktemp('ada'))
    first = check_ok(train('--data', labelled_data_dir, '--outdir', outdir, '--conditional', '--augment', 'ada',
                           '--ada-target', -1, '--ada-kimg', 2, '--total-kimg', 1, '--tick-kimg', 0.25,
                           '--snapshot-ticks', 2, *TINY_ARGS))
    snapshot = os.path.join(outdir, run_dirs(outdir)[0], 'network-snapshot-000001.024.pkl')
    resumed = check_ok(train('--outdir', outdir, '--resume', snapshot, '--total-kimg', 1.28))
    first_dir, resumed_dir = [os.path.join(outdir, d) for d in run_dirs(outdir)]
    return first_dir, resumed_dir, snapshot, first, resumed


def stored_augment_p(pkl):
    with fresh_session():
        return legacy.load_network_pkl(pkl, which=('D',)).static_kwargs.get('augment_p')


@pytest.mark.slow
def test_ada_p_adapts_is_logged_and_travels_with_the_snapshots(ada_run):
    first_dir, _, _, _, _ = ada_run
    ticks = tick_lines(first_dir)
    p = [t['augment_p'] for t in ticks]
    updates = np.diff([0.0] + p) / ADA_STEP  # updates that moved p in each tick: 4 per tick at most
    assert np.all(np.abs(updates - np.round(updates)) < 0.01) and np.all((updates >= 0) & (updates <= 4.01)), p
    assert p[-1] > 8 * ADA_STEP, p  # it did adapt (16 updates in 1 kimg; r_t = -1 exactly stops one)
    events = [n for n in os.listdir(first_dir) if n.startswith('events.out.tfevents.')]
    logged = {}
    for event in tf.train.summary_iterator(os.path.join(first_dir, events[0])):
        for value in event.summary.value:
            logged.setdefault(value.tag, []).append(value.simple_value)
    np.testing.assert_allclose(logged['Progress/augment_p'], p, atol=6e-5)
    assert len(logged['Loss/signs_real']) == len(ticks)
    # Snapshots carry the p of their tick in D's static keywords, which the networks' builders ignore.
    assert stored_augment_p(os.path.join(first_dir, 'network-snapshot-000000.512.pkl')) == pytest.approx(p[1],
                                                                                                         abs=6e-5)
    assert stored_augment_p(os.path.join(first_dir, 'network-final.pkl')) == pytest.approx(p[-1], abs=6e-5)
    config = read_config(first_dir)
    assert config['augment'] == 'ada' and config['ada_target'] == -1 and config['augment_p'] is None
    assert config['augment_config']['augmentations'] == ['xflip', 'yflip', 'rotate90', 'translate', 'scale',
                                                         'rotate', 'brightness', 'contrast']


@pytest.mark.slow
def test_resume_continues_ada_from_the_snapshots_p(ada_run):
    _, resumed_dir, snapshot, _, _ = ada_run
    stored = stored_augment_p(snapshot)
    with open(os.path.join(resumed_dir, 'log.txt')) as f:
        log_text = f.read()
    assert 'augment: p = %.4f restored from %s' % (stored, snapshot) in log_text
    resumed_p = tick_lines(resumed_dir)[0]['augment_p']  # 4 updates after the resume
    assert stored - 1e-4 <= resumed_p <= stored + 4 * ADA_STEP + 1e-4
    assert resumed_p > 4 * ADA_STEP + 1e-4  # more than p could reach from 0 in those 4 updates
    assert read_config(resumed_dir)['augment'] == 'ada'  # restored with the other settings


@pytest.mark.slow
def test_conditional_run_stores_its_class_names_for_inference(ada_run, tmp_path):
    first_dir, _, _, first, _ = ada_run
    assert 'conditional on 2 classes: AIS, MIA' in first.stdout
    final = os.path.join(first_dir, 'network-final.pkl')
    with fresh_session():
        for net in legacy.load_network_pkl(final):
            assert net.static_kwargs['label_size'] == 2 and net.static_kwargs['label_names'] == ['AIS', 'MIA']
    generated = {}
    for name in ('AIS', 'MIA'):
        outdir = str(tmp_path / name)
        check_ok(run_script('2-inference.py', '--model', final, '--label', name, '--number', 4, '--outdir', outdir))
        generated[name] = [read_png(os.path.join(outdir, 'inference_img_%d.png' % i))[1] for i in range(4)]
    assert any(not np.array_equal(a, b) for a, b in zip(generated['AIS'], generated['MIA']))  # the label matters


@pytest.mark.slow
def test_labels_are_used_only_with_conditional(tmp_path, labelled_data_dir, ada_run):
    """Without --conditional a labelled dataset trains one unconditional model (and the log says so); a
    conditional snapshot cannot be resumed without its labels."""
    outdir = str(tmp_path / 'plain')
    result = check_ok(train('--data', labelled_data_dir, '--outdir', outdir, '--total-kimg', 0.128, *TINY_ARGS))
    assert 'has labels; they are not used (train one model of every class with --conditional)' in result.stdout
    with fresh_session():
        Gs = legacy.load_network_pkl(os.path.join(outdir, run_dirs(outdir)[0], 'network-final.pkl'), which=('Gs',))
        assert Gs.input_shapes[1] == [None, 0] and 'label_names' not in Gs.static_kwargs
    _, _, snapshot, _, _ = ada_run
    refused = train('--outdir', str(tmp_path / 'refused'), '--resume', snapshot, '--no-conditional',
                    '--total-kimg', 2)
    assert_clean_failure(refused, snapshot, 'label_size=2', '0')
    assert not os.path.exists(str(tmp_path / 'refused'))


# ----------------------------------------------------------------------------------------------------------------
# Transfer: a new run started from a trained model's weights, at full resolution


@pytest.fixture(scope='module')
def transfer_run(tmp_path_factory, first_run, labelled_data_dir):
    """The unconditional tiny model of first_run, transferred to the two-class dataset (--conditional) at a rate
    so small that no weight moves measurably, then resumed."""
    _, first_dir, _ = first_run
    source = os.path.join(first_dir, 'network-final.pkl')
    outdir = str(tmp_path_factory.mktemp('transfer'))
    result = check_ok(train('--data', labelled_data_dir, '--outdir', outdir, '--transfer', source, '--conditional',
                            '--lr', 1e-12, '--total-kimg', 0.256, '--tick-kimg', 0.128, '--snapshot-ticks', 1))
    run_dir = os.path.join(outdir, run_dirs(outdir)[0])
    resumed = check_ok(train('--outdir', outdir, '--resume', os.path.join(run_dir, 'network-final.pkl'),
                             '--total-kimg', 0.384))
    return source, run_dir, os.path.join(outdir, run_dirs(outdir)[1]), result, resumed


@pytest.mark.slow
def test_transfer_starts_from_the_source_weights_with_fresh_label_inputs_and_outputs(transfer_run):
    source, run_dir, _, result, _ = transfer_run
    assert 'networks started from %s (transfer), trained at full resolution' % source in result.stdout
    with fresh_session():
        before = [net.get_vars() for net in legacy.load_network_pkl(source)]
        nets = legacy.load_network_pkl(os.path.join(run_dir, 'network-final.pkl'))
        after = [net.get_vars() for net in nets]
        assert [net.static_kwargs['label_names'] for net in nets] == [['AIS', 'MIA']] * 3
    # Gs starts as the source's Gs and follows G by its moving average (G_smoothing 0.999, 16 minibatches of 16).
    before[2] = {name: before[0][name] + (value - before[0][name]) * 0.999 ** 16 for name, value in before[2].items()}
    grown = set()
    for role, old, new in zip(('G', 'D', 'Gs'), before, after):
        assert sorted(old) == sorted(new), role
        for name, value in old.items():
            if value.shape == new[name].shape:
                np.testing.assert_allclose(new[name], value, rtol=1e-5, atol=1e-6, err_msg='%s %s' % (role, name))
                continue
            grown.add((role, name, value.shape, new[name].shape))
            block = tuple(slice(0, n) for n in value.shape)
            np.testing.assert_allclose(new[name][block], value, rtol=1e-5, atol=1e-6, err_msg='%s %s' % (role, name))
            if role == 'Gs':  # G's new label rows, copied into Gs when the networks were made
                fresh = np.ones(new[name].shape, bool)
                fresh[block] = False
                np.testing.assert_allclose(new[name][fresh], after[0][name][fresh], rtol=1e-5, atol=1e-6)
    # Exactly the label inputs of G (2 rows after the 8 latent ones) and the label outputs of D (after the score).
    dense = {(role, name): (old, new) for role, name, old, new in grown}
    assert sorted(dense) == [('D', '4x4/Dense1/bias'), ('D', '4x4/Dense1/weight'), ('G', '4x4/Dense/weight'),
                             ('Gs', '4x4/Dense/weight')], grown
    assert dense['G', '4x4/Dense/weight'] == ((LATENT, 128), (LATENT + 2, 128))
    assert dense['D', '4x4/Dense1/weight'] == ((8, 1), (8, 3)) and dense['D', '4x4/Dense1/bias'] == ((1,), (3,))


@pytest.mark.slow
def test_a_transferred_run_trains_at_full_resolution_also_when_resumed(transfer_run):
    source, run_dir, resumed_dir, _, resumed = transfer_run
    for directory in (run_dir, resumed_dir):
        ticks = tick_lines(directory)
        assert ticks and all(t['lod'] == 0.0 and t['resolution'] == 16 for t in ticks), ticks
        assert read_config(directory)['transfer'] == os.path.abspath(source)
    assert [t['kimg'] for t in tick_lines(run_dir)] == [0.128, 0.256]
    assert 'loading the networks of %s' % os.path.join(run_dir, 'network-final.pkl') in resumed.stdout


@pytest.mark.slow
def test_transfer_refusals(tmp_path, first_run, labelled_data_dir, data_dir, ada_run):
    _, first_dir, _ = first_run
    source = os.path.join(first_dir, 'network-final.pkl')
    outdir = str(tmp_path / 'results')
    refused = train('--data', data_dir, '--outdir', outdir, '--transfer', source, '--resume', source)
    assert_clean_failure(refused, '--transfer starts a new run from a model')
    assert_clean_failure(train('--data', data_dir, '--outdir', outdir, '--transfer', source, '--fmap-base', 64),
                         source, 'fmap_base=32', 'asks for 64')
    _, _, conditional, _, _ = ada_run
    assert_clean_failure(train('--data', data_dir, '--outdir', outdir, '--transfer', conditional),
                         conditional, 'conditional on 2 classes', 'gives 0')
    assert_clean_failure(train('--data', data_dir, '--outdir', outdir, '--transfer', str(tmp_path / 'nothing.pkl')),
                         'nothing.pkl')
    assert not os.path.exists(outdir)


# ----------------------------------------------------------------------------------------------------------------
# A diverging run: nothing with non-finite weights is saved


@pytest.mark.slow
def test_weights_that_are_not_finite_are_never_saved(first_run, tmp_path):
    """--lr 1e300 is infinite in float32: the first step makes weights infinite.  Training stops at the next tick
    with one line naming the last good snapshot (the one resumed from), and writes no snapshot and no
    network-final.pkl."""
    _, first_dir, _ = first_run
    snapshot = os.path.join(first_dir, 'network-snapshot-000001.024.pkl')
    outdir = str(tmp_path / 'results')
    result = train('--outdir', outdir, '--resume', snapshot, '--lr', '1e300', '--total-kimg', 1.5, '--tick-kimg',
                   0.064, '--snapshot-ticks', 1)
    assert_clean_failure(result, 'training diverged', 'non-finite weights at kimg 1.088',
                         'the last good snapshot is %s' % snapshot)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    run_dir = os.path.join(outdir, run_dirs(outdir)[0])
    names = os.listdir(run_dir)
    assert not [n for n in names if SNAPSHOT.match(n)] and 'network-final.pkl' not in names
    with open(os.path.join(run_dir, 'log.txt')) as f:
        assert 'error: training diverged' in f.read().strip().splitlines()[-1]


def limit_file_size(size=30000):
    """preexec_fn: files larger than `size` bytes cannot be written (EFBIG), as on a full disk."""
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.slow
def test_a_snapshot_that_cannot_be_written_stops_training_cleanly(tmp_path, data_dir):
    """A snapshot larger than the process may write (the tiny networks' pickle is about 45 kB; the limit is 30 kB,
    which the log, the grids and config.json stay under): one line naming it and the last good snapshot, exit
    status 1, nothing half-written."""
    outdir = str(tmp_path / 'results')
    result = train('--data', data_dir, '--outdir', outdir, '--total-kimg', 0.256, '--tick-kimg', 0.064,
                   '--snapshot-ticks', 1, *TINY_ARGS, preexec_fn=limit_file_size())
    run_dir = os.path.join(outdir, run_dirs(outdir)[0])
    snapshot = os.path.join(run_dir, 'network-snapshot-000000.064.pkl')
    assert_clean_failure(result, snapshot, 'cannot be written', 'training stopped at kimg 0.064',
                         'the last good snapshot is none')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(n for n in os.listdir(run_dir) if not n.startswith('events.')) == [
        'config.json', 'fakes000000.064.png', 'fakes000000.png', 'log.txt', 'reals.png']


# ----------------------------------------------------------------------------------------------------------------
# A dataset file that goes bad while training runs


def forge_record_length(path):
    """Replace `path` (a new file renamed over it) by one whose first record claims 2**40 bytes, with a length
    checksum that matches: TensorFlow's reader trusts such a length and crashes the process."""
    header = struct.pack('<Q', 2 ** 40)
    forged = header + struct.pack('<I', dataset.masked_crc32c(header)) + b'\0' * 64
    with open(path + '.new', 'wb') as f:
        f.write(forged)
    os.replace(path + '.new', path)


def truncate_to_half(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
@pytest.mark.parametrize('damage, fragment', [(forge_record_length, 'claims 1099511627776 bytes'),
                                              (truncate_to_half, 'holds 16 records but')])
def test_a_file_that_changes_during_training_is_checked_when_its_phase_opens_it(tmp_path, damage, fragment):
    """The 8x8 file is damaged after the first tick at 4x4 (its check at the start passed): the fade-in to 8x8
    checks it again before TensorFlow reads it, and training stops with one line naming it and the last good
    snapshot; no network-final.pkl."""
    data = dataset.write_dataset(str(tmp_path / 'tiny'), tiny_dataset_images())
    damaged = dataset.tfrecord_path(data, 3)
    outdir = str(tmp_path / 'results')
    lines = []

    def console(line):
        lines.append(line)
        if ' tick 1 ' in line:
            damage(damaged)
    settings = dict(training_settings.DEFAULTS, data_dir=data, total_kimg=1.0, lod_training_kimg=0.2,
                    lod_transition_kimg=0.2, tick_kimg=0.064, snapshot_ticks=1)
    with pytest.raises(training_settings.UserError) as error:
        training_loop.train(settings, outdir, G_kwargs=dict(TINY, latent_size=LATENT), D_kwargs=TINY,
                            console=console)
    message = str(error.value)
    run_dir = os.path.join(outdir, run_dirs(outdir)[0])
    snapshots = sorted(n for n in os.listdir(run_dir) if SNAPSHOT.match(n))
    assert message.startswith(damaged + ': ') and fragment in message, message
    assert 'training stopped at kimg 0.256, the last good snapshot is %s' % os.path.join(run_dir, snapshots[-1]) \
        in message
    assert snapshots == ['network-snapshot-000000.%03d.pkl' % n for n in (64, 128, 192, 256)]
    assert 'network-final.pkl' not in os.listdir(run_dir)
    assert lines[-1].endswith('error: ' + message)


@pytest.mark.slow
def test_a_file_that_fails_mid_run_stops_training_cleanly(tmp_path):
    """The 8x8 file is damaged after training started at 4x4 (its check passed): when the fade-in to 8x8 first reads
    it, training stops with one line naming it, exit status 1, and the snapshots taken so far intact."""
    data = dataset.write_dataset(str(tmp_path / 'tiny'), tiny_dataset_images())
    outdir = str(tmp_path / 'results')
    log_path = str(tmp_path / 'run.log')
    command = [sys.executable, os.path.join(ROOT, '3-train.py'), '--data', data, '--outdir', outdir,
               '--total-kimg', 5, '--tick-kimg', 0.1, '--snapshot-ticks', 1, '--fmap-base', 32, '--fmap-max', 8,
               '--latent-size', LATENT, '--lod-training-kimg', 1, '--lod-transition-kimg', 1]
    with open(log_path, 'w') as log:
        process = subprocess.Popen([str(a) for a in command], stdout=log, stderr=subprocess.PIPE, cwd=ROOT,
                                   universal_newlines=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # until the first tick at 4x4
            assert process.poll() is None, open(log_path).read() + process.stderr.read()
            if ' tick ' in open(log_path).read():
                break
            time.sleep(0.05)
        else:
            pytest.fail('no tick after 300 s: ' + open(log_path).read())
        damaged = dataset.tfrecord_path(data, 3)
        corrupt_record_data(damaged)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stderr
    assert 'Traceback' not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert damaged in stderr and 'training stopped' in stderr
    run_dir = os.path.join(outdir, run_dirs(outdir)[0])
    names = os.listdir(run_dir)
    snapshots = sorted(n for n in names if SNAPSHOT.match(n))
    assert snapshots and 'network-final.pkl' not in names
    assert snapshots[-1] in stderr  # named as the last good snapshot
    assert not [n for n in names if n.endswith('.tmp')]
    for name in snapshots:
        with fresh_session():
            legacy.load_network_pkl(os.path.join(run_dir, name))
    with open(os.path.join(run_dir, 'log.txt')) as f:
        assert damaged in f.read().strip().splitlines()[-1]
