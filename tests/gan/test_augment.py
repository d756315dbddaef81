"""Tests for nodules/gan/augment.py: each augmentation against NumPy, exact identity, ranges, gradients, the ADA p rule, seeding,
and the orientation statistics of the leak check.

The references are written from the documented behaviour with NumPy's own operations (np.flip, np.rot90,
np.pad(mode='reflect')) or plain per-pixel loops; nodules/gan/augment.py only builds the graphs under test.
"""
import math
import os

import numpy as np
import pytest

from conftest import run_script
from nodules.util.tfcompat import tf
from nodules.gan import augment
from nodules.data import dataset
from nodules import generation
from nodules.gan import tfutil

ALL_ON = {name: True for name in augment.AUGMENTATIONS}
RESOLUTIONS = (4, 8, 16, 32, 64)


def only(*names):
    """Keyword switches enabling exactly `names`."""
    return {name: name in names for name in augment.AUGMENTATIONS}


def random_images(count, size, seed=0, channels=1):
    return np.random.RandomState(seed).uniform(-1.0, 1.0, (count, size, size, channels)).astype(np.float32)


def run_apply(session, pipe, images, params):
    """pipe.apply on NumPy images and parameters fed through placeholders (nothing constant-folded)."""
    images_in = tf.placeholder(tf.float32, [None] + list(images.shape[1:]))
    params_in = tf.placeholder(tf.float32, [None, len(augment.PARAMETERS)])
    out = pipe.apply(images_in, params_in)
    session.run(tf.global_variables_initializer())
    return session.run(out, {images_in: images, params_in: params})


def mirror(i, n):
    """Whole-sample mirror of any integer index into 0..n-1 (... 2 1 | 0 1 ... n-1 | n-2 ...)."""
    period = 2 * (n - 1)
    i = i % period
    return period - i if i >= n else i


def np_bilinear(image, angle_degrees, zoom):
    """[H, W, C] image rotated counter-clockwise (as displayed) about its centre and zoomed, one pixel at a time."""
    height, width, _ = image.shape
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    out = np.zeros(image.shape, np.float64)
    for y in range(height):
        for x in range(width):
            dx, dy = x - cx, y - cy
            sx, sy = (cos * dx - sin * dy) / zoom + cx, (sin * dx + cos * dy) / zoom + cy
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            fx, fy = sx - x0, sy - y0
            value = lambda yy, xx: image[mirror(yy, height), mirror(xx, width)].astype(np.float64)
            out[y, x] = ((value(y0, x0) * (1 - fx) + value(y0, x0 + 1) * fx) * (1 - fy)
                         + (value(y0 + 1, x0) * (1 - fx) + value(y0 + 1, x0 + 1) * fx) * fy)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Shapes, identity, configuration


@pytest.mark.parametrize('policy', ['diffaugment', 'ada'])
def test_shapes_and_dtype_at_every_resolution(tf_session, policy):
    pipe = augment.AugmentPipe(policy, initial_p=1.0, **(ALL_ON if policy == 'ada' else {}))
    outputs = {}
    for size in RESOLUTIONS:
        images = tf.constant(random_images(5, size, seed=size))
        outputs[size] = pipe.apply(images, pipe.draw(5, size))
    tf_session.run(tf.global_variables_initializer())
    for size, value in tf_session.run(outputs).items():
        assert value.shape == (5, size, size, 1) and value.dtype == np.float32
        assert np.all(np.isfinite(value))


def test_ada_at_p0_is_bit_exact_identity(tf_session):
    pipe = augment.AugmentPipe('ada', initial_p=0.0, **ALL_ON)
    images = {size: random_images(6, size, seed=size) for size in RESOLUTIONS}
    outputs = {size: pipe(tf.constant(x)) for size, x in images.items()}
    tf_session.run(tf.global_variables_initializer())
    for size, value in tf_session.run(outputs).items():
        assert np.array_equal(value, images[size]), size


def test_identity_parameters_are_bit_exact_for_every_augmentation(tf_session):
    """Even with every augmentation built into the graph (bilinear path included)."""
    images = random_images(4, 16, channels=3)
    pipe = augment.AugmentPipe('ada', **ALL_ON)
    assert np.array_equal(run_apply(tf_session, pipe, images, augment.pack(4)), images)


def test_policy_none_adds_nothing(tf_session):
    pipe = augment.AugmentPipe('none')
    images = tf.constant(random_images(2, 8))
    assert pipe.apply(images, pipe.draw(2, 8)) is images
    assert pipe.enabled == ()


