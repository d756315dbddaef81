"""Tests for nodules/pix2pix/networks.py and losses.py against the fact sheet of the original pix2pix script.

Expected layer shapes and parameter counts are written out here from the fact sheet (filters ngf, 2ngf, 4ngf,
8ngf, 8ngf, 8ngf down; bias or batch norm per level; [k, k, out, in] transposed kernels), and expected values come
from a NumPy reference written recursively, as the original builds its U-Net, in float64 with plain loops.  The
module under test only ever builds the graphs under test.
"""
import collections

import numpy as np
import pytest

from nodules.util.tfcompat import tf
from nodules.pix2pix import losses, networks

# ----------------------------------------------------------------------------------------------------------------
# The fact sheet, by hand


def fact_sheet_generator(ngf):
    """[(layer, output [H, W, C], kernel shape, has bias, has batch norm)] of the U-Net at 64x64, 1 channel."""
    f = [ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]  # down filters, outermost first
    return [
        ('down1', [32, 32, f[0]], [4, 4, 1, f[0]], True, False),
        ('down2', [16, 16, f[1]], [4, 4, f[0], f[1]], False, True),
        ('down3', [8, 8, f[2]], [4, 4, f[1], f[2]], False, True),
        ('down4', [4, 4, f[3]], [4, 4, f[2], f[3]], False, True),
        ('down5', [2, 2, f[4]], [4, 4, f[3], f[4]], False, True),
        ('down6', [1, 1, f[5]], [4, 4, f[4], f[5]], True, False),
        # Transposed kernels are [k, k, out, in]; in = the down output plus the inner result (the innermost: alone).
        ('up6', [2, 2, f[4]], [4, 4, f[4], f[5]], False, True),
        ('up5', [4, 4, f[3]], [4, 4, f[3], f[4] + f[4]], False, True),
        ('up4', [8, 8, f[2]], [4, 4, f[2], f[3] + f[3]], False, True),
        ('up3', [16, 16, f[1]], [4, 4, f[1], f[2] + f[2]], False, True),
        ('up2', [32, 32, f[0]], [4, 4, f[0], f[1] + f[1]], False, True),
        ('up1', [64, 64, 1], [4, 4, 1, f[0] + f[0]], True, False),
    ]


def fact_sheet_discriminator(ndf):
    return [
        ('conv1', [32, 32, ndf], [4, 4, 2, ndf], True, False),
        ('conv2', [16, 16, 2 * ndf], [4, 4, ndf, 2 * ndf], False, True),
        ('conv3', [8, 8, 4 * ndf], [4, 4, 2 * ndf, 4 * ndf], False, True),
        ('conv4', [7, 7, 8 * ndf], [4, 4, 4 * ndf, 8 * ndf], False, True),  # pad 1, 4x4 'valid': 8 + 2 - 3
        ('score', [6, 6, 1], [4, 4, 8 * ndf, 1], True, False),
    ]


def expected_layer_variables(layer, kernel, has_bias, has_batch_norm, out_channels):
    variables = {layer + '/weight': kernel}
    if has_bias:
        variables[layer + '/bias'] = [out_channels]
    if has_batch_norm:
        variables[layer + '/gamma'] = [out_channels]
        variables[layer + '/beta'] = [out_channels]
    return variables


def build(fn, scope, *inputs, **kwargs):
    layers = collections.OrderedDict()
    with tf.variable_scope(scope):
        output = fn(*inputs, layer_outputs=layers, **kwargs)
    return output, layers


def variable_shapes(scope):
    prefix = scope + '/'
    return collections.OrderedDict((v.name[len(prefix):].split(':')[0], v.shape.as_list())
                                   for v in tf.global_variables() if v.name.startswith(prefix))


