"""Tests for nodules/pix2pix/training.py: the pairs it accepts, an epoch's minibatches and flips, and small runs."""
import collections
import math

import numpy as np
import pytest

from nodules.pix2pix import losses, training
from nodules.util.errors import UserError

SMALL = {'ngf': 4, 'ndf': 4, 'minibatch': 4, 'epochs': 2, 'seed': 11}


def disc_pairs(count, seed=0, size=64):
    """uint8 patches (a bright disc on noise) and their masks (the disc, 0/255)."""
    rs = np.random.RandomState(seed)
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((count, size, size), np.uint8)
    for n in range(count):
        cy, cx, radius = rs.uniform(24, 40), rs.uniform(24, 40), rs.uniform(3, 10)
        masks[n][(rows - cy) ** 2 + (cols - cx) ** 2 < radius ** 2] = 255
    patches = np.clip(rs.normal(60, 15, masks.shape) + 0.6 * masks, 0, 255).astype(np.uint8)
    return patches, masks


# ----------------------------------------------------------------------------------------------------------------
# Pairs


def test_good_pairs_pass():
    training.check_pairs(*disc_pairs(3))


@pytest.mark.parametrize('change, message', [
    (lambda p, m: (p.astype(np.float32), m), 'patches must be uint8 [N, H, W] square images, got float32'),
    (lambda p, m: (p, m[:, :, :32]), 'training pairs: masks are 32x64; masks are square'),
    (lambda p, m: (p, m.astype(np.float32)), 'training pairs: masks must be a uint8 array [N, H, W] holding 0 and '
                                              '255, got float32 [3, 64, 64]'),
    (lambda p, m: (p, m[:2]), '3 patches of 64x64 but 2 masks of 64x64'),
    (lambda p, m: (p[:0], m[:0]), 'no pairs'),
    (lambda p, m: (p, m // 255), 'training pairs: mask 0 is not binary: it holds 1 at row'),
    (lambda p, m: (p, np.where(np.arange(3)[:, None, None] == 1, 0, m).astype(np.uint8)),
     'training pairs: mask 1 is empty (no pixel is 255); every mask needs a nodule'),
])
def test_bad_pairs_get_one_line(change, message):
    with pytest.raises(UserError) as error:
        training.check_pairs(*change(*disc_pairs(3)))
    assert message in str(error.value) and '\n' not in str(error.value)


def test_scaling_is_the_originals():
    scaled = training.to_network_range(np.array([[[0, 255], [51, 128]]], np.uint8))
    np.testing.assert_allclose(scaled[..., 0], [[[-1.0, 1.0], [51 / 255.0 * 2 - 1, 128 / 255.0 * 2 - 1]]], atol=1e-6)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32


def test_flips_take_mask_and_patch_together():
    masks = np.arange(400 * 2 * 3, dtype=np.float32).reshape(400, 2, 3)
    patches = -masks
    flipped_masks, flipped_patches = training.flip_pairs(masks, patches, np.random.RandomState(0))
    flipped = np.all(flipped_masks == masks[:, :, ::-1], axis=(1, 2))
    kept = np.all(flipped_masks == masks, axis=(1, 2))
    assert np.all(flipped ^ kept) and 150 < np.count_nonzero(flipped) < 250
    np.testing.assert_array_equal(flipped_patches, -flipped_masks)
    assert masks[0, 0, 0] == 0.0  # the inputs are left alone


def test_an_epoch_is_full_minibatches_of_a_fresh_shuffle():
    rs = np.random.RandomState(1)
    first, second = training.epoch_minibatches(10, 4, rs), training.epoch_minibatches(10, 4, rs)
    for batches in (first, second):
        assert [len(b) for b in batches] == [4, 4]
        assert len(set(np.concatenate(batches))) == 8
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))


# ----------------------------------------------------------------------------------------------------------------
# Small runs


class Progress(object):
    def __init__(self):
        self.total, self.done = None, 0

    def __call__(self, total, desc, unit=None):
        self.total = total
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n=1):
        self.done += n


def train_small(settings=None, pairs=10):
    """A trained small model, the losses of its epochs and the progress it reported."""
    trainer = training.Trainer(dict(SMALL, **(settings or {})))
    patches, masks = disc_pairs(pairs)
    epochs, progress = [], Progress()
    trainer.train(patches, masks, on_epoch=lambda epoch, mean_losses: epochs.append((epoch, mean_losses)),
                  progress=progress)
    return trainer, epochs, progress


SmallRun = collections.namedtuple('SmallRun', 'trainer epochs progress states')


@pytest.fixture(scope='module')
def small_run():
    """One small model trained for two epochs (building and running a model takes seconds: the tests share it).
    `epochs`, `progress` and `states` are as the run left them; tests may train the model further."""
    trainer, epochs, progress = train_small()
    yield SmallRun(trainer, epochs, progress, trainer.network_states())
    trainer.close()