def test_policies_and_switches():
    assert augment.AugmentPipe('diffaugment').enabled == ('translate', 'brightness', 'contrast', 'cutout')
    assert 'cutout' not in augment.AugmentPipe('ada').enabled
    assert augment.AugmentPipe('ada', **augment.switches(enable=['cutout'], disable=['xflip', 'rotate'])).enabled \
        == ('yflip', 'rotate90', 'translate', 'scale', 'brightness', 'contrast', 'cutout')
    with pytest.raises(ValueError, match='unknown augmentation zoom'):
        augment.switches(disable=['zoom'])
    with pytest.raises(ValueError, match='both enabled and disabled'):
        augment.switches(enable=['xflip'], disable=['xflip'])
    with pytest.raises(ValueError, match='unknown augmentation policy'):
        augment.AugmentPipe('bgc')
    with pytest.raises(ValueError, match='applies no augmentation'):
        augment.AugmentPipe('none', xflip=True)


# ----------------------------------------------------------------------------------------------------------------
# Each augmentation does what it says


def test_flips_equal_np_flip(tf_session):
    images = random_images(4, 8, channels=2)
    params = augment.pack(4, xflip=[0, 1, 0, 1], yflip=[0, 0, 1, 1])
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('xflip', 'yflip')), images, params)
    expected = [images[0], np.flip(images[1], 1), np.flip(images[2], 0), np.flip(np.flip(images[3], 0), 1)]
    assert np.array_equal(out, np.stack(expected))


def test_rotate90_equals_np_rot90(tf_session):
    images = random_images(4, 8)
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('rotate90')), images,
                    augment.pack(4, rotate90=[0, 1, 2, 3]))
    assert np.array_equal(out, np.stack([np.rot90(images[k], k, axes=(0, 1)) for k in range(4)]))


@pytest.mark.parametrize('size', [4, 16])
def test_translation_pads_by_reflection(tf_session, size):
    shifts = [(0, 0), (1, 0), (-2, 1), (3, -3)]
    images = random_images(len(shifts), size)
    params = augment.pack(len(shifts), translate_x=[s[0] for s in shifts], translate_y=[s[1] for s in shifts])
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('translate')), images, params)
    margin = 3
    for n, (tx, ty) in enumerate(shifts):
        padded = np.pad(images[n], ((margin, margin), (margin, margin), (0, 0)), mode='reflect')
        expected = padded[margin - ty:margin - ty + size, margin - tx:margin - tx + size]
        assert np.array_equal(out[n], expected), (tx, ty)


def test_whole_pixel_steps_compose_in_the_documented_order(tf_session):
    """xflip, then rotate90, then translate, each as NumPy does it."""
    images = random_images(1, 8)
    params = augment.pack(1, xflip=1, rotate90=1, translate_x=2, translate_y=-1)
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('xflip', 'rotate90', 'translate')), images, params)
    step = np.rot90(np.flip(images[0], 1), 1, axes=(0, 1))
    expected = np.pad(step, ((2, 2), (2, 2), (0, 0)), mode='reflect')[2 + 1:2 + 1 + 8, 2 - 2:2 - 2 + 8]
    assert np.array_equal(out[0], expected)


def test_rotation_and_scale_match_a_bilinear_reference(tf_session):
    images = random_images(4, 16, seed=3)
    angles, zooms = [7.0, -10.0, 0.0, 33.0], [1.0, 1.1, 1 / 1.1, 0.95]
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('scale', 'rotate')), images,
                    augment.pack(4, rotate=angles, scale=zooms))
    for n in range(4):
        np.testing.assert_allclose(out[n], np_bilinear(images[n], angles[n], zooms[n]), atol=2e-5)


def test_rotation_by_90_degrees_agrees_with_rotate90(tf_session):
    """Pins the direction of the small rotations to np.rot90's, independently of the bilinear reference."""
    images = random_images(1, 16, seed=4)
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('rotate')), images, augment.pack(1, rotate=90.0))
    np.testing.assert_allclose(out[0], np.rot90(images[0], 1, axes=(0, 1)), atol=1e-5)


def test_brightness_and_contrast(tf_session):
    images = random_images(3, 8)
    params = augment.pack(3, brightness=[0.05, -0.02, 0.0], contrast=[1.0, 1.0, 1.1])
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('brightness', 'contrast')), images, params)
    np.testing.assert_allclose(out[0], images[0] + 0.05, atol=1e-6)
    np.testing.assert_allclose(out[1], images[1] - 0.02, atol=1e-6)
    mean = images[2].mean()
    np.testing.assert_allclose(out[2], mean + (images[2] - mean) * 1.1, atol=1e-5)