def check_against_fact_sheet(sheet, layers, shapes):
    assert list(layers) == [row[0] for row in sheet]  # every layer, in the figure's order
    expected_shapes = collections.OrderedDict()
    for layer, output, kernel, has_bias, has_batch_norm in sheet:
        assert layers[layer].shape.as_list() == [None] + output, layer
        expected_shapes.update(expected_layer_variables(layer, kernel, has_bias, has_batch_norm, output[-1]))
    assert shapes == expected_shapes  # names, shapes and creation order


def sheet_parameters(sheet):
    """Trainable parameters by hand: k*k*in*out + out (bias) + 2*out (gamma, beta)."""
    total = 0
    for _, output, kernel, has_bias, has_batch_norm in sheet:
        total += int(np.prod(kernel)) + output[-1] * (int(has_bias) + 2 * int(has_batch_norm))
    return total


# ----------------------------------------------------------------------------------------------------------------
# (a) Layer shapes and parameter counts


@pytest.mark.parametrize('width, G_params, D_params', [
    (128, 116935041, 11034241),  # the original's: "G 116.9 M, D 11.0 M"
    (16, 1829169, 175057),       # the demo's: "about 1.8 M + 0.2 M"
])
def test_layers_and_parameters_match_the_fact_sheet(tf_session, width, G_params, D_params):
    masks = tf.placeholder(tf.float32, [None, 64, 64, 1])
    fakes, G_layers = build(networks.G_unet, 'G', masks, ngf=width)
    scores, D_layers = build(networks.D_patchgan, 'D', masks, fakes, ndf=width)
    assert fakes.shape.as_list() == [None, 64, 64, 1] and scores.shape.as_list() == [None, 6, 6, 1]

    G_sheet, D_sheet = fact_sheet_generator(width), fact_sheet_discriminator(width)
    check_against_fact_sheet(G_sheet, G_layers, variable_shapes('G'))
    check_against_fact_sheet(D_sheet, D_layers, variable_shapes('D'))
    assert (sheet_parameters(G_sheet), sheet_parameters(D_sheet)) == (G_params, D_params)

    def trainable(scope):
        return sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables(scope + '/'))
    assert (trainable('G'), trainable('D')) == (G_params, D_params)
    assert tf.global_variables() == tf.trainable_variables()  # no moving averages: nothing would update them


def test_dropout_sits_at_the_up_steps_of_8x8_and_smaller(tf_session):
    networks.G_unet(tf.placeholder(tf.float32, [None, 64, 64, 1]), ngf=4)
    random_scopes = sorted(op.name.split('/')[0] for op in tf.get_default_graph().get_operations()
                           if op.type == 'RandomUniform')
    assert random_scopes == ['up4', 'up5', 'up6']  # outputs 8x8, 4x4, 2x2


def test_inputs_of_the_wrong_shape_are_named(tf_session):
    with pytest.raises(ValueError, match='masks must be'):
        networks.G_unet(tf.placeholder(tf.float32, [None, 32, 32, 1]))
    with pytest.raises(ValueError, match='patches must be'):
        networks.D_patchgan(tf.placeholder(tf.float32, [None, 64, 64, 1]),
                            tf.placeholder(tf.float32, [None, 64, 64, 2]))


# ----------------------------------------------------------------------------------------------------------------
# NumPy reference (NHWC, float64)


def np_lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def np_conv(x, w, stride, padding):
    """TensorFlow's conv2d (cross-correlation).  'SAME': output ceil(size / stride), the padding split with the
    odd pixel after; 'VALID': no padding.  w is [k, k, in, out]."""
    n, size, _, _ = x.shape
    k = w.shape[0]
    if padding == 'SAME':
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        before, after = total // 2, total - total // 2
    else:
        out = (size - k) // stride + 1
        before = after = 0
    xp = np.pad(x, [(0, 0), (before, after), (before, after), (0, 0)], mode='constant')
    result = np.zeros((n, out, out, w.shape[3]))
    for oi in range(out):
        for oj in range(out):
            window = xp[:, oi * stride:oi * stride + k, oj * stride:oj * stride + k, :]
            result[:, oi, oj, :] = np.tensordot(window, w, axes=([1, 2, 3], [0, 1, 2]))
    return result