def test_a_small_run_reports_every_epoch_and_records_its_label(small_run):
    epochs, config = small_run.epochs, small_run.trainer.config
    assert [epoch for epoch, _ in epochs] == [1, 2]
    assert (small_run.progress.total, small_run.progress.done) == (4, 4)  # 2 epochs of 10 // 4 minibatches
    names = {'G', 'G_adversarial', 'G_reconstruction', 'D', 'D_real', 'D_fake', 'real_label'}
    for _, mean_losses in epochs:
        assert set(mean_losses) == names and all(math.isfinite(v) for v in mean_losses.values())
        terms = mean_losses['G_adversarial'] + 1000 * mean_losses['G_reconstruction']
        assert abs(mean_losses['G'] - terms) < 1e-4 * mean_losses['G']
        assert abs(mean_losses['D'] - mean_losses['D_real'] - mean_losses['D_fake']) < 1e-4 * mean_losses['D']
    assert config['real_label'] == losses.draw_real_label(np.random.RandomState(SMALL['seed']))
    assert abs(epochs[0][1]['real_label'] - config['real_label']) < 1e-6  # the same constant every step
    assert (config['G_params'], config['D_params']) == tuple(
        sum(np.size(v) for _, v in state['variables']) for state in small_run.states)


def test_each_step_is_adam_with_keras_defaults_on_its_own_network(small_run):
    nets = small_run.trainer.nets
    for optimizer, variables in (('G_adam/', nets.G_vars), ('D_adam/', nets.D_vars)):
        applies = [op for op in nets.graph.get_operations()
                   if op.name.startswith(optimizer) and op.type in ('ApplyAdam', 'ResourceApplyAdam')]
        assert sorted(op.inputs[0].op.name for op in applies) == sorted(v.op.name for v in variables.values())
        # ApplyAdam(var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad)
        settings = nets.session.run([list(op.inputs[5:9]) for op in applies])
        np.testing.assert_allclose(settings, [[1e-4, 0.5, 0.999, 1e-7]] * len(applies), rtol=1e-6)


def test_triplets_show_mask_real_and_generated(small_run):
    patches, masks = disc_pairs(3, seed=5)
    triplets = small_run.trainer.triplets(patches, masks)
    assert triplets.shape == (3, 64, 192) and triplets.dtype == np.uint8
    np.testing.assert_array_equal(triplets[:, :, :64], masks)
    np.testing.assert_array_equal(triplets[:, :, 64:128], patches)
    assert len(np.unique(triplets[:, :, 128:])) > 10


def test_network_states_name_their_build_function_and_load_back(small_run):
    trainer, states = small_run.trainer, small_run.trainer.network_states()
    assert [(s['name'], s['build_func_name'], s['version']) for s in states] == [
        ('G', 'pix2pix_G', 2), ('D', 'pix2pix_D', 2)]
    assert states[0]['static_kwargs'] == {'resolution': 64, 'ngf': 4, 'dropout_rate': 0.5}
    assert states[1]['static_kwargs'] == {'resolution': 64, 'ndf': 4}
    assert states[0]['variables'][0][0] == 'down1/weight' and states[1]['variables'][-1][0] == 'score/bias'
    shifted = [dict(s, variables=[(n, v + 1.0) for n, v in s['variables']]) for s in states]
    try:
        trainer.set_network_states(shifted)
        for mine, expected in zip(trainer.network_states(), shifted):
            for (name, a), (other, b) in zip(mine['variables'], expected['variables']):
                assert name == other
                np.testing.assert_array_equal(a, b)
    finally:
        trainer.set_network_states(states)


def test_network_states_of_another_shape_are_refused(small_run):
    states = small_run.trainer.network_states()
    wide = dict(states[0], variables=[(n, np.zeros((4, 4, 1, 8)) if n == 'down1/weight' else v)
                                      for n, v in states[0]['variables']])
    with pytest.raises(UserError, match=r'network G: variable down1/weight has shape \[4, 4, 1, 8\]'):
        small_run.trainer.set_network_states((wide, states[1]))
    renamed = dict(states[1], variables=[('x' + n, v) for n, v in states[1]['variables']])
    with pytest.raises(UserError, match='network D: variables xconv1/weight'):
        small_run.trainer.set_network_states((states[0], renamed))


def test_a_loss_that_stops_being_finite_ends_the_run_before_the_epoch_is_handed_on(small_run, monkeypatch):
    trainer = small_run.trainer
    monkeypatch.setattr(trainer, '_step', lambda masks, patches: {'G': float('nan'), 'D': 1.0})
    seen, epoch = [], trainer.epoch
    with pytest.raises(UserError, match='training diverged in epoch %d' % (epoch + 1)):
        trainer.train(*disc_pairs(4), epochs=epoch + 1, on_epoch=lambda *args: seen.append(args))
    assert seen == [] and trainer.epoch == epoch


def test_fewer_pairs_than_a_minibatch_train_as_one_minibatch(small_run):
    trainer, progress = small_run.trainer, Progress()
    trainer.train(*disc_pairs(3), epochs=trainer.epoch + 1, progress=progress)  # the minibatch is 4
    assert progress.done == 1


def test_runs_repeat_with_their_seed(small_run):
    trainer, epochs, _ = train_small()
    try:
        assert epochs == small_run.epochs
        for mine, theirs in zip(trainer.network_states(), small_run.states):
            for (name, a), (other, b) in zip(mine['variables'], theirs['variables']):
                assert name == other
                np.testing.assert_array_equal(a, b)
    finally:
        trainer.close()