def test_cutout_fills_the_documented_square(tf_session):
    images = random_images(2, 8)
    params = augment.pack(2, cutout=[1, 1], cutout_x=[0.5, 0.0], cutout_y=[0.5, 0.75])
    out = run_apply(tf_session, augment.AugmentPipe('ada', **only('cutout'), cutout_value=0.25), images, params)
    centres = (np.arange(8) + 0.5) / 8
    for n, (cx, cy) in enumerate([(0.5, 0.5), (0.0, 0.75)]):
        hole = (np.abs(centres[:, None] - cy) < 0.25) & (np.abs(centres[None, :] - cx) < 0.25)
        assert hole.sum() == (16 if n == 0 else 8)  # a 4x4 square, half of it off the left edge for the second
        np.testing.assert_array_equal(out[n][hole], 0.25)
        np.testing.assert_array_equal(out[n][~hole], images[n][~hole])


def test_drawn_parameters_stay_within_the_documented_ranges(tf_session):
    count, size = 4096, 64
    pipe = augment.AugmentPipe('ada', initial_p=1.0, **ALL_ON)
    tf_session.run(tf.global_variables_initializer())
    params = tf_session.run(pipe.draw(count, size))
    column = lambda name: params[:, augment.COLUMN[name]]
    assert set(column('xflip')) == {0.0, 1.0} and set(column('yflip')) == {0.0, 1.0}
    assert set(column('rotate90')) == {0.0, 1.0, 2.0, 3.0}
    assert set(column('translate_x')) == set(column('translate_y')) == set(range(-8, 9))  # 1/8 of 64 px
    for name, low, high in [('scale', 1 / 1.1, 1.1), ('rotate', -10.0, 10.0), ('brightness', -0.05, 0.05),
                            ('contrast', 1 / 1.1, 1.1), ('cutout_x', 0.0, 1.0), ('cutout_y', 0.0, 1.0)]:
        values = column(name)
        assert low - 1e-6 <= values.min() and values.max() <= high + 1e-6, name
        assert values.min() < low + 0.02 * (high - low) and values.max() > high - 0.02 * (high - low), name
    assert np.all(column('cutout') == 1.0)


def test_translation_range_at_4x4_is_one_pixel(tf_session):
    pipe = augment.AugmentPipe('diffaugment')
    tf_session.run(tf.global_variables_initializer())
    params = tf_session.run(pipe.draw(512, 4))
    assert set(params[:, augment.COLUMN['translate_x']]) == {-1.0, 0.0, 1.0}


def test_each_augmentation_is_applied_with_probability_p(tf_session):
    count, p = 8192, 0.3
    pipe = augment.AugmentPipe('ada', initial_p=p, **ALL_ON)
    tf_session.run(tf.global_variables_initializer())
    params = tf_session.run(pipe.draw(count, 64))
    identity = augment.IDENTITY
    for name in ('scale', 'rotate', 'brightness', 'contrast', 'cutout'):
        applied = np.mean(params[:, augment.COLUMN[name]] != identity[augment.COLUMN[name]])
        assert abs(applied - p) < 0.03, (name, applied)  # 5 standard deviations
    # A flip is "applied" as a random choice of flip or not: flipped with probability p / 2.
    assert abs(np.mean(params[:, augment.COLUMN['xflip']]) - p / 2) < 0.03


# ----------------------------------------------------------------------------------------------------------------
# Gradients, devices, seeds


@pytest.mark.parametrize('policy', ['diffaugment', 'ada'])
def test_gradients_with_respect_to_the_images_are_finite(tf_session, policy):
    images = tf.constant(random_images(8, 16))
    pipe = augment.AugmentPipe(policy, initial_p=1.0, **(dict(ALL_ON) if policy == 'ada' else {}))
    weights = tf.constant(np.random.RandomState(1).randn(8, 16, 16, 1).astype(np.float32))
    grads = tf.gradients(tf.reduce_sum(pipe(images) * weights), [images])[0]
    tf_session.run(tf.global_variables_initializer())
    value = tf_session.run(grads)
    assert np.all(np.isfinite(value)) and np.any(value != 0)