def np_conv_transpose_cropped(x, w):
    """Stride-2 'valid' transposed convolution: every input pixel (i, j) adds x[i, j] . w[a, b] at output pixel
    (2i + a, 2j + b); then one pixel cropped off every side.  w is [k, k, out, in]."""
    n, size, _, _ = x.shape
    k = w.shape[0]
    result = np.zeros((n, 2 * size + k - 2, 2 * size + k - 2, w.shape[2]))
    for i in range(size):
        for j in range(size):
            for a in range(k):
                for b in range(k):
                    result[:, 2 * i + a, 2 * j + b, :] += x[:, i, j, :].dot(w[a, b].T)
    return result[:, 1:-1, 1:-1, :]


def np_batch_norm(x, gamma, beta, epsilon=1.01e-5):
    """Statistics of this minibatch: mean and biased variance per channel over N, H, W."""
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(axis=0)
    variance = ((flat - mean) ** 2).mean(axis=0)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def np_unet(masks, v, level=1, levels=6):
    """The U-Net as the fact sheet builds it, recursively: the result of `level` for its input `masks`."""
    down = np_conv(masks, v['down%d/weight' % level], 2, 'SAME')
    if level in (1, levels):
        down = down + v['down%d/bias' % level]
    else:
        down = np_batch_norm(down, v['down%d/gamma' % level], v['down%d/beta' % level])
    if level < levels:
        inner = np_unet(np_lrelu(down), v, level + 1, levels)
        down = np.concatenate([down, inner], axis=-1)  # the skip: pre-activation down output first
    up = np_conv_transpose_cropped(np.maximum(down, 0.0), v['up%d/weight' % level])
    if level == 1:
        return np.tanh(up + v['up1/bias'])
    return np_batch_norm(up, v['up%d/gamma' % level], v['up%d/beta' % level])


def np_patchgan(masks, patches, v):
    x = np.concatenate([masks, patches], axis=-1)
    x = np_lrelu(np_conv(x, v['conv1/weight'], 2, 'SAME') + v['conv1/bias'])
    for layer in (2, 3):
        x = np_lrelu(np_batch_norm(np_conv(x, v['conv%d/weight' % layer], 2, 'SAME'),
                                   v['conv%d/gamma' % layer], v['conv%d/beta' % layer]))
    pad = [(0, 0), (1, 1), (1, 1), (0, 0)]
    x = np_lrelu(np_batch_norm(np_conv(np.pad(x, pad, mode='constant'), v['conv4/weight'], 1, 'VALID'),
                               v['conv4/gamma'], v['conv4/beta']))
    x = np_conv(np.pad(x, pad, mode='constant'), v['score/weight'], 1, 'VALID') + v['score/bias']
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------------------------------------------
# (b) Outputs of a small network against the reference


def random_masks(rs, count, size=64):
    """Binary discs of random centre and radius, scaled to [-1, 1] as the networks see masks."""
    rows, cols = np.mgrid[:size, :size]
    masks = np.empty((count, size, size, 1), np.float32)
    for n in range(count):
        cy, cx, radius = rs.uniform(20, 44), rs.uniform(20, 44), rs.uniform(3, 12)
        masks[n, :, :, 0] = np.where((rows - cy) ** 2 + (cols - cx) ** 2 < radius ** 2, 1.0, -1.0)
    return masks


def randomize_variables(session, scope, rs):
    """Give every variable a value that exercises it (non-zero biases and betas, gammas away from 1)."""
    values = {}
    for var in tf.global_variables(scope + '/'):
        name = var.name[len(scope) + 1:].split(':')[0]
        shape = var.shape.as_list()
        if name.endswith('gamma'):
            value = rs.uniform(0.5, 1.5, shape)
        elif name.endswith('weight'):
            value = rs.normal(0.0, 0.3, shape)
        else:
            value = rs.normal(0.0, 0.2, shape)
        var.load(value.astype(np.float32), session)
        values[name] = value.astype(np.float32).astype(np.float64)
    return values


