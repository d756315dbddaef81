"""Tests for training (SPEC section 5 and the run outputs of 3-train.py): the schedule, one D and one G step, the
gradient penalty against finite differences, the Gs moving average, one device against two, and short real runs
of 3-train.py (outputs, inference from the result, resume, a run killed with SIGKILL, bad input).

Expected values are computed here from the SPEC (the schedule, the EMA, the penalty by finite differences in
NumPy); the code under test is only used to build and run what is being tested.  Networks are tiny
(fmap_base 32, fmap_max 8, latent size 8) and datasets are 16x16, so every graph builds in seconds on a CPU.
"""
import concurrent.futures
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_clean_failure, run_script
from tfcompat import tf
import dataset
import legacy
import losses
import tfutil
import training_loop

TINY = dict(fmap_base=32, fmap_max=8)
LATENT = 8
TINY_ARGS = ['--fmap-base', 32, '--fmap-max', 8, '--latent-size', LATENT,
             '--lod-training-kimg', 0.2, '--lod-transition-kimg', 0.2]
SNAPSHOT = re.compile(r'^network-snapshot-(\d{6})\.pkl$')
RUN_DIR = re.compile(r'^\d{5}-')
MINIBATCHES_PER_SCHEDULE = 4   # SPEC 5: a fresh minibatch configuration every 4 minibatches


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
                       r'D_loss\s+(?P<D_loss>\S+)\s+gradient_penalty\s+(?P<gradient_penalty>\S+)')


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
    """SPEC 5, written out stage by stage: each resolution trains for `training` kimg, then the next one fades in
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


@pytest.fixture(scope='module')
def tiny_images():
    return np.random.RandomState(1234).randint(0, 256, size=(32, 1, 16, 16)).astype(np.uint8)


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


def test_schedule_minibatch_overrides_and_device_rounding():
    schedule = training_loop.Schedule(64, minibatch=16, minibatch_dict={4: 64, 8: 30, 32: 3}, lr_dict={16: 0.002})
    assert schedule.at(0).minibatch == 64          # 4x4
    assert schedule.at(1200).minibatch == 30       # 8x8
    assert schedule.at(2400).minibatch == 16       # 16x16: the base value
    assert schedule.at(2400).lr == pytest.approx(0.002)
    assert schedule.at(1200).lr == pytest.approx(0.001)
    assert schedule.at(3600).minibatch == 3        # 32x32
    assert schedule.at(4800).minibatch == 16       # 64x64
    # Several devices: every device gets an equal share, so sizes round down to a multiple of the device count
    # (never to zero).
    four = training_loop.Schedule(64, minibatch=18, minibatch_dict={4: 64, 8: 30, 32: 3}, num_devices=4)
    assert [four.at(k).minibatch for k in (0, 1200, 2400, 3600, 4800)] == [64, 28, 16, 4, 16]
    two = training_loop.Schedule(64, minibatch=18, minibatch_dict={32: 3}, num_devices=2)
    assert [two.at(k).minibatch for k in (0, 3600)] == [18, 2]


def test_schedule_tick_lengths():
    schedule = training_loop.Schedule(64)
    assert [schedule.at(k).tick_kimg for k in (0, 1200, 2400, 3600, 4800)] == [160, 140, 120, 100, 80]
    assert training_loop.Schedule(64, tick_kimg=0.5).at(2400).tick_kimg == 0.5


# ----------------------------------------------------------------------------------------------------------------
# One D step and one G step


@pytest.fixture(scope='module')
def tiny_training(data_dir):
    """Tiny 16x16 networks with the training graph of the 16x16 level (minibatch 8, one device)."""
    graph = tf.Graph()
    session = tf.Session(graph=graph, config=tfutil.session_config())
    with graph.as_default(), session.as_default():
        tf.set_random_seed(5)
        G, D = tiny_networks()
        Gs = G.clone('Gs')
        schedule = training_loop.Schedule(16, initial_resolution=16, minibatch=8)
        graphs = training_loop.TrainingGraphs(G, D, Gs, data_dir, schedule, training_loop.available_devices(1),
                                              seed=5)
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


def test_one_D_step_and_one_G_step_change_the_weights(tiny_training):
    with tiny_training.active() as t:
        G, D, Gs, graphs = t.G, t.D, t.Gs, t.graphs
        ops = graphs.levels[4]
        graphs.set_lod(0.5)  # halfway through the fade-in of 16x16: 16x16 and 8x8 paths both in use
        G0, D0, Gs0 = trainable_values(G), trainable_values(D), trainable_values(Gs)

        _, D_loss, penalty = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']],
                                        {graphs.lr_in: 0.001})
        assert np.isfinite(D_loss) and np.isfinite(penalty) and penalty >= 0
        G1, D1, Gs1 = trainable_values(G), trainable_values(D), trainable_values(Gs)
        assert changed(G0, G1) == [] and changed(Gs0, Gs1) == []
        # Every D weight on the path at lod 0.5 moves; the 4x4 FromRGB only enters below lod 1, so its gradient is
        # exactly zero and Adam leaves it alone.
        unused_D = [n for n in D0 if n.startswith('FromRGB_lod2/')]
        assert len(unused_D) == 2
        assert changed(D0, D1) == sorted(n for n in D0 if n not in unused_D)
        # A first Adam step with beta1 = 0 moves each weight by about lr (m / sqrt(v) = sign(g)).
        steps = np.concatenate([np.abs(D1[n] - D0[n]).ravel() for n in D0 if n not in unused_D])
        assert np.median(steps) == pytest.approx(0.001, rel=0.01)

        _, G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {graphs.lr_in: 0.001})
        assert np.isfinite(G_loss)
        G2, D2, Gs2 = trainable_values(G), trainable_values(D), trainable_values(Gs)
        assert changed(D1, D2) == []
        unused_G = [n for n in G0 if n.startswith('ToRGB_lod2/')]
        assert len(unused_G) == 2
        assert changed(G1, G2) == sorted(n for n in G0 if n not in unused_G)
        # Gs follows G with beta 0.999: Gs <- G + (Gs - G) * 0.999, with G after its step; lod is copied.
        for name in G0:
            np.testing.assert_allclose(Gs2[name], G2[name] + (Gs1[name] - G2[name]) * 0.999, rtol=1e-5, atol=1e-7)
        assert Gs.get_vars()['lod'] == 0.5 and G.get_vars()['lod'] == 0.5 and D.get_vars()['lod'] == 0.5

        # step() does both and reports the three losses.
        values = graphs.step(4, 0.001)
        assert len(values) == 3 and np.all(np.isfinite(values))
        assert changed(G2, trainable_values(G)) and changed(D2, trainable_values(D))


def test_non_finite_gradients_skip_the_update(tiny_training):
    with tiny_training.active() as t:
        D, graphs = t.D, t.graphs
        ops = graphs.levels[4]
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
# Gradient penalty against finite differences


@pytest.mark.parametrize('mbstd_group_size', [0, 4])
def test_gradient_penalty_matches_finite_differences(mbstd_group_size):
    """||dD/dx|| at x = reals + u (fakes - reals), estimated in NumPy by central differences over every pixel of
    8x8 inputs, against the norm inside losses.gradient_penalty (target 0 gives norm^2, target 1 the penalty).

    D is piecewise linear (leaky ReLUs), so a difference is exact unless a kink lies within the step; in float32
    the step cannot be tiny either.  Each entry is therefore the median of central differences over five small
    steps.  With the minibatch-stddev layer on, a sample's score depends on its group and the penalty
    differentiates the sum of scores; so does the estimate (one pixel of one sample moves, all scores summed)."""
    rng = np.random.RandomState(7)
    N, R = 4, 8
    reals = rng.uniform(-1, 1, (N, R, R, 1)).astype(np.float32)
    fakes = rng.uniform(-1, 1, (N, R, R, 1)).astype(np.float32)
    mixing = rng.uniform(0, 1, (N, 1, 1, 1)).astype(np.float32)
    mixed = reals + (fakes - reals) * mixing
    steps = np.array([2e-4, 3e-4, 5e-4, 7e-4, 1e-3])
    # Every perturbed copy of the minibatch, [steps, +/-, N*R*R pixels] of them.
    copies = []
    for h in steps:
        for sign in (1.0, -1.0):
            for index in np.ndindex(*mixed.shape):
                copy = mixed.copy()
                copy[index] += np.float32(sign * h)
                copies.append(copy)
    K = len(copies)
    # All copies go through D in one run.  Copy k's sample j sits at row j*K + k: with groups n mod (N*K / 4)
    # (SPEC 4.2) each copy is then exactly one minibatch-stddev group, as the minibatch alone would be.
    stacked = np.stack(copies, axis=1).reshape((N * K,) + mixed.shape[1:])
    with fresh_session(seed=3):
        D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=R, mbstd_group_size=mbstd_group_size, **TINY)
        D.init_vars()
        reals_in = tf.placeholder(tf.float32, [N, R, R, 1])
        fakes_in = tf.placeholder(tf.float32, [N, R, R, 1])
        mixing_in = tf.placeholder(tf.float32, [N, 1, 1, 1])
        squared_norm = losses.gradient_penalty(D, reals_in, fakes_in, mixing_in, wgan_target=0.0)
        penalty = losses.gradient_penalty(D, reals_in, fakes_in, mixing_in)
        squared_norm, penalty = tfutil.run([squared_norm, penalty],
                                           {reals_in: reals, fakes_in: fakes, mixing_in: mixing})
        x_in = tf.placeholder(tf.float32, [None, R, R, 1])
        scores = tfutil.run(D.get_output_for(x_in)[0], {x_in: stacked})
    sums = scores.reshape(N, K).astype(np.float64).sum(axis=0).reshape(len(steps), 2, -1)
    differences = (sums[:, 0] - sums[:, 1]) / (2 * steps[:, np.newaxis])
    estimate = np.median(differences, axis=0).reshape(mixed.shape)

    assert squared_norm.shape == (N, 1) and penalty.shape == (N, 1)
    norms_fd = np.sqrt(np.sum(estimate ** 2, axis=(1, 2, 3)))
    norms_tf = np.sqrt(squared_norm[:, 0])
    assert np.all(norms_fd > 0.01)  # a meaningful comparison, not 0 == 0
    np.testing.assert_allclose(norms_tf, norms_fd, rtol=5e-3)
    np.testing.assert_allclose(penalty[:, 0], (norms_fd - 1.0) ** 2, rtol=1e-2)


def test_D_and_G_losses_are_composed_as_in_the_spec():
    """D loss = D(G(z)) - D(x) + 10 * GP + 0.001 * D(x)^2 per sample; G loss = -D(G(z))."""
    rng = np.random.RandomState(11)
    N = 4
    latents = rng.randn(N, LATENT).astype(np.float32)
    reals = rng.uniform(-1, 1, (N, 8, 8, 1)).astype(np.float32)
    mixing = rng.uniform(0, 1, (N, 1, 1, 1)).astype(np.float32)
    labels = np.zeros((N, 0), np.float32)
    with fresh_session(seed=4):
        G, D = tiny_networks(resolution=8)
        D_loss, terms = losses.D_wgangp(G, D, tf.constant(latents), tf.constant(reals), tf.constant(labels),
                                        tf.constant(mixing))
        G_loss = losses.G_wgan(G, D, tf.constant(latents), tf.constant(labels))
        D_loss, G_loss, terms = tfutil.run([D_loss, G_loss, terms])
        fakes = G.run(latents, labels)
        fake_scores = D.run(fakes)[0]
        real_scores = D.run(reals)[0]
    np.testing.assert_allclose(terms['real_scores'], real_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms['fake_scores'], fake_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(G_loss, -fake_scores, rtol=1e-5, atol=1e-6)
    expected = fake_scores - real_scores + 10.0 * terms['gradient_penalty'] + 0.001 * real_scores ** 2
    np.testing.assert_allclose(D_loss, expected, rtol=1e-5, atol=1e-6)


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


def _one_training_step(num_devices, initial, reals, monkeypatch):
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
            patch.setattr(training_loop.dataset, 'training_batches',
                          lambda *args, **kwargs: (tf.constant(reals), tf.zeros([len(reals), 0])))
            schedule = training_loop.Schedule(16, initial_resolution=16, minibatch=len(reals),
                                              num_devices=num_devices)
            graphs = training_loop.TrainingGraphs(G, D, Gs, '<unused>', schedule, devices)
        # The draws really are the fixed ones: no random op of the training graph is left.
        assert sorted(kind for kind, _ in fixed.calls) == ['normal', 'normal', 'uniform']
        assert [op.name for op in tf.get_default_graph().get_operations()
                if op.type.startswith('Random') and not op.name.startswith(('G/', 'D/', 'Gs/'))] == []
        tfutil.initialize_uninitialized_vars()
        graphs.set_lod(0.5)
        results = []
        for _ in range(2):
            ops = graphs.levels[4]
            D_values = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']], {graphs.lr_in: 0.001})[1:]
            after_D = trainable_values(D)
            G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {graphs.lr_in: 0.001})[1]
            results.append(dict(D_loss=D_values[0], penalty=D_values[1], G_loss=G_loss, after_D=after_D,
                                G=trainable_values(G), Gs=trainable_values(Gs)))
        return results


def test_two_devices_give_the_same_step_as_one(tiny_images, monkeypatch):
    """Minibatch 8 with the minibatch-stddev layer on (group 4): split over two logical CPU devices (4 each) the
    losses and the weights after two D and two G steps equal those of one device, to float tolerance."""
    reals = (tiny_images[:8].transpose(0, 2, 3, 1).astype(np.float32) / 127.5 - 1.0)
    with fresh_session(seed=8):
        G, D = tiny_networks()
        assert D.static_kwargs.get('mbstd_group_size', 4) == 4
        initial = {'G': G.get_vars(), 'D': D.get_vars()}
    one = _one_training_step(1, initial, reals, monkeypatch)
    two = _one_training_step(2, initial, reals, monkeypatch)
    # Tolerances: the first step sees the same numbers summed in another order (a few 1e-7 apart); by the second,
    # Adam (which divides by the gradient's own size) has amplified those into the 1e-6 range.  Splitting the
    # minibatch into the wrong minibatch-stddev groups moves weights by about 2e-3 (2 * lr) on the first step.
    for step, (a, b) in enumerate(zip(one, two)):
        loss_rtol, weight_atol = (1e-5, 1e-6) if step == 0 else (1e-4, 1e-5)
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


def test_run_writes_every_output(first_run, tiny_images, data_dir):
    outdir, run_dir, result = first_run
    assert os.path.basename(run_dir) == '00000-tiny-16x16'
    names = set(os.listdir(run_dir))
    ticks = tick_nimgs(0, 1, 0.25)
    assert ticks == [256, 512, 768, 1024]
    fakes = {'fakes%06d.png' % (n // 1000) for n in [0] + ticks}
    snapshots = {'network-snapshot-%06d.pkl' % (n // 1000) for i, n in enumerate(ticks) if (i + 1) % 2 == 0
                 or i == len(ticks) - 1}
    assert fakes == {'fakes000000.png', 'fakes000001.png'}
    assert snapshots == {'network-snapshot-000000.pkl', 'network-snapshot-000001.pkl'}
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
    assert [t['resolution'] for t in logged] == [4, 8, 16, 16]
    with open(os.path.join(run_dir, 'log.txt')) as f:
        log_text = f.read()
    assert log_text.strip().splitlines()[-1].endswith(os.path.join(run_dir, 'network-final.pkl'))
    assert 'tick' in result.stdout

    # TensorBoard: the same values, one event per tick.
    tags = {}
    for event in tf.train.summary_iterator(os.path.join(run_dir, events[0])):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(value.simple_value)
    for tag in ('Progress/lod', 'Progress/resolution', 'Progress/minibatch', 'Timing/sec_per_kimg', 'Loss/G',
                'Loss/D', 'Loss/gradient_penalty'):
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
            assert Gs.get_vars()['lod'] == G.get_vars()['lod']  # copied into Gs at every G step
            if name == 'network-final.pkl':
                assert G.get_vars()['lod'] == 0.0


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
    """A second run in the same results directory, resumed from the first one's 1-kimg snapshot with learning rate
    0: G and D must stay exactly as loaded, Gs must drift towards G as the closed-form moving average says."""
    outdir, first_dir, _ = first_run
    snapshot = os.path.join(first_dir, 'network-snapshot-000001.pkl')
    with open(os.path.join(first_dir, 'log.txt')) as f:
        first_log = f.read()
    result = check_ok(train('--data', data_dir, '--outdir', outdir, '--resume', snapshot, '--total-kimg', 2.2,
                            '--tick-kimg', 0.25, '--snapshot-ticks', 2, '--lr', 0, *TINY_ARGS))
    dirs = run_dirs(outdir)
    assert len(dirs) == 2, dirs
    with open(os.path.join(first_dir, 'log.txt')) as f:
        assert f.read() == first_log  # the first run is left alone
    return snapshot, os.path.join(outdir, dirs[1]), result


def test_second_run_gets_a_new_directory(resumed_run, first_run):
    _, run_dir, _ = resumed_run
    assert os.path.basename(run_dir) == '00001-tiny-16x16'
    assert 'network-final.pkl' in os.listdir(run_dir)


def test_resume_continues_at_the_saved_kimg(resumed_run):
    snapshot, run_dir, _ = resumed_run
    config = read_config(run_dir)
    assert os.path.samefile(config['resume'], snapshot)
    assert config['resume_kimg'] == 1.0 and config['total_kimg'] == 2.2
    ticks = tick_nimgs(1.0, 2.2, 0.25)
    assert ticks == [1256, 1512, 1768, 2024, 2216]
    logged = tick_lines(run_dir)
    assert len(logged) == len(ticks)
    assert logged[0]['kimg'] > 1.0 and logged[0]['kimg'] == pytest.approx(1.256, abs=0.051)
    assert logged[-1]['kimg'] == pytest.approx(2.216, abs=0.051)
    assert all(t['lod'] == 0 and t['resolution'] == 16 for t in logged)  # not back at 4x4
    names = set(os.listdir(run_dir))
    assert {n for n in names if SNAPSHOT.match(n)} == {'network-snapshot-000001.pkl', 'network-snapshot-000002.pkl'}
    assert {n for n in names if n.startswith('fakes')} == {'fakes000001.png', 'fakes000002.png'}


def test_resume_loads_the_snapshot_networks(resumed_run):
    snapshot, run_dir, _ = resumed_run
    steps = (tick_nimgs(1.0, 2.2, 0.25)[-1] - 1000) // 16
    with fresh_session():
        G0, D0, Gs0 = [net.get_vars() for net in legacy.load_network_pkl(snapshot)]
    with fresh_session():
        G1, D1, Gs1 = [net.get_vars() for net in legacy.load_network_pkl(os.path.join(run_dir, 'network-final.pkl'))]
    assert list(G1) == list(G0) and list(D1) == list(D0) and list(Gs1) == list(Gs0)
    assert any(not np.array_equal(G0[n], Gs0[n]) for n in G0 if n != 'lod')  # Gs has somewhere to go
    for name in G0:
        if name == 'lod':
            continue
        np.testing.assert_array_equal(G1[name], G0[name], err_msg=name)  # learning rate 0: exactly as loaded
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


def test_latest_snapshot_is_the_newest_complete_one(tmp_path):
    outdir = str(tmp_path / 'results')
    older = os.path.join(outdir, '00000-a')
    newer = os.path.join(outdir, '00001-a')
    newest = os.path.join(outdir, '00002-a')  # started, no snapshot yet
    for path in (older, newer, newest):
        os.makedirs(path)
    for run, names in ((older, ['network-snapshot-000900.pkl']),
                       (newer, ['network-snapshot-000010.pkl', 'network-snapshot-000120.pkl',
                                'network-snapshot-000040.pkl', '.network-snapshot-000200.pkl.abcd.tmp',
                                'network-final.pkl']),
                       (newest, ['log.txt'])):
        for name in names:
            open(os.path.join(run, name), 'wb').close()
    latest = training_loop.find_latest_snapshot(outdir)
    assert latest == os.path.join(newer, 'network-snapshot-000120.pkl')
    assert training_loop.kimg_of_snapshot(latest) == 120.0


# ----------------------------------------------------------------------------------------------------------------
# A run killed at an arbitrary moment (SIGKILL), then resumed from the latest snapshot


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
        known = (SNAPSHOT.match(name) or re.match(r'^fakes\d{6}\.png$', name) or name.startswith('events.out.')
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
    latest_kimg = int(SNAPSHOT.match(snapshots[-1]).group(1))
    result = check_ok(train('--data', data_dir, '--outdir', outdir, '--resume', 'latest',
                            '--total-kimg', latest_kimg + 0.3, '--tick-kimg', 0.25, '--snapshot-ticks', 1,
                            *TINY_ARGS))
    dirs = run_dirs(outdir)
    assert len(dirs) == 2
    resumed = os.path.join(outdir, dirs[1])
    config = read_config(resumed)
    assert os.path.samefile(config['resume'], latest) and config['resume_kimg'] == latest_kimg
    logged = tick_lines(resumed)
    assert logged and logged[0]['kimg'] > latest_kimg
    assert logged[-1]['kimg'] == pytest.approx(tick_nimgs(latest_kimg, latest_kimg + 0.3, 0.25)[-1] / 1000.0,
                                               abs=0.051)
    with fresh_session():
        legacy.load_network_pkl(os.path.join(resumed, 'network-final.pkl'))
    assert sorted(os.listdir(run_dir)) == sorted(names)  # the killed run's directory is left as it was
    assert 'Traceback' not in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, a non-zero status, and no run directory


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory, first_run, data_dir):
    """Every bad invocation at once (they spend most of their time importing TensorFlow, so run them in parallel).
    Returns {case: (result, outdir, run dirs before, fragments)}."""
    base = str(tmp_path_factory.mktemp('bad'))
    _, first_dir, _ = first_run
    empty = os.path.join(base, 'empty')
    os.makedirs(empty)
    with open(os.path.join(empty, 'readme.txt'), 'w') as f:
        f.write('not a dataset\n')
    garbage = os.path.join(base, 'garbage', 'network-snapshot-000002.pkl')
    os.makedirs(os.path.dirname(garbage))
    with open(garbage, 'wb') as f:
        f.write(b'this is not a pickle\n' * 10)
    no_snapshots = os.path.join(base, 'no-snapshots')
    os.makedirs(os.path.join(no_snapshots, '00000-tiny-16x16'))
    small = dataset.write_dataset(os.path.join(base, 'small'),
                                  np.random.RandomState(0).randint(0, 256, (8, 1, 8, 8)).astype(np.uint8))
    missing_pkl = os.path.join(base, 'gone', 'network-snapshot-000003.pkl')
    odd_name = os.path.join(base, 'gone', 'weights.pkl')
    cases = {
        'missing dataset': (['--data', os.path.join(base, 'nope')], ['nope', 'no such dataset directory']),
        'no tfrecords': (['--data', empty], [empty, 'tfrecords']),
        'missing resume file': (['--data', data_dir, '--resume', missing_pkl], [missing_pkl, 'no such']),
        'missing resume file without kimg': (['--data', data_dir, '--resume', odd_name], [odd_name]),
        'resume not a pickle': (['--data', data_dir, '--resume', garbage], [garbage, 'pickle']),
        'resume latest, no snapshots': (['--data', data_dir, '--resume', 'latest'], ['network-snapshot']),
        'resume latest, no results dir': (['--data', data_dir, '--resume', 'latest'], ['no such results']),
        'resume other resolution': (['--data', small, '--resume',
                                     os.path.join(first_dir, 'network-snapshot-000001.pkl')], ['resolution']),
    }
    outdirs = {case: os.path.join(base, 'out-%d' % i) for i, case in enumerate(sorted(cases))}
    outdirs['resume latest, no snapshots'] = no_snapshots
    before = {case: run_dirs(outdirs[case]) for case in cases}

    def invoke(case):
        args, _ = cases[case]
        return train(*(args + ['--outdir', outdirs[case], '--total-kimg', 1] + TINY_ARGS))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(sorted(cases), pool.map(invoke, sorted(cases))))
    return {case: (results[case], outdirs[case], before[case], cases[case][1]) for case in cases}


@pytest.mark.parametrize('case', ['missing dataset', 'no tfrecords', 'missing resume file',
                                  'missing resume file without kimg', 'resume not a pickle',
                                  'resume latest, no snapshots', 'resume latest, no results dir',
                                  'resume other resolution'])
def test_bad_input_fails_cleanly_without_a_run_directory(bad_runs, case):
    result, outdir, before, fragments = bad_runs[case]
    assert_clean_failure(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert run_dirs(outdir) == before, 'a run directory was left behind by a failed start'