def test_gradient_of_a_flip_is_the_flipped_upstream_gradient(tf_session):
    images = tf.placeholder(tf.float32, [2, 8, 8, 1])
    pipe = augment.AugmentPipe('ada', **only('xflip'))
    weights = random_images(2, 8, seed=5)
    out = pipe.apply(images, tf.constant(augment.pack(2, xflip=[1, 0])))
    grads = tf_session.run(tf.gradients(tf.reduce_sum(out * weights), [images])[0], {images: random_images(2, 8)})
    assert np.array_equal(grads, np.stack([np.flip(weights[0], 1), weights[1]]))


@pytest.mark.parametrize('policy', ['diffaugment', 'ada'])
def test_gradient_penalty_differentiates_through_the_augmentation(tf_session, policy):
    """The WGAN-GP term needs second derivatives: d/dweights of ||d D(aug(x)) / dx||.  The augmentation must
    reach every weight the penalty reaches without it, with finite values."""
    D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=16, fmap_base=64, fmap_max=16)
    pipe = augment.AugmentPipe(policy, initial_p=1.0, **(dict(ALL_ON) if policy == 'ada' else {}))
    mixed = tf.constant(random_images(4, 16))

    def penalty_gradients(augment_images):
        scores, _ = D.get_output_for(augment_images(mixed))
        grads = tf.gradients(tf.reduce_sum(scores), [mixed])[0]
        penalty = tf.reduce_mean(tf.square(tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3])) - 1.0))
        return tf.gradients(penalty, list(D.trainables.values()))

    augmented, plain = penalty_gradients(pipe), penalty_gradients(lambda images: images)
    assert [g is None for g in augmented] == [g is None for g in plain]
    tf_session.run(tf.global_variables_initializer())
    values = tf_session.run([g for g in augmented if g is not None])
    assert all(np.all(np.isfinite(v)) for v in values) and np.any(values[0] != 0)


def test_a_minibatch_split_over_devices_computes_what_one_device_does(tf_session):
    """Parameters drawn for the whole minibatch and sliced like the images (sample t, t+T, ...) per device."""
    pipe = augment.AugmentPipe('ada', initial_p=1.0, **ALL_ON)
    images = tf.constant(random_images(8, 16))
    params = pipe.draw(8, 16)
    whole = pipe.apply(images, params)
    parts = [pipe.apply(images[t::2], params[t::2]) for t in range(2)]
    tf_session.run(tf.global_variables_initializer())
    whole, parts = tf_session.run([whole, parts])
    # Same augmentation per sample; only float rounding of batched kernels may differ.
    np.testing.assert_allclose(whole[0::2], parts[0], atol=1e-5)
    np.testing.assert_allclose(whole[1::2], parts[1], atol=1e-5)


def augmented_with_graph_seed(seed):
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as session:
        tf.set_random_seed(seed)
        pipe = augment.AugmentPipe('ada', initial_p=0.5, **ALL_ON)
        out = pipe(tf.constant(random_images(8, 16)))
        session.run(tf.global_variables_initializer())
        return session.run(out)