def test_small_generator_and_discriminator_match_the_numpy_reference(tf_session):
    rs = np.random.RandomState(18)
    masks = tf.placeholder(tf.float32, [None, 64, 64, 1])
    patches = tf.placeholder(tf.float32, [None, 64, 64, 1])
    fakes = build(networks.G_unet, 'G', masks, ngf=4, dropout_rate=0)[0]
    scores = build(networks.D_patchgan, 'D', masks, patches, ndf=4)[0]
    G_values = randomize_variables(tf_session, 'G', rs)
    D_values = randomize_variables(tf_session, 'D', rs)

    mask_batch = random_masks(rs, 3)
    patch_batch = rs.uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    got_fakes, got_scores = tf_session.run([fakes, scores], {masks: mask_batch, patches: patch_batch})
    expected_fakes = np_unet(mask_batch.astype(np.float64), G_values)
    expected_scores = np_patchgan(mask_batch.astype(np.float64), patch_batch.astype(np.float64), D_values)
    assert got_fakes.shape == (3, 64, 64, 1) and got_scores.shape == (3, 6, 6, 1)
    np.testing.assert_allclose(got_fakes, expected_fakes, atol=2e-4)
    np.testing.assert_allclose(got_scores, expected_scores, atol=2e-5)


def test_batch_norm_uses_the_statistics_of_the_minibatch_it_is_given(tf_session):
    masks = tf.placeholder(tf.float32, [None, 64, 64, 1])
    fakes = networks.G_unet(masks, ngf=4, dropout_rate=0)
    tf_session.run(tf.global_variables_initializer())
    batch = random_masks(np.random.RandomState(1), 4)
    together = tf_session.run(fakes, {masks: batch})
    first_two = tf_session.run(fakes, {masks: batch[:2]})
    assert np.abs(together[:2] - first_two).max() > 1e-3  # the other masks change the statistics


# ----------------------------------------------------------------------------------------------------------------
# Dropout: the generator's noise, on at generation time


def generate_twice(seed):
    """Two evaluations of one freshly built small generator on the same masks (graph seed `seed`)."""
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as session:
        if seed is not None:
            tf.set_random_seed(seed)
        masks = tf.placeholder(tf.float32, [None, 64, 64, 1])
        fakes = networks.G_unet(masks, ngf=4)
        session.run(tf.global_variables_initializer())
        batch = random_masks(np.random.RandomState(2), 2)
        return session.run(fakes, {masks: batch}), session.run(fakes, {masks: batch})


def test_dropout_makes_every_generation_differ_unless_seeded():
    first, second = generate_twice(seed=7)
    assert np.abs(first - second).max() > 1e-3
    again_first, again_second = generate_twice(seed=7)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)


def test_dropout_zeroes_at_the_rate_and_scales_the_rest(tf_session):
    ones = tf.ones([200, 100, 10])
    dropped = tf_session.run(networks.dropout(ones, 0.5))
    assert set(np.unique(dropped)) == {0.0, 2.0}
    assert abs(np.mean(dropped == 0) - 0.5) < 0.01
    assert networks.dropout(ones, 0) is ones


# ----------------------------------------------------------------------------------------------------------------
# (c) Losses against NumPy


def np_bce(p, t):
    p = np.asarray(p, np.float64)
    return -np.mean(t * np.log(p + 1e-12) + (1 - t) * np.log(1 - p + 1e-12))


@pytest.fixture
def scores_and_images():
    rs = np.random.RandomState(3)
    return {'real_scores': rs.uniform(0.01, 0.99, (4, 6, 6, 1)).astype(np.float32),
            'fake_scores': rs.uniform(0.01, 0.99, (4, 6, 6, 1)).astype(np.float32),
            'fakes': rs.uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32),
            'reals': rs.uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32)}


@pytest.mark.parametrize('real_label', [0.93, 1.07])
def test_D_loss_with_the_runs_one_label(tf_session, scores_and_images, real_label):
    s = scores_and_images
    loss, terms = losses.D_loss(tf.constant(s['real_scores']), tf.constant(s['fake_scores']), real_label=real_label)
    got, got_terms = tf_session.run([loss, terms])
    expected_real, expected_fake = np_bce(s['real_scores'], real_label), np_bce(s['fake_scores'], 0.0)
    np.testing.assert_allclose(got, expected_real + expected_fake, rtol=1e-5)
    np.testing.assert_allclose([got_terms['D_real'], got_terms['D_fake']], [expected_real, expected_fake], rtol=1e-5)
    np.testing.assert_allclose(got_terms['real_label'], real_label, rtol=1e-6)


def test_D_loss_per_step_draws_a_new_label_for_every_minibatch(tf_session, scores_and_images):
    s = scores_and_images
    loss, terms = losses.D_loss(tf.constant(s['real_scores']), tf.constant(s['fake_scores']),
                                label_smoothing='per-step')
    labels = []
    for _ in range(20):
        got, label = tf_session.run([loss, terms['real_label']])
        np.testing.assert_allclose(got, np_bce(s['real_scores'], label) + np_bce(s['fake_scores'], 0.0), rtol=1e-5)
        labels.append(label)
    assert 0.8 <= min(labels) and max(labels) < 1.1 and len(set(labels)) == 20


def test_D_loss_without_smoothing_targets_one(tf_session, scores_and_images):
    s = scores_and_images
    loss = losses.D_loss(tf.constant(s['real_scores']), tf.constant(s['fake_scores']), label_smoothing='none')[0]
    np.testing.assert_allclose(tf_session.run(loss), np_bce(s['real_scores'], 1.0) + np_bce(s['fake_scores'], 0.0),
                               rtol=1e-5)


@pytest.mark.parametrize('reconstruction, error', [
    ('mse', lambda d: np.mean(d ** 2)),     # the original's, which its script calls L1
    ('l1', lambda d: np.mean(np.abs(d))),   # the pix2pix paper's
])
def test_G_loss(tf_session, scores_and_images, reconstruction, error):
    s = scores_and_images
    loss, terms = losses.G_loss(tf.constant(s['fake_scores']), tf.constant(s['fakes']), tf.constant(s['reals']),
                                reconstruction=reconstruction)
    got, got_terms = tf_session.run([loss, terms])
    difference = s['fakes'].astype(np.float64) - s['reals']
    np.testing.assert_allclose(got, np_bce(s['fake_scores'], 1.0) + 1000.0 * error(difference), rtol=1e-5)
    np.testing.assert_allclose(got_terms['G_reconstruction'], error(difference), rtol=1e-5)


def test_the_once_per_run_label_is_drawn_from_its_range_and_repeats_with_the_seed():
    labels = [losses.draw_real_label(np.random.RandomState(seed)) for seed in range(200)]
    assert all(isinstance(c, float) and 0.8 <= c < 1.1 for c in labels)
    assert min(labels) < 0.85 and max(labels) > 1.05
    assert losses.draw_real_label(np.random.RandomState(5)) == labels[5]


def test_loss_options_are_checked(tf_session):
    scores = tf.constant(np.full((1, 6, 6, 1), 0.5, np.float32))
    with pytest.raises(ValueError, match="needs the run's real_label"):
        losses.D_loss(scores, scores)
    with pytest.raises(ValueError, match='label_smoothing must be one of'):
        losses.D_loss(scores, scores, label_smoothing='twice', real_label=0.9)
    with pytest.raises(ValueError, match="constant of label_smoothing='once'"):
        losses.D_loss(scores, scores, label_smoothing='none', real_label=0.9)
    with pytest.raises(ValueError, match='reconstruction must be one of'):
        losses.G_loss(scores, scores, scores, reconstruction='l2')