def test_a_graph_seed_makes_the_draws_repeatable():
    first, again, other = augmented_with_graph_seed(7), augmented_with_graph_seed(7), augmented_with_graph_seed(8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


# ----------------------------------------------------------------------------------------------------------------
# ADA: r_t and p


def np_ada(p, interval_scores, target, ada_kimg):
    """NumPy reference: after each interval, r_t = mean sign of the real scores it saw and
    p <- clip(p + sign(r_t - target) * (images in the interval) / (ada_kimg * 1000), 0, 1)."""
    history = []
    for scores in interval_scores:
        rt = np.mean(np.sign(scores))
        p = min(max(p + np.sign(rt - target) * scores.size / (ada_kimg * 1000.0), 0.0), 1.0)
        history.append((p, rt))
    return history


def test_ada_p_follows_the_reference_rule_with_two_devices(tf_session):
    """Two devices of 4 samples each, 4 minibatches per update; p rises, clips at 1, falls and clips at 0."""
    rng = np.random.RandomState(2)
    biases = [2.0] * 9 + [-1.0] * 12 + [0.3] * 3
    minibatches = [[rng.randn(4, 1) + bias for _ in range(2)] for bias in biases for _ in range(4)]
    pipe = augment.AugmentPipe('ada', initial_p=0.1, ada_target=0.6, ada_kimg=0.2)  # 32 images move p by 0.16
    device_scores = [tf.placeholder(tf.float32, [4, 1]) for _ in range(2)]
    accumulate = pipe.accumulate(device_scores)
    tf_session.run(tf.global_variables_initializer())
    history = []
    for step, scores in enumerate(minibatches):
        tf_session.run(accumulate, dict(zip(device_scores, scores)))
        if step % 4 == 3:
            tf_session.run(pipe.update_op)
            history.append(tf_session.run([pipe.p, pipe.rt]))
    expected = np_ada(0.1, [np.concatenate(sum(minibatches[i:i + 4], [])) for i in range(0, len(minibatches), 4)],
                      0.6, 0.2)
    np.testing.assert_allclose(history, expected, rtol=1e-5, atol=1e-6)
    ps = [p for p, _ in history]
    assert max(ps) == 1.0 and min(ps) == 0.0  # both clips were exercised


def test_fixed_policies_record_rt_but_keep_p(tf_session):
    pipe = augment.AugmentPipe('diffaugment')
    fixed = augment.AugmentPipe('ada', initial_p=0.25, ada_target=None, name='FixedP')
    scores = tf.constant([[1.0], [2.0], [-1.0], [3.0]])
    tf_session.run(tf.global_variables_initializer())
    tf_session.run([pipe.accumulate(scores), fixed.accumulate(scores)])
    tf_session.run([pipe.update_op, fixed.update_op])
    assert tf_session.run([pipe.p, pipe.rt, fixed.p, fixed.rt]) == [1.0, 0.5, 0.25, 0.5]


def test_an_update_without_scores_changes_nothing(tf_session):
    pipe = augment.AugmentPipe('ada', initial_p=0.5, ada_kimg=0.001)
    tf_session.run(tf.global_variables_initializer())
    tf_session.run(pipe.update_op)
    assert tf_session.run([pipe.p, pipe.rt]) == [0.5, 0.0]


def test_p_is_restored_with_set_p(tf_session):
    with tf_session.as_default():
        pipe = augment.AugmentPipe('ada')
        tf_session.run(tf.global_variables_initializer())
        pipe.set_p(0.375)
        assert pipe.get_p() == 0.375
        assert [v.name for v in tf.global_variables() if v.name.startswith('Augment/')] == [
            'Augment/p:0', 'Augment/real_sign_sum:0', 'Augment/real_sign_count:0', 'Augment/rt:0']
        assert not tf.trainable_variables()
        with pytest.raises(ValueError, match='fixed probability'):
            augment.AugmentPipe('diffaugment', name='Fixed').set_p(0.5)


# ----------------------------------------------------------------------------------------------------------------
# Leak check


def oriented_images(count, seed):
    """Stripes at about 30 degrees on a left-to-right brightness ramp: a set with a clear orientation."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    images = []
    for _ in range(count):
        angle = np.radians(30.0 + rng.randn() * 5.0)
        stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * rng.uniform(0.4, 0.8) + rng.uniform(0, 6.3))
        images.append(stripes + x / 16.0 + rng.randn(32, 32) * 0.1)
    return np.stack(images)[:, None] * 40.0 + 128.0  # [N, 1, H, W] on the 0..255 scale


def test_orientation_statistics_see_flips_and_rotations():
    images, others = oriented_images(200, seed=0), oriented_images(200, seed=1)
    reference = augment.orientation_statistics(images)
    assert reference['left_right'] < -0.5 and abs(reference['top_bottom']) < 0.1
    assert abs(sum(reference['gradient_histogram']) - 1) < 1e-9
    same = augment.orientation_difference(reference, augment.orientation_statistics(others))
    for name, transformed in [('xflip', np.flip(images, 3)), ('yflip', np.flip(images, 2)),
                              ('rotate90', np.rot90(images, 1, axes=(2, 3)))]:
        moved = augment.orientation_difference(reference, augment.orientation_statistics(transformed))
        assert moved['principal_histogram'] > 0.8 > 0.2 > same['principal_histogram'], name
        assert moved['gradient_histogram'] > 3 * same['gradient_histogram'], name
    assert augment.orientation_difference(reference, augment.orientation_statistics(np.flip(images, 3)))[
        'left_right'] > 10 * same['left_right']


def test_orientation_statistics_refuse_a_wrong_shape():
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        augment.orientation_statistics(np.zeros((4, 8, 8)))


def test_critic_scores_are_signed_from_the_midpoint_of_real_and_fake_means(tf_session):
    """For a WGAN critic (fake scores given) r_t is the mean sign of real - (mean real + mean fake) / 2 over the
    whole step, all devices together: the same for any shift of the scores, which a critic is free to make."""
    rng = np.random.RandomState(5)
    reals = [rng.randn(4, 1).astype(np.float32) + 2.5 for _ in range(2)]
    fakes = [rng.randn(4, 1).astype(np.float32) + 1.5 for _ in range(2)]
    all_reals, all_fakes = np.concatenate(reals), np.concatenate(fakes)
    expected = np.mean(np.sign(all_reals - (all_reals.mean() + all_fakes.mean()) / 2))
    assert expected != np.mean(np.sign(all_reals))  # the threshold matters for these scores
    real_in = [tf.placeholder(tf.float32, [4, 1]) for _ in range(2)]
    fake_in = [tf.placeholder(tf.float32, [4, 1]) for _ in range(2)]
    pipe = augment.AugmentPipe('none')
    accumulate = pipe.accumulate(real_in, fake_in)
    tf_session.run(tf.global_variables_initializer())
    measured = []
    for shift in (0.0, 100.0, -3.5):
        feed = dict(zip(real_in + fake_in, [x + np.float32(shift) for x in reals + fakes]))
        tf_session.run(accumulate, feed)
        tf_session.run(pipe.update_op)
        measured.append(tf_session.run(pipe.rt))
    np.testing.assert_allclose(measured, [expected] * 3, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# No leak on a real training run: x-flips of everything D sees leave the generated images the reals' way round

# x-flips of reals and fakes alike, each image flipped with probability p / 2 = 0.25, nothing else.
ONLY_XFLIPS = ['--augment', 'ada', '--augment-p', '0.5',
               '--augment-disable', 'yflip,rotate90,translate,scale,rotate,brightness,contrast']
LEAK_TRAINING = ['--fmap-base', '64', '--fmap-max', '16', '--latent-size', '16', '--total-kimg', '6',
                 '--lod-training-kimg', '0.5', '--lod-transition-kimg', '0.5', '--g-smoothing', '0.9',
                 '--tick-kimg', '1', '--snapshot-ticks', '100', '--seed', '2']


def left_bright_images(count, size=16, seed=0):
    """uint8 [count, 1, size, size]: a left-to-right darkening ramp of random steepness under each image's own
    smoothed random texture, so every image is brighter on the left and no two are alike."""
    rng = np.random.RandomState(seed)
    ramp = np.linspace(1.0, -1.0, size)[None, None, :] * rng.uniform(0.3, 0.6, (count, 1, 1))
    noise = rng.uniform(-1.0, 1.0, (count, size + 1, size + 1))
    texture = (noise[:, :-1, :-1] + noise[:, 1:, :-1] + noise[:, :-1, 1:] + noise[:, 1:, 1:]) / 8.0
    return np.clip((ramp + texture + 1.0) * 127.5, 0, 255).astype(np.uint8)[:, None]


def share_left_bright(images):
    """Fraction of images [N, 1, H, W] whose own left half is brighter than their right half."""
    return float(np.mean([augment.orientation_statistics(image[None])['left_right'] > 0 for image in images]))


@pytest.mark.slow
def test_augmenting_everything_d_sees_keeps_the_reals_orientation(tmp_path):
    """A dataset whose every image is brighter on the left, trained with x-flips of reals and fakes (a quarter of
    each flipped).  D sees 25% right-bright reals, but also a quarter of every fake flipped, so the only way for G
    to match is to make every image left-bright: the flips must not leak.  Were the fakes not flipped (the flips
    applied to the reals only, as --mirror does), G would be pushed to make a quarter of its images right-bright.
    Measured at 6 kimg: generated left_right 1.10-1.50 against the reals' 1.52, every image left-bright, with
    seeds 2 and 3 on both stacks."""
    reals = left_bright_images(200)
    data_dir = dataset.write_dataset(str(tmp_path / 'left-bright'), reals)
    outdir = str(tmp_path / 'run')
    result = run_script('3-train.py', '--data', data_dir, '--outdir', outdir, *(LEAK_TRAINING + ONLY_XFLIPS))
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = os.listdir(outdir)
    generated = generation.images_from_pickle(os.path.join(outdir, run_dir, 'network-final.pkl'), 200,
                                              seed=0)[:, None]
    real_left_right = augment.orientation_statistics(reals)['left_right']
    generated_left_right = augment.orientation_statistics(generated)['left_right']
    summary = 'reals %.3f, generated %.3f, %.2f of them left-bright' % (
        real_left_right, generated_left_right, share_left_bright(generated))
    assert share_left_bright(reals) == 1.0 and real_left_right > 1.0, summary
    assert share_left_bright(generated) >= 0.95, summary
    assert generated_left_right >= 0.5 * real_left_right, summary
