"""Tests for nodules/gan/networks.py: every layer and both whole networks against NumPy references.

The references below are written from the paper and the published network layout alone (NHWC, float64, plain loops
and index lists, and a float32 channel-first one that follows the original's axis order); nodules/gan/networks.py is
only ever used to build the graphs under test, never to compute an expected value.
"""
import math

import numpy as np
import pytest

from nodules.util.tfcompat import tf
from nodules.gan import networks

SQRT2 = np.sqrt(2.0)


# ----------------------------------------------------------------------------------------------------------------
# NumPy reference maths (NHWC, float64)


def np_lrelu(x, alpha=0.2):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, x, alpha * x)


def np_relu(x):
    return np.maximum(np.asarray(x, np.float64), 0.0)


def np_pixel_norm(x, epsilon=1e-8):
    """x / sqrt(mean over channels of x^2 + eps), one pixel at a time."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for i, v in enumerate(flat):
        out[i] = v / math.sqrt(float(np.mean(v * v)) + epsilon)
    return out.reshape(x.shape)


def np_upscale(x, factor=2):
    """Nearest neighbour: out[n, i, j, c] = x[n, i // f, j // f, c]."""
    x = np.asarray(x, np.float64)
    rows = np.arange(x.shape[1] * factor) // factor
    cols = np.arange(x.shape[2] * factor) // factor
    return x[:, rows][:, :, cols]


def np_downscale(x, factor=2):
    """Box filter: average of each factor x factor block."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    out = np.zeros((n, h // factor, w // factor, c))
    for i in range(factor):
        for j in range(factor):
            out += x[:, i::factor, j::factor, :]
    return out / (factor * factor)


def np_pad(x, pad, edge=False):
    """x [N, H, W, C] with pad more pixels on each side of H and W: zeros, or with edge=True copies of the nearest
    edge pixel."""
    return np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode='edge' if edge else 'constant')


def np_blur(x, edge=False):
    """Binomial blur of every channel: out[i, j] = sum over a, b in -1..1 of x[i+a, j+b] * t[a] * t[b] / 16 with
    t = (1, 2, 1), zeros outside the image (edge=True: the nearest edge pixel)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    xp = np_pad(x, 1, edge)
    taps = (1.0, 2.0, 1.0)
    out = np.zeros_like(x)
    for a in range(3):
        for b in range(3):
            out += xp[:, a:a + h, b:b + w, :] * taps[a] * taps[b] / 16.0
    return out


def np_conv_same(x, w, edge=False):
    """Cross-correlation (TensorFlow's conv2d), stride 1, zero padding SAME (edge=True: edge pixels repeated
    instead of zeros); w is [k, k, in, out]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    k = w.shape[0]
    pad = (k - 1) // 2
    n, h, wd, _ = x.shape
    xp = np_pad(x, pad, edge)
    out = np.zeros((n, h, wd, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out += np.tensordot(xp[:, i:i + h, j:j + wd, :], w[i, j], axes=([3], [0]))
    return out


def np_fused_kernel(w):
    """The fused resampling kernel: pad the 3x3 kernel to 5x5 and sum its four shifted 4x4 windows."""
    w = np.asarray(w, np.float64)
    w5 = np.zeros((5, 5) + w.shape[2:])
    w5[1:4, 1:4] = w
    return w5[1:, 1:] + w5[:-1, 1:] + w5[1:, :-1] + w5[:-1, :-1]


def np_fused_upscale_conv_literal(x, w_out_in):
    """The fused up-scaling convolution taken literally: the 4x4 summed kernel ([4, 4, out, in]) in a stride-2 transposed convolution with
    SAME padding (output 2H x 2W; a 4-tap stride-2 kernel then has one pixel of padding before).  A transposed
    convolution scatters: input pixel (p, q) adds K[a, b] . x[p, q] to output pixel (2p + a - 1, 2q + b - 1)."""
    x = np.asarray(x, np.float64)
    k4 = np_fused_kernel(w_out_in)
    n, h, wd, _ = x.shape
    buf = np.zeros((n, 2 * h + 2, 2 * wd + 2, k4.shape[2]))     # buffer index = output index + 1
    for p in range(h):
        for q in range(wd):
            for a in range(4):
                for b in range(4):
                    buf[:, 2 * p + a, 2 * q + b, :] += x[:, p, q, :].dot(k4[a, b].T)
    return buf[:, 1:2 * h + 1, 1:2 * wd + 1, :]


def np_fused_upscale_conv_as_upscale_then_conv(x, w_out_in, edge=False):
    """The same operation written as nearest upscale followed by a 3x3 SAME convolution.  Because a transposed
    convolution is the adjoint of a correlation, the 3x3 kernel acts spatially flipped (a true convolution),
    exactly as in the original PGGAN code whose pickles must load unchanged.  edge=True: the up-scaled image is
    padded with its edge pixels (not a form the original has)."""
    w = np.asarray(w_out_in, np.float64).transpose(0, 1, 3, 2)[::-1, ::-1]
    return np_conv_same(np_upscale(x), w, edge)


def np_fused_conv_downscale_literal(x, w):
    """The fused down-scaling convolution taken literally: 0.25 x the 4x4 summed kernel in a stride-2 SAME convolution (pad 1 before)."""
    x = np.asarray(x, np.float64)
    k4 = np_fused_kernel(w) * 0.25
    n, h, wd, _ = x.shape
    xp = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode='constant')
    out = np.zeros((n, h // 2, wd // 2, k4.shape[3]))
    for o in range(h // 2):
        for p in range(wd // 2):
            for a in range(4):
                for b in range(4):
                    out[:, o, p, :] += xp[:, 2 * o + a, 2 * p + b, :].dot(k4[a, b])
    return out


def np_minibatch_stddev(x, group_size):
    """Minibatch standard deviation with explicit index lists: sample n is in group n mod (N / G)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    g = min(group_size, n)
    assert n % g == 0
    num_groups = n // g
    stat = np.zeros(n)
    for group in range(num_groups):
        members = [i for i in range(n) if i % num_groups == group]
        assert len(members) == g
        values = x[members]
        var = np.mean((values - values.mean(axis=0)) ** 2, axis=0)        # biased variance over the group
        stat[members] = np.mean(np.sqrt(var + 1e-8))                        # averaged over channels and pixels
    extra = np.zeros(x.shape[:3] + (1,))
    for i in range(n):
        extra[i] = stat[i]
    return np.concatenate([x, extra], axis=-1)


def np_channels_last_from_first(flat, channels, size):
    out = np.zeros((flat.shape[0], size, size, channels))
    for n in range(flat.shape[0]):
        for c in range(channels):
            for h in range(size):
                for w in range(size):
                    out[n, h, w, c] = flat[n, c * size * size + h * size + w]
    return out


def np_flatten_channel_first(x):
    n, height, width, channels = x.shape
    out = np.zeros((n, channels * height * width))
    for i in range(n):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    out[i, c * height * width + h * width + w] = x[i, h, w, c]
    return out


def nf_ref(fmap_base, fmap_decay, fmap_max):
    return lambda stage: min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


class Params(object):
    """Stored variable values by name (scope stripped) and the equalized-learning-rate scaling
    (stored weight x gain / sqrt(fan_in))."""

    def __init__(self, values, use_wscale=True):
        self.values = values
        self.use_wscale = use_wscale

    def weight(self, name, gain=SQRT2, fan_in=None):
        w = np.asarray(self.values[name + '/weight'], np.float64)
        if not self.use_wscale:
            return w
        if fan_in is None:
            fan_in = int(np.prod(w.shape[:-1]))
        return w * (gain / np.sqrt(fan_in))

    def bias(self, name):
        return np.asarray(self.values[name + '/bias'], np.float64)


def np_generator_torgb(params, latents, labels, resolution, nf, fused_scale=True, normalize_latents=True,
                       use_pixelnorm=True, use_leakyrelu=True, blur_resampling=False, edge_padding=False):
    """Every resolution's ToRGB image of G_paper: {log2 r: [N, r, r, C]}."""
    R = int(round(np.log2(resolution)))
    act = np_lrelu if use_leakyrelu else np_relu
    pn = np_pixel_norm if use_pixelnorm else (lambda v: v)
    x = np.concatenate([np.asarray(latents, np.float64), np.asarray(labels, np.float64)], axis=1)
    if normalize_latents:
        x = np_pixel_norm(x)
    d = x.dot(params.weight('4x4/Dense', gain=SQRT2 / 4))
    x = pn(act(np_channels_last_from_first(d, nf(1), 4) + params.bias('4x4/Dense')))
    conv = lambda v, w: np_conv_same(v, w, edge_padding)
    x = pn(act(conv(x, params.weight('4x4/Conv')) + params.bias('4x4/Conv')))

    def torgb(v, res):
        name = 'ToRGB_lod%d' % (R - res)
        return np_conv_same(v, params.weight(name, gain=1.0)) + params.bias(name)

    blur = (lambda v: np_blur(v, edge_padding)) if blur_resampling else (lambda v: v)
    images = {2: torgb(x, 2)}
    for res in range(3, R + 1):
        scope = '%dx%d' % (2 ** res, 2 ** res)
        if fused_scale:
            name = scope + '/Conv0_up'
            w = params.weight(name, fan_in=3 * 3 * x.shape[-1])
            up = (lambda v: np_fused_upscale_conv_as_upscale_then_conv(v, w, edge=True)) if edge_padding else (
                lambda v: np_fused_upscale_conv_literal(v, w))
            x = blur(up(x))
        else:
            name = scope + '/Conv0'
            x = conv(blur(np_upscale(x)), params.weight(name))
        x = pn(act(x + params.bias(name)))
        name = scope + '/Conv1'
        x = pn(act(conv(x, params.weight(name)) + params.bias(name)))
        images[res] = torgb(x, res)
    return images


def np_generator_output(torgb, lod, resolution):
    """The progressive-growing output in closed form: at lod = level + frac the image is lerp(ToRGB(current), upscale(ToRGB(lower)), frac)
    at resolution res / 2^level, then nearest-upscaled to full size."""
    R = int(round(np.log2(resolution)))
    lod = min(max(float(lod), 0.0), R - 2.0)
    level = int(math.floor(lod))
    frac = lod - level
    current = R - level
    image = torgb[current]
    if frac > 0:
        image = image + (np_upscale(torgb[current - 1]) - image) * frac
    return np_upscale(image, 2 ** level)


def np_discriminator(params, images, lod, resolution, nf, label_size=0, fused_scale=True, mbstd_group_size=4,
                     blur_resampling=False):
    """D_paper at a given lod, in closed form: start at the working resolution with FromRGB of
    the box-downscaled input, fade the first block's output towards FromRGB of the input downscaled once more."""
    R = int(round(np.log2(resolution)))
    lod = min(max(float(lod), 0.0), R - 2.0)
    level = int(math.floor(lod))
    frac = lod - level

    def down(img, times):
        for _ in range(times):
            img = np_downscale(img)
        return img

    def fromrgb(img, res):
        name = 'FromRGB_lod%d' % (R - res)
        return np_lrelu(np_conv_same(img, params.weight(name)) + params.bias(name))

    blur = np_blur if blur_resampling else (lambda v: v)

    def block(x, res):
        scope = '%dx%d' % (2 ** res, 2 ** res)
        x = np_lrelu(np_conv_same(x, params.weight(scope + '/Conv0')) + params.bias(scope + '/Conv0'))
        if fused_scale:
            name = scope + '/Conv1_down'
            return np_lrelu(np_downscale(np_conv_same(blur(x), params.weight(name))) + params.bias(name))
        name = scope + '/Conv1'
        return np_downscale(blur(np_lrelu(np_conv_same(x, params.weight(name)) + params.bias(name))))

    current = R - level
    x = fromrgb(down(images, level), current)
    if current > 2:
        x = block(x, current)
        if frac > 0:
            x = x + (fromrgb(down(images, level + 1), current - 1) - x) * frac
        for res in range(current - 1, 2, -1):
            x = block(x, res)
    if mbstd_group_size > 1:
        x = np_minibatch_stddev(x, mbstd_group_size)
    x = np_lrelu(np_conv_same(x, params.weight('4x4/Conv')) + params.bias('4x4/Conv'))
    x = np_lrelu(np_flatten_channel_first(x).dot(params.weight('4x4/Dense0')) + params.bias('4x4/Dense0'))
    x = x.dot(params.weight('4x4/Dense1', gain=1.0)) + params.bias('4x4/Dense1')
    assert x.shape[1] == 1 + label_size
    return x[:, :1], x[:, 1:]


# ----------------------------------------------------------------------------------------------------------------
# NumPy reference in the original's channel-first layout (float32, NCHW): the generator as the original computes it


def np32_pixel_norm_nchw(x, epsilon=1e-8):
    """Channels on axis 1, summed one channel after the other (TensorFlow's order for that axis, short of its
    vectorised inner loops), then x / sqrt(mean + eps); float32 throughout."""
    x = np.asarray(x, np.float32)
    squares = x * x
    total = squares[:, 0].copy()
    for c in range(1, x.shape[1]):
        total += squares[:, c]
    mean = (total / np.float32(x.shape[1]))[:, np.newaxis]
    return x / np.sqrt(mean + np.float32(epsilon))


def np32_lrelu(x):
    return np.maximum(x * np.float32(0.2), x)


def np32_upscale_nchw(x, factor=2):
    return x.repeat(factor, axis=2).repeat(factor, axis=3)


def np32_conv_nchw(x, w):
    """Cross-correlation, stride 1, zero SAME padding; x [N, C, H, W], w [k, k, in, out]."""
    k = w.shape[0]
    pad = k // 2
    n, _, height, width = x.shape
    padded = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode='constant')
    out = np.zeros((n, w.shape[3], height, width), np.float32)
    for i in range(k):
        for j in range(k):
            out += np.einsum('nchw,co->nohw', padded[:, :, i:i + height, j:j + width], w[i, j])
    return out


def np32_fused_upscale_conv_nchw(x, w_out_in):
    """The 4x4 summed kernel (summed in the original's order) in a stride-2 transposed convolution: input pixel
    (p, q) adds K[a, b] . x[p, q] to output pixel (2p + a - 1, 2q + b - 1)."""
    padded = np.zeros((5, 5) + w_out_in.shape[2:], np.float32)
    padded[1:4, 1:4] = w_out_in
    k4 = ((padded[1:, 1:] + padded[:-1, 1:]) + padded[1:, :-1]) + padded[:-1, :-1]
    n, _, height, width = x.shape
    out = np.zeros((n, k4.shape[2], 2 * height + 2, 2 * width + 2), np.float32)   # index = output index + 1
    for a in range(4):
        for b in range(4):
            out[:, :, a:a + 2 * height:2, b:b + 2 * width:2] += np.einsum('nchw,oc->nohw', x, k4[a, b])
    return out[:, :, 1:2 * height + 1, 1:2 * width + 1]


def np32_generator_nchw(values, latents, lod, resolution, nf, fused_scale=True):
    """G_paper with use_wscale, pixel norm and leaky ReLU, NCHW float32, returned NHWC.  The level is chosen as the
    original chooses it: at lod = level + frac (clamped to the network) the image is ToRGB of that level when frac
    is 0, else rgb + (upscale(coarser rgb) - rgb) * frac, then nearest-upscaled by 2**level."""
    R = int(round(np.log2(resolution)))

    def weight(name, gain=np.sqrt(2), fan_in=None):
        w = np.asarray(values[name + '/weight'], np.float32)
        fan_in = fan_in if fan_in is not None else int(np.prod(w.shape[:-1]))
        return w * np.float32(gain / np.sqrt(fan_in))

    def bias(name, x):
        return x + np.asarray(values[name + '/bias'], np.float32)[:, np.newaxis, np.newaxis]

    def layer(name, x):
        return np32_pixel_norm_nchw(np32_lrelu(bias(name, x)))

    x = np32_pixel_norm_nchw(latents)
    x = x.dot(weight('4x4/Dense', gain=np.sqrt(2) / 4)).reshape(-1, nf(1), 4, 4)
    x = layer('4x4/Dense', x)
    x = layer('4x4/Conv', np32_conv_nchw(x, weight('4x4/Conv')))
    rgb = {}
    for res in range(2, R + 1):
        scope = '%dx%d' % (2 ** res, 2 ** res)
        if res > 2 and fused_scale:
            name = scope + '/Conv0_up'
            x = layer(name, np32_fused_upscale_conv_nchw(x, weight(name, fan_in=9 * x.shape[1])))
        elif res > 2:
            x = layer(scope + '/Conv0', np32_conv_nchw(np32_upscale_nchw(x), weight(scope + '/Conv0')))
        if res > 2:
            x = layer(scope + '/Conv1', np32_conv_nchw(x, weight(scope + '/Conv1')))
        name = 'ToRGB_lod%d' % (R - res)
        rgb[res] = bias(name, np32_conv_nchw(x, weight(name, gain=1.0)))
    lod = min(max(lod, 0.0), R - 2.0)
    level = int(math.floor(lod))
    frac = np.float32(lod - level)
    image = rgb[R - level]
    if frac > 0:
        image = image + (np32_upscale_nchw(rgb[R - level - 1]) - image) * frac
    return np32_upscale_nchw(image, 2 ** level).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def resampling_kwargs(variant):
    """The network keywords of a test variant's resampling and padding: 'unfused', 'blur', 'unfused_blur',
    'edge_blur', 'unfused_edge_blur' or the default."""
    kwargs = {}
    if variant.startswith('unfused'):
        kwargs['fused_scale'] = False
    if variant.endswith('blur'):
        kwargs['blur_resampling'] = True
    if 'edge' in variant:
        kwargs['edge_padding'] = True
    return kwargs


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    """float32 tolerance, with the absolute part scaled to the magnitude of the expected values."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def scope_variables(scope, trainable_only=False):
    key = tf.GraphKeys.TRAINABLE_VARIABLES if trainable_only else tf.GraphKeys.GLOBAL_VARIABLES
    return [v for v in tf.get_collection(key) if v.op.name.startswith(scope + '/')]


def relative_name(var, scope):
    return var.op.name[len(scope) + 1:]


def only_variable(name_suffix):
    found = [v for v in tf.global_variables() if v.op.name.endswith(name_suffix)]
    assert len(found) == 1, [v.op.name for v in tf.global_variables()]
    return found[0]


def randomize_scope(session, scope, rng, bias_scale=0.5):
    """Give every trainable variable of a scope a random value (weights stored N(0, 1) as with use_wscale, random
    biases so that the bias paths are exercised); returns {relative name: value}."""
    session.run(tf.global_variables_initializer())
    values = {}
    for var in scope_variables(scope, trainable_only=True):
        shape = var.shape.as_list()
        value = rng.randn(*shape)
        if var.op.name.endswith('/bias'):
            value = value * bias_scale
        value = value.astype(np.float32)
        var.load(value, session)
        values[relative_name(var, scope)] = value
    return values


def lod_variable(scope):
    var = scope_variables(scope)[0]
    assert relative_name(var, scope) == 'lod'
    return var


TINY = dict(num_channels=1, resolution=16, fmap_base=16, fmap_decay=1.0, fmap_max=8)
TINY_NF = nf_ref(16, 1.0, 8)       # nf(0)=8, nf(1)=8, nf(2)=4, nf(3)=2: different widths in every block
TINY_LATENT = 8


def build_tiny_generator(scope, label_size=0, reuse=False, inputs=None, **kwargs):
    if inputs is None:
        inputs = (tf.placeholder(tf.float32, [None, TINY_LATENT], name='latents'),
                  tf.placeholder(tf.float32, [None, label_size], name='labels'))
    latents, labels = inputs
    settings = dict(TINY, latent_size=TINY_LATENT, label_size=label_size)
    settings.update(kwargs)
    with tf.variable_scope(scope, reuse=reuse):
        images = networks.G_paper(latents, labels, **settings)
    return latents, labels, images


def build_tiny_discriminator(scope, size=16, label_size=0, reuse=False, **kwargs):
    images = tf.placeholder(tf.float32, [None, size, size, TINY['num_channels']], name='images')
    settings = dict(TINY, label_size=label_size)
    settings.update(kwargs)
    with tf.variable_scope(scope, reuse=reuse):
        scores, label_logits = networks.D_paper(images, **settings)
    return images, scores, label_logits


# ----------------------------------------------------------------------------------------------------------------
# Elementwise layers


def test_pixel_norm(tf_session):
    rng = np.random.RandomState(1)
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    x[0, 1, 2] *= 1e-4          # mean square ~1e-8: epsilon matters
    x[1, 0, 0] = 0.0            # all-zero pixel stays zero
    y = tf_session.run(networks.pixel_norm(tf.constant(x)))
    assert_close(y, np_pixel_norm(x))
    assert np.all(y[1, 0, 0] == 0)
    # unit average square over the channel axis wherever the pixel is not tiny
    ms = np.mean(np.asarray(y, np.float64) ** 2, axis=-1)
    assert np.allclose(ms[0, 0], 1.0, atol=1e-5)
    y = tf_session.run(networks.pixel_norm(tf.constant(x), epsilon=1e-2))
    assert_close(y, np_pixel_norm(x, epsilon=1e-2))


def test_pixel_norm_on_vectors(tf_session):
    x = np.random.RandomState(2).randn(4, 7).astype(np.float32)
    assert_close(tf_session.run(networks.pixel_norm(tf.constant(x))), np_pixel_norm(x))


def channel_first_pixel_norm(x_nhwc, epsilon=1e-8):
    """The original's pixel norm, written as it is written there: NCHW, mean over axis 1 (TensorFlow ops on a
    channel-first tensor, returned NHWC)."""
    x = tf.constant(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    y = x * tf.rsqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True) + epsilon)
    return tf.transpose(y, [0, 2, 3, 1])


@pytest.mark.parametrize('channels', [4, 16, 64, 512])
def test_pixel_norm_bit_exact_with_the_channel_first_original(tf_session, channels):
    """Not just close: the same bits as the channel-first formulation, whose channel sum TensorFlow orders
    differently from a sum over the last axis."""
    x = np.random.RandomState(channels).randn(3, 8, 8, channels).astype(np.float32)
    ours, original = tf_session.run([networks.pixel_norm(tf.constant(x)), channel_first_pixel_norm(x)])
    assert np.array_equal(ours, original)
    if channels == 512:  # the check has teeth: averaging over the last axis rounds differently
        last_axis = tf.constant(x) * tf.rsqrt(tf.reduce_mean(tf.square(tf.constant(x)), axis=-1, keepdims=True)
                                              + 1e-8)
        assert not np.array_equal(tf_session.run(last_axis), original)


@pytest.mark.parametrize('alpha', [None, 0.1])
def test_leaky_relu(tf_session, alpha):
    x = np.random.RandomState(3).randn(3, 4, 5, 2).astype(np.float32)
    x[0, 0, 0, 0] = 0.0
    if alpha is None:
        y = networks.leaky_relu(tf.constant(x))
        expected = np.where(x >= 0, x, 0.2 * x)
    else:
        y = networks.leaky_relu(tf.constant(x), alpha=alpha)
        expected = np.where(x >= 0, x, alpha * x)
    assert_close(tf_session.run(y), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('shape', [(3, 4), (2, 3, 5, 4)])
def test_apply_bias(tf_session, shape):
    rng = np.random.RandomState(4)
    x = rng.randn(*shape).astype(np.float32)
    with tf.variable_scope('layer'):
        y = networks.apply_bias(tf.constant(x))
    bias = only_variable('layer/bias')
    assert bias.shape.as_list() == [shape[-1]]
    tf_session.run(tf.global_variables_initializer())
    assert np.all(tf_session.run(bias) == 0)            # initialised to zero
    assert_close(tf_session.run(y), x)
    b = rng.randn(shape[-1]).astype(np.float32)
    bias.load(b, tf_session)
    expected = np.array(x, np.float64)
    for c in range(shape[-1]):
        expected[..., c] += b[c]
    assert_close(tf_session.run(y), expected)


# ----------------------------------------------------------------------------------------------------------------
# Dense and conv with the equalized learning rate


@pytest.mark.parametrize('use_wscale', [True, False])
@pytest.mark.parametrize('gain', [SQRT2, 1.0, SQRT2 / 4])
def test_dense(tf_session, use_wscale, gain):
    rng = np.random.RandomState(5)
    x = rng.randn(3, 6).astype(np.float32)
    with tf.variable_scope('layer'):
        y = networks.dense(tf.constant(x), fmaps=4, gain=gain, use_wscale=use_wscale)
    weight = only_variable('layer/weight')
    assert weight.shape.as_list() == [6, 4]
    assert len(tf.global_variables()) == 1          # no bias inside dense
    w = rng.randn(6, 4).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    weight.load(w, tf_session)
    effective = w * (gain / np.sqrt(6.0)) if use_wscale else np.asarray(w, np.float64)
    expected = np.zeros((3, 4))
    for n in range(3):
        for o in range(4):
            expected[n, o] = sum(float(x[n, i]) * effective[i, o] for i in range(6))
    assert_close(tf_session.run(y), expected)


@pytest.mark.parametrize('use_wscale', [True, False])
@pytest.mark.parametrize('kernel,gain', [(3, SQRT2), (1, 1.0), (1, SQRT2)])
def test_conv2d(tf_session, use_wscale, kernel, gain):
    rng = np.random.RandomState(6)
    x = rng.randn(2, 5, 6, 3).astype(np.float32)
    with tf.variable_scope('layer'):
        y = networks.conv2d(tf.constant(x), fmaps=4, kernel=kernel, gain=gain, use_wscale=use_wscale)
    weight = only_variable('layer/weight')
    assert weight.shape.as_list() == [kernel, kernel, 3, 4]
    w = rng.randn(kernel, kernel, 3, 4).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    weight.load(w, tf_session)
    scale = gain / np.sqrt(kernel * kernel * 3.0) if use_wscale else 1.0
    assert_close(tf_session.run(y), np_conv_same(x, w * scale))


@pytest.mark.parametrize('kernel', [3, 1])
def test_conv2d_edge_padding(tf_session, kernel):
    """Edge pixels instead of zeros around the image: the border outputs change, the inner ones do not."""
    rng = np.random.RandomState(60)
    x = rng.randn(2, 5, 6, 3).astype(np.float32) + 2.0  # far from 0, so that the two paddings differ
    with tf.variable_scope('edge'):
        y = networks.conv2d(tf.constant(x), fmaps=4, kernel=kernel, edge_padding=True)
    w = rng.randn(kernel, kernel, 3, 4).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    only_variable('edge/weight').load(w, tf_session)
    out = tf_session.run(y)
    assert_close(out, np_conv_same(x, w, edge=True))
    zero = np_conv_same(x, w)
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], zero[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert (kernel == 1) == np.allclose(out, zero, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('edge_padding', [False, True])
def test_blur2d(tf_session, edge_padding):
    x = np.random.RandomState(61).randn(2, 5, 6, 3).astype(np.float32) + 2.0
    out = tf_session.run(networks.blur2d(tf.constant(x), edge_padding=edge_padding))
    assert_close(out, np_blur(x, edge=edge_padding))
    # A constant image stays constant with edge padding; zero padding darkens its border.
    flat = tf_session.run(networks.blur2d(tf.ones([1, 4, 4, 1]), edge_padding=edge_padding))
    assert np.allclose(flat, 1.0) == edge_padding


@pytest.mark.parametrize('use_wscale', [True, False])
def test_weight_initialisation(tf_session, use_wscale):
    """Stored weights are N(0, 1) with use_wscale (the He constant is applied at run time), N(0, He std) without."""
    tf.set_random_seed(7)
    x = tf.zeros([1, 4, 4, 32])
    with tf.variable_scope('layer'):
        networks.conv2d(x, fmaps=16, kernel=3, gain=SQRT2, use_wscale=use_wscale)
    tf_session.run(tf.global_variables_initializer())
    w = tf_session.run(only_variable('layer/weight'))
    expected_std = 1.0 if use_wscale else SQRT2 / np.sqrt(3 * 3 * 32)
    assert abs(w.std() / expected_std - 1.0) < 0.1
    assert abs(w.mean()) < 0.1 * expected_std


# ----------------------------------------------------------------------------------------------------------------
# Minibatch standard deviation


@pytest.mark.parametrize('batch,group_size', [(8, 4), (8, 2), (8, 8), (8, 16), (6, 3), (4, 4)])
def test_minibatch_stddev(tf_session, batch, group_size):
    rng = np.random.RandomState(8)
    x = rng.randn(batch, 2, 3, 3).astype(np.float32)
    x *= (1.0 + np.arange(batch, dtype=np.float32))[:, None, None, None]   # groups differ clearly
    y = tf_session.run(networks.minibatch_stddev_layer(tf.constant(x), group_size))
    expected = np_minibatch_stddev(x, group_size)
    assert y.shape == (batch, 2, 3, 4)
    assert_close(y, expected)
    assert_close(y[..., :3], x, rtol=0, atol=0)          # the input comes first, unchanged
    g = min(group_size, batch)
    if 1 < g < batch:
        # The data discriminates strided from consecutive grouping, so the check above means something.
        consecutive = np.concatenate([np_minibatch_stddev(x[i:i + g], g) for i in range(0, batch, g)])
        assert not np.allclose(consecutive[..., 3], expected[..., 3], rtol=1e-3)


def test_minibatch_stddev_explicit_groups(tf_session):
    """N=8, group 4: groups {0,2,4,6} and {1,3,5,7}; a hand-made batch with known per-group statistics."""
    x = np.zeros((8, 1, 1, 2), np.float32)
    x[[0, 2, 4, 6], 0, 0, 0] = [1, -1, 1, -1]            # std 1 in channel 0, 0 in channel 1
    x[[1, 3, 5, 7], 0, 0, :] = [[3, 0], [-3, 0], [3, 4], [-3, -4]]   # per-channel variance 9 and 8
    y = tf_session.run(networks.minibatch_stddev_layer(tf.constant(x), 4))
    even = (1.0 + np.sqrt(1e-8)) / 2
    odd = (np.sqrt(9 + 1e-8) + np.sqrt(8 + 1e-8)) / 2
    assert_close(y[[0, 2, 4, 6], 0, 0, 2], [even] * 4)
    assert_close(y[[1, 3, 5, 7], 0, 0, 2], [odd] * 4)


def test_minibatch_stddev_dynamic_batch(tf_session):
    rng = np.random.RandomState(9)
    x = rng.randn(8, 4, 4, 3).astype(np.float32)
    placeholder = tf.placeholder(tf.float32, [None, 4, 4, 3])
    y = networks.minibatch_stddev_layer(placeholder, 4)
    assert y.shape.as_list()[1:] == [4, 4, 4]
    assert_close(tf_session.run(y, {placeholder: x}), np_minibatch_stddev(x, 4))
    assert_close(tf_session.run(y, {placeholder: x[:2]}), np_minibatch_stddev(x[:2], 4))   # clamped to N=2


def test_minibatch_stddev_bit_exact_with_the_channel_first_original(tf_session):
    """The group statistic averaged over channels and pixels in the original's NCHW order, to the last bit."""
    x = np.random.RandomState(10).randn(8, 4, 4, 512).astype(np.float32)
    y = tf.constant(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))          # the original's NCHW formulation
    y = tf.reshape(y, [4, -1, 512, 4, 4])
    y -= tf.reduce_mean(y, axis=0, keepdims=True)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)
    original = tf.tile(tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True), [4, 1, 4, 4])
    ours, original = tf_session.run([networks.minibatch_stddev_layer(tf.constant(x), 4), original])
    assert np.array_equal(ours[..., 512], original[:, 0])
    assert np.array_equal(ours[..., :512], x)


# ----------------------------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize('factor', [2, 4])
def test_upscale2d(tf_session, factor):
    x = np.random.RandomState(10).randn(2, 3, 4, 2).astype(np.float32)
    y = tf_session.run(networks.upscale2d(tf.constant(x), factor=factor))
    expected = np.zeros((2, 3 * factor, 4 * factor, 2))
    for n in range(2):
        for i in range(3 * factor):
            for j in range(4 * factor):
                expected[n, i, j] = x[n, i // factor, j // factor]
    assert_close(y, expected, rtol=0, atol=0)


def test_upscale2d_default_is_x2(tf_session):
    x = np.random.RandomState(11).randn(1, 2, 2, 3).astype(np.float32)
    assert_close(tf_session.run(networks.upscale2d(tf.constant(x))), np_upscale(x), rtol=0, atol=0)


@pytest.mark.parametrize('factor', [2, 4])
def test_downscale2d(tf_session, factor):
    x = np.random.RandomState(12).randn(2, 8, 4, 3).astype(np.float32)
    y = tf_session.run(networks.downscale2d(tf.constant(x), factor=factor))
    expected = np.zeros((2, 8 // factor, 4 // factor, 3))
    for n in range(2):
        for i in range(8 // factor):
            for j in range(4 // factor):
                block = x[n, i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].astype(np.float64)
                expected[n, i, j] = block.reshape(-1, 3).mean(axis=0)
    assert_close(y, expected)


# ----------------------------------------------------------------------------------------------------------------
# Fused resampling convolutions


@pytest.mark.parametrize('use_wscale', [True, False])
def test_upscale2d_conv2d(tf_session, use_wscale):
    rng = np.random.RandomState(13)
    cin, cout = 2, 3                      # different, so that [3, 3, out, in] and fan_in = 9 * in are checked
    x = rng.randn(2, 3, 4, cin).astype(np.float32)
    with tf.variable_scope('layer'):
        y = networks.upscale2d_conv2d(tf.constant(x), fmaps=cout, kernel=3, use_wscale=use_wscale)
    weight = only_variable('layer/weight')
    assert weight.shape.as_list() == [3, 3, cout, cin]
    assert y.shape.as_list()[1:] == [6, 8, cout]
    w = rng.randn(3, 3, cout, cin).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    weight.load(w, tf_session)
    effective = w * (SQRT2 / np.sqrt(3 * 3 * cin)) if use_wscale else w
    out = tf_session.run(y)
    literal = np_fused_upscale_conv_literal(x, effective)
    assert_close(out, literal)
    # Equivalently: nearest upscale then a 3x3 SAME convolution (kernel [3, 3, in, out], spatially flipped).
    assert_close(out, np_fused_upscale_conv_as_upscale_then_conv(x, effective))


def test_upscale2d_conv2d_edge_padding(tf_session):
    """With edge padding the fused layer is nearest upscale, then a 3x3 convolution over the up-scaled image
    padded with its edge pixels; a dynamic batch works as without."""
    rng = np.random.RandomState(62)
    x = rng.randn(2, 3, 4, 2).astype(np.float32) + 2.0
    placeholder = tf.placeholder(tf.float32, [None, 3, 4, 2])
    with tf.variable_scope('edge'):
        y = networks.upscale2d_conv2d(placeholder, fmaps=3, kernel=3, use_wscale=False, edge_padding=True)
    assert y.shape.as_list() == [None, 6, 8, 3]
    w = rng.randn(3, 3, 3, 2).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    only_variable('edge/weight').load(w, tf_session)
    out = tf_session.run(y, {placeholder: x})
    assert_close(out, np_fused_upscale_conv_as_upscale_then_conv(x, w, edge=True))
    zero = np_fused_upscale_conv_literal(x, w)
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], zero[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[:, 0], zero[:, 0], rtol=1e-3, atol=1e-3)


def test_upscale2d_conv2d_dynamic_batch(tf_session):
    rng = np.random.RandomState(14)
    x = rng.randn(3, 2, 2, 2).astype(np.float32)
    placeholder = tf.placeholder(tf.float32, [None, 2, 2, 2])
    with tf.variable_scope('layer'):
        y = networks.upscale2d_conv2d(placeholder, fmaps=1, kernel=3, use_wscale=True)
    assert y.shape.as_list() == [None, 4, 4, 1]
    w = rng.randn(3, 3, 1, 2).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    only_variable('layer/weight').load(w, tf_session)
    expected = np_fused_upscale_conv_literal(x, w * (SQRT2 / np.sqrt(18.0)))
    assert_close(tf_session.run(y, {placeholder: x}), expected)


@pytest.mark.parametrize('use_wscale', [True, False])
def test_conv2d_downscale2d(tf_session, use_wscale):
    rng = np.random.RandomState(15)
    cin, cout = 2, 3
    x = rng.randn(2, 6, 4, cin).astype(np.float32)
    with tf.variable_scope('layer'):
        y = networks.conv2d_downscale2d(tf.constant(x), fmaps=cout, kernel=3, use_wscale=use_wscale)
    weight = only_variable('layer/weight')
    assert weight.shape.as_list() == [3, 3, cin, cout]
    w = rng.randn(3, 3, cin, cout).astype(np.float32)
    tf_session.run(tf.global_variables_initializer())
    weight.load(w, tf_session)
    effective = w * (SQRT2 / np.sqrt(3 * 3 * cin)) if use_wscale else w
    out = tf_session.run(y)
    assert_close(out, np_downscale(np_conv_same(x, effective)))     # 3x3 SAME conv, then 2x2 average
    assert_close(out, np_fused_conv_downscale_literal(x, effective))


# ----------------------------------------------------------------------------------------------------------------
# Channel-first order at the two dense layers


def test_channels_last_from_first(tf_session):
    rng = np.random.RandomState(16)
    flat = rng.randn(2, 3 * 16).astype(np.float32)
    y = tf_session.run(networks.channels_last_from_first(tf.constant(flat), 3, 4))
    assert_close(y, np_channels_last_from_first(flat, 3, 4), rtol=0, atol=0)
    # spot check of the documented index c*16 + h*4 + w
    assert y[1, 2, 3, 1] == flat[1, 1 * 16 + 2 * 4 + 3]


@pytest.mark.parametrize('shape', [(2, 4, 4, 3), (2, 2, 3, 5)])
def test_flatten_channel_first(tf_session, shape):
    x = np.random.RandomState(17).randn(*shape).astype(np.float32)
    y = tf_session.run(networks.flatten_channel_first(tf.constant(x)))
    assert_close(y, np_flatten_channel_first(x), rtol=0, atol=0)
    if shape[1:3] == (4, 4):
        assert y[0, 2 * 16 + 1 * 4 + 3] == x[0, 1, 3, 2]
        back = tf_session.run(networks.channels_last_from_first(tf.constant(y), shape[3], 4))
        assert_close(back, x, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Whole tiny generator


LODS = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]


@pytest.mark.parametrize('variant', ['default', 'unfused', 'blur', 'unfused_blur', 'edge_blur', 'unfused_edge_blur',
                                     'labels', 'plain'])
def test_generator_matches_numpy_reference(tf_session, variant):
    """The whole tiny G (16x16) at integer and fractional lod equals the NumPy reference."""
    kwargs = {}
    label_size = 0
    kwargs.update(resampling_kwargs(variant))
    if variant == 'labels':
        label_size = 3
    elif variant == 'plain':
        kwargs = dict(normalize_latents=False, use_pixelnorm=False, use_leakyrelu=False, use_wscale=False)
    latents, labels, images = build_tiny_generator('G', label_size=label_size, **kwargs)
    assert images.shape.as_list() == [None, 16, 16, 1]
    rng = np.random.RandomState(20)
    values = randomize_scope(tf_session, 'G', rng)
    if not kwargs.get('use_wscale', True):
        for name in values:
            if name.endswith('/weight'):   # keep activations O(1) without the run-time He constant
                w = values[name]
                fan_in = np.prod(w.shape[:-1]) if '/Conv0_up/' not in name else 9 * w.shape[3]
                gain = 1.0 if name.startswith('ToRGB') else (SQRT2 / 4 if 'Dense' in name else SQRT2)
                values[name] = (w * gain / np.sqrt(fan_in)).astype(np.float32)
                only_variable('G/' + name).load(values[name], tf_session)
    params = Params(values, use_wscale=kwargs.get('use_wscale', True))
    z = rng.randn(4, TINY_LATENT).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]][:, :label_size]
    torgb = np_generator_torgb(params, z, y, 16, TINY_NF, fused_scale=kwargs.get('fused_scale', True),
                               normalize_latents=kwargs.get('normalize_latents', True),
                               use_pixelnorm=kwargs.get('use_pixelnorm', True),
                               use_leakyrelu=kwargs.get('use_leakyrelu', True),
                               blur_resampling=kwargs.get('blur_resampling', False),
                               edge_padding=kwargs.get('edge_padding', False))
    lod = lod_variable('G')
    for value in LODS:
        lod.load(value, tf_session)
        out = tf_session.run(images, {latents: z, labels: y})
        assert out.dtype == np.float32
        assert_close(out, np_generator_output(torgb, value, 16), rtol=1e-4, atol=1e-5)


def test_generator_lod_blend_from_lower_resolution_graphs(tf_session):
    """Per-resolution ToRGB images taken from graph_resolution networks (shared variables, lod set so that no
    blending happens) combine by the fade-in formula into the full network's output at any lod, to the last bit:
    an integer lod takes its level's image as it is, a fractional one computes rgb + (upscale(coarser) - rgb) * t
    in float32 as the original does.  A graph_resolution network equals the full network at the lods it covers."""
    latents, labels, full = build_tiny_generator('G')
    _, _, g8 = build_tiny_generator('G', reuse=True, inputs=(latents, labels), graph_resolution=8)
    _, _, g4 = build_tiny_generator('G', reuse=True, inputs=(latents, labels), graph_resolution=4)
    assert g8.shape.as_list() == [None, 8, 8, 1]
    assert g4.shape.as_list() == [None, 4, 4, 1]
    assert len(scope_variables('G')) == 1 + 2 * 9   # no variables added by reuse
    rng = np.random.RandomState(21)
    randomize_scope(tf_session, 'G', rng)
    feed = {latents: rng.randn(3, TINY_LATENT).astype(np.float32), labels: np.zeros((3, 0), np.float32)}
    lod = lod_variable('G')

    def run(tensor, value):
        lod.load(value, tf_session)
        return tf_session.run(tensor, feed)

    torgb = {4: run(full, 0.0), 3: run(g8, 1.0), 2: run(g4, 2.0)}
    assert np.array_equal(run(g4, 0.0), torgb[2])     # a 4x4 graph has nothing to blend
    assert np.array_equal(run(g8, 0.5), torgb[3])     # nor a graph below the lod's level
    for value in [0.0, 0.5, 1.0, 1.5, 2.0, 0.75, 1.25, 3.0]:
        clamped = min(value, 2.0)                      # 4x4 is as coarse as it gets
        level = int(math.floor(clamped))
        frac = np.float32(clamped - level)
        current = 4 - level
        expected = torgb[current]
        if frac > 0:
            expected = expected + (np.float32(np_upscale(torgb[current - 1])) - expected) * frac
        expected = np_upscale(expected, 2 ** level)
        out = run(full, value)
        assert np.array_equal(out, expected), (value, np.abs(out - expected).max())
        # graph_resolution = r with lod >= log2(res / r): the full output is that image nearest-upscaled
        if value >= 1.0:
            assert np.array_equal(out, np_upscale(run(g8, value), 2))
        if value >= 2.0:
            assert np.array_equal(out, np_upscale(run(g4, value), 4))
    # The fade really changes the output (otherwise the checks above would be weak).
    assert not np.allclose(run(full, 0.5), run(full, 0.0), atol=1e-3)


SMALL = dict(num_channels=1, resolution=16, fmap_base=128, fmap_decay=1.0, fmap_max=32)   # 32, 32, 32, 16 maps


@pytest.mark.parametrize('fused_scale', [True, False])
def test_generator_matches_channel_first_float32_reference(tf_session, fused_scale):
    """A small G (16x16, 16-32 feature maps) against the float32 NCHW reference at lod 0, 1 and 1.5: the same
    8-bit images, floats within 2e-6.  That is float32's own resolution for eight layers: against a float64
    computation TensorFlow is off by up to 1e-6 here and the float32 reference by up to 7e-7, in opposite
    directions at times (the convolutions sum in different orders, rsqrt rounds within an ulp).  The order of
    the channel sums themselves is pinned bit for bit by the layer tests above."""
    from nodules.util import outputs
    latents = tf.placeholder(tf.float32, [None, 32])
    labels = tf.placeholder(tf.float32, [None, 0])
    with tf.variable_scope('G'):
        images = networks.G_paper(latents, labels, fused_scale=fused_scale, **SMALL)
    rng = np.random.RandomState(30)
    values = randomize_scope(tf_session, 'G', rng, bias_scale=0.1)
    for name in values:
        if name.startswith('ToRGB'):   # outputs mostly inside -1..1, as a trained generator's, so 8 bits matter
            values[name] = values[name] * np.float32(0.3)
            only_variable('G/' + name).load(values[name], tf_session)
    z = rng.randn(8, 32).astype(np.float32)
    nf = nf_ref(SMALL['fmap_base'], 1.0, SMALL['fmap_max'])
    lod = lod_variable('G')
    for value in [0.0, 1.0, 1.5]:
        lod.load(value, tf_session)
        ours = tf_session.run(images, {latents: z, labels: np.zeros((8, 0), np.float32)})
        reference = np32_generator_nchw(values, z, value, 16, nf, fused_scale=fused_scale)
        assert np.mean(np.abs(reference) < 1) > 0.9
        assert np.abs(ours - reference).max() <= 2e-6, (value, np.abs(ours - reference).max())
        assert np.array_equal(outputs.float_to_uint8(ours), outputs.float_to_uint8(reference)), value


# ----------------------------------------------------------------------------------------------------------------
# Whole tiny discriminator


@pytest.mark.parametrize('variant', ['default', 'unfused', 'blur', 'unfused_blur', 'labels', 'mbstd2', 'no_mbstd'])
def test_discriminator_matches_numpy_reference(tf_session, variant):
    """The whole tiny D (16x16) at integer and fractional lod equals the NumPy reference."""
    kwargs = {}
    label_size = 0
    mbstd = 4
    kwargs.update(resampling_kwargs(variant))
    if variant == 'labels':
        label_size = 3
    elif variant == 'mbstd2':
        mbstd = 2
    elif variant == 'no_mbstd':
        mbstd = 0
    kwargs['mbstd_group_size'] = mbstd
    images, scores, label_logits = build_tiny_discriminator('D', label_size=label_size, **kwargs)
    assert scores.shape.as_list() == [None, 1]
    assert label_logits.shape.as_list() == [None, label_size]
    conv_in = only_variable('D/4x4/Conv/weight').shape.as_list()[2]
    assert conv_in == TINY_NF(1) + (1 if mbstd > 1 else 0)
    rng = np.random.RandomState(22)
    params = Params(randomize_scope(tf_session, 'D', rng, bias_scale=0.2))
    x = rng.uniform(-1, 1, size=(8, 16, 16, 1)).astype(np.float32)
    lod = lod_variable('D')
    for value in LODS:
        lod.load(value, tf_session)
        got_scores, got_labels = tf_session.run([scores, label_logits], {images: x})
        want_scores, want_labels = np_discriminator(params, x, value, 16, TINY_NF, label_size=label_size,
                                                    fused_scale=kwargs.get('fused_scale', True),
                                                    mbstd_group_size=mbstd,
                                                    blur_resampling=kwargs.get('blur_resampling', False))
        assert_close(got_scores, want_scores, rtol=1e-4, atol=1e-5)
        assert_close(got_labels, want_labels, rtol=1e-4, atol=1e-5)


def test_discriminator_lod_blend_and_graph_resolution(tf_session):
    """D at lod >= log2(res / r) on a nearest-upscaled r x r image equals the graph_resolution=r network on that
    image; at an integer lod the full network takes that level's input path as it is (the same bits as the
    graph_resolution network fed the input box-downscaled, no fade arithmetic); D's fade-in at fractional lod is
    the lerp of FromRGB(downscaled input) into the block path."""
    images, scores, _ = build_tiny_discriminator('D')
    images8, scores8, _ = build_tiny_discriminator('D', size=8, reuse=True, graph_resolution=8)
    images4, scores4, _ = build_tiny_discriminator('D', size=4, reuse=True, graph_resolution=4)
    rng = np.random.RandomState(23)
    params = Params(randomize_scope(tf_session, 'D', rng, bias_scale=0.2))
    lod = lod_variable('D')
    x8 = rng.uniform(-1, 1, size=(4, 8, 8, 1)).astype(np.float32)
    x4 = rng.uniform(-1, 1, size=(4, 4, 4, 1)).astype(np.float32)
    for value in [1.0, 1.5, 2.0, 2.5]:
        lod.load(value, tf_session)
        full = tf_session.run(scores, {images: np_upscale(x8).astype(np.float32)})
        assert_close(tf_session.run(scores8, {images8: x8}), full, rtol=1e-5, atol=1e-5)
        if value >= 2.0:
            full = tf_session.run(scores, {images: np_upscale(x4, 4).astype(np.float32)})
            assert_close(tf_session.run(scores4, {images4: x4}), full, rtol=1e-5, atol=1e-5)
    x = rng.uniform(-1, 1, size=(4, 16, 16, 1)).astype(np.float32)
    for value, size, small_images, small_scores in [(1.0, 8, images8, scores8), (2.0, 4, images4, scores4),
                                                    (3.0, 4, images4, scores4)]:
        lod.load(value, tf_session)
        downscaled = tf_session.run(tf.nn.avg_pool(x, [1, 16 // size, 16 // size, 1], [1, 16 // size, 16 // size, 1],
                                                   'VALID'))
        assert np.array_equal(tf_session.run(scores, {images: x}),
                              tf_session.run(small_scores, {small_images: downscaled})), value
    # Fractional lod: the score follows the fade of the first active block, computed here in NumPy from the
    # two paths of the fade (block output of the working resolution and FromRGB of the input downscaled once).
    for value in [0.5, 1.5]:
        lod.load(value, tf_session)
        got = tf_session.run(scores, {images: x})
        want, _ = np_discriminator(params, x, value, 16, TINY_NF)
        assert_close(got, want, rtol=1e-4, atol=1e-5)
        lower, _ = np_discriminator(params, x, math.ceil(value), 16, TINY_NF)
        upper, _ = np_discriminator(params, x, math.floor(value), 16, TINY_NF)
        assert not np.allclose(got, lower, atol=1e-3) and not np.allclose(got, upper, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# Gradients through the level selection (training differentiates G and D, and D twice for the gradient penalty)


@pytest.mark.slow  # ~2.5 s: gradients through every level of the full graph
def test_gradients_through_the_level_selection(tf_session):
    """At lod 1.5 G's and D's gradients reach exactly the levels in use: the blocks finer than the lod get zero,
    the others non-zero; D's input gradient matches finite differences; the gradient penalty (a gradient of a
    gradient) differentiates to finite values (None only for the biases it does not depend on, as in the
    original)."""
    latents, labels, fake = build_tiny_generator('G', **WIDER)
    images, scores, _ = build_tiny_discriminator('D', **WIDER)
    rng = np.random.RandomState(27)
    randomize_scope(tf_session, 'G', rng)
    randomize_scope(tf_session, 'D', rng, bias_scale=0.2)
    lod_variable('G').load(1.5, tf_session)
    lod_variable('D').load(1.5, tf_session)
    g_vars = scope_variables('G', trainable_only=True)
    d_vars = scope_variables('D', trainable_only=True)
    input_grad = tf.gradients(tf.reduce_sum(scores), images)[0]
    penalty = tf.reduce_mean(tf.reduce_sum(tf.square(input_grad), axis=[1, 2, 3]))
    penalty_grads = [g for g in tf.gradients(penalty, d_vars) if g is not None]
    assert len(penalty_grads) == len(d_vars) - 3     # all but the biases of 4x4/Conv, Dense0 and Dense1
    feed = {latents: rng.randn(4, TINY_LATENT).astype(np.float32), labels: np.zeros((4, 0), np.float32),
            images: rng.uniform(-1, 1, size=(4, 16, 16, 1)).astype(np.float32)}
    grads = tf.gradients(tf.reduce_sum(fake), g_vars) + tf.gradients(tf.reduce_sum(scores), d_vars)
    for var, value in zip(g_vars + d_vars, tf_session.run(grads, feed)):
        name = var.op.name
        assert np.all(np.isfinite(value)), name
        unused = '/16x16/' in name or name.endswith('_lod0/weight') or name.endswith('_lod0/bias')
        assert np.all(value == 0) == unused, name
    input_value, penalty_values = tf_session.run([input_grad, penalty_grads], feed)
    assert all(np.all(np.isfinite(value)) for value in penalty_values)
    # Finite differences of D, summed in float64 from the float32 graph.
    # Along the gradient itself the derivative is largest against float32 noise (and a wrong gradient would
    # not predict it).
    direction = (input_value / np.linalg.norm(input_value)).astype(np.float32)
    step = 1e-2                                      # small enough to cross hardly any leaky-ReLU kink
    plus = tf_session.run(scores, {images: feed[images] + step * direction})
    minus = tf_session.run(scores, {images: feed[images] - step * direction})
    numeric = (np.sum(plus, dtype=np.float64) - np.sum(minus, dtype=np.float64)) / (2 * step)
    analytic = np.sum(input_value.astype(np.float64) * direction)
    assert abs(numeric - analytic) <= 1e-2 * abs(analytic), (numeric, analytic)   # measured: 0.2%


# ----------------------------------------------------------------------------------------------------------------
# The default 64x64 networks: variables


EXPECTED_G_VARIABLES = [
    ('lod', []),
    ('4x4/Dense/weight', [512, 8192]), ('4x4/Dense/bias', [512]),
    ('4x4/Conv/weight', [3, 3, 512, 512]), ('4x4/Conv/bias', [512]),
    ('ToRGB_lod4/weight', [1, 1, 512, 1]), ('ToRGB_lod4/bias', [1]),
    ('8x8/Conv0_up/weight', [3, 3, 512, 512]), ('8x8/Conv0_up/bias', [512]),
    ('8x8/Conv1/weight', [3, 3, 512, 512]), ('8x8/Conv1/bias', [512]),
    ('ToRGB_lod3/weight', [1, 1, 512, 1]), ('ToRGB_lod3/bias', [1]),
    ('16x16/Conv0_up/weight', [3, 3, 512, 512]), ('16x16/Conv0_up/bias', [512]),
    ('16x16/Conv1/weight', [3, 3, 512, 512]), ('16x16/Conv1/bias', [512]),
    ('ToRGB_lod2/weight', [1, 1, 512, 1]), ('ToRGB_lod2/bias', [1]),
    ('32x32/Conv0_up/weight', [3, 3, 512, 512]), ('32x32/Conv0_up/bias', [512]),
    ('32x32/Conv1/weight', [3, 3, 512, 512]), ('32x32/Conv1/bias', [512]),
    ('ToRGB_lod1/weight', [1, 1, 512, 1]), ('ToRGB_lod1/bias', [1]),
    ('64x64/Conv0_up/weight', [3, 3, 256, 512]), ('64x64/Conv0_up/bias', [256]),
    ('64x64/Conv1/weight', [3, 3, 256, 256]), ('64x64/Conv1/bias', [256]),
    ('ToRGB_lod0/weight', [1, 1, 256, 1]), ('ToRGB_lod0/bias', [1]),
]

EXPECTED_D_VARIABLES = [
    ('lod', []),
    ('FromRGB_lod0/weight', [1, 1, 1, 256]), ('FromRGB_lod0/bias', [256]),
    ('64x64/Conv0/weight', [3, 3, 256, 256]), ('64x64/Conv0/bias', [256]),
    ('64x64/Conv1_down/weight', [3, 3, 256, 512]), ('64x64/Conv1_down/bias', [512]),
    ('FromRGB_lod1/weight', [1, 1, 1, 512]), ('FromRGB_lod1/bias', [512]),
    ('32x32/Conv0/weight', [3, 3, 512, 512]), ('32x32/Conv0/bias', [512]),
    ('32x32/Conv1_down/weight', [3, 3, 512, 512]), ('32x32/Conv1_down/bias', [512]),
    ('FromRGB_lod2/weight', [1, 1, 1, 512]), ('FromRGB_lod2/bias', [512]),
    ('16x16/Conv0/weight', [3, 3, 512, 512]), ('16x16/Conv0/bias', [512]),
    ('16x16/Conv1_down/weight', [3, 3, 512, 512]), ('16x16/Conv1_down/bias', [512]),
    ('FromRGB_lod3/weight', [1, 1, 1, 512]), ('FromRGB_lod3/bias', [512]),
    ('8x8/Conv0/weight', [3, 3, 512, 512]), ('8x8/Conv0/bias', [512]),
    ('8x8/Conv1_down/weight', [3, 3, 512, 512]), ('8x8/Conv1_down/bias', [512]),
    ('FromRGB_lod4/weight', [1, 1, 1, 512]), ('FromRGB_lod4/bias', [512]),
    ('4x4/Conv/weight', [3, 3, 513, 512]), ('4x4/Conv/bias', [512]),
    ('4x4/Dense0/weight', [8192, 512]), ('4x4/Dense0/bias', [512]),
    ('4x4/Dense1/weight', [512, 1]), ('4x4/Dense1/bias', [1]),
]


def build_default_networks(label_size=0, **kwargs):
    latents = tf.placeholder(tf.float32, [None, 512])
    labels = tf.placeholder(tf.float32, [None, label_size])
    images = tf.placeholder(tf.float32, [None, 64, 64, 1])
    with tf.variable_scope('G'):
        fake = networks.G_paper(latents, labels, label_size=label_size, **kwargs)
    with tf.variable_scope('D'):
        scores, label_logits = networks.D_paper(images, label_size=label_size, **kwargs)
    return fake, scores, label_logits


def variable_list(scope, trainable_only=False):
    return [(relative_name(v, scope), v.shape.as_list()) for v in scope_variables(scope, trainable_only)]


def test_default_networks_variables(tf_session):
    fake, scores, label_logits = build_default_networks()
    assert fake.shape.as_list() == [None, 64, 64, 1]
    assert scores.shape.as_list() == [None, 1]
    assert label_logits.shape.as_list() == [None, 0]
    assert variable_list('G') == EXPECTED_G_VARIABLES
    assert variable_list('D') == EXPECTED_D_VARIABLES
    for scope, count in [('G', 22485765), ('D', 22493441)]:
        lod = scope_variables(scope)[0]
        assert relative_name(lod, scope) == 'lod'
        assert lod not in scope_variables(scope, trainable_only=True)
        assert lod.dtype.base_dtype == tf.float32
        trainable = scope_variables(scope, trainable_only=True)
        assert [relative_name(v, scope) for v in trainable] == [n for n, _ in variable_list(scope)[1:]]
        assert all(v.dtype.base_dtype == tf.float32 for v in trainable)
        assert sum(int(np.prod(v.shape.as_list())) for v in trainable) == count


def test_default_networks_unfused_variables(tf_session):
    build_default_networks(fused_scale=False)
    # Same names without the suffix.  Shapes: D's Conv1 has the fused layout already ([3, 3, in, out]); G's Conv0
    # is then an ordinary conv stored [3, 3, in, out], while the fused Conv0_up is stored [3, 3, out, in] (transposed-convolution layout),
    # which only shows where in != out, i.e. at 64x64: [3, 3, 512, 256] instead of [3, 3, 256, 512].
    expected_g = [(n.replace('/Conv0_up/', '/Conv0/'), s) for n, s in EXPECTED_G_VARIABLES]
    expected_g[expected_g.index(('64x64/Conv0/weight', [3, 3, 256, 512]))] = ('64x64/Conv0/weight', [3, 3, 512, 256])
    expected_d = [(n.replace('/Conv1_down/', '/Conv1/'), s) for n, s in EXPECTED_D_VARIABLES]
    assert variable_list('G') == expected_g
    assert variable_list('D') == expected_d
    assert not any('_up' in n or '_down' in n for n, _ in variable_list('G') + variable_list('D'))
    for scope, count in [('G', 22485765), ('D', 22493441)]:
        assert sum(int(np.prod(v.shape.as_list())) for v in scope_variables(scope, trainable_only=True)) == count


def test_default_networks_with_labels(tf_session):
    fake, scores, label_logits = build_default_networks(label_size=3)
    g = dict(variable_list('G'))
    d = dict(variable_list('D'))
    assert g['4x4/Dense/weight'] == [512 + 3, 8192]
    assert d['4x4/Dense1/weight'] == [512, 1 + 3]
    assert d['4x4/Dense1/bias'] == [1 + 3]
    assert scores.shape.as_list() == [None, 1]
    assert label_logits.shape.as_list() == [None, 3]
    assert sum(int(np.prod(v.shape.as_list())) for v in scope_variables('G', True)) == 22485765 + 3 * 8192
    assert sum(int(np.prod(v.shape.as_list())) for v in scope_variables('D', True)) == 22493441 + 3 * 512 + 3


def test_tiny_labels_shapes_and_values(tf_session):
    latents, labels, fake = build_tiny_generator('G', label_size=3)
    images, scores, label_logits = build_tiny_discriminator('D', label_size=3)
    assert only_variable('G/4x4/Dense/weight').shape.as_list() == [TINY_LATENT + 3, 16 * TINY_NF(1)]
    assert only_variable('D/4x4/Dense1/weight').shape.as_list() == [TINY_NF(0), 4]
    rng = np.random.RandomState(24)
    randomize_scope(tf_session, 'G', rng)
    randomize_scope(tf_session, 'D', rng)
    z = rng.randn(4, TINY_LATENT).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    imgs = tf_session.run(fake, {latents: z, labels: onehot})
    s, l = tf_session.run([scores, label_logits], {images: imgs})
    assert s.shape == (4, 1) and l.shape == (4, 3)
    # The labels reach the generator: other labels, other images.
    other = tf_session.run(fake, {latents: z, labels: onehot[::-1]})
    assert not np.allclose(imgs, other, atol=1e-4)


def test_lod_is_first_nontrainable_variable_of_tiny_networks(tf_session):
    build_tiny_generator('G')
    build_tiny_discriminator('D')
    tf_session.run(tf.global_variables_initializer())
    for scope in ['G', 'D']:
        lod = lod_variable(scope)
        assert lod.shape.as_list() == []
        assert lod not in tf.trainable_variables()
        assert tf_session.run(lod) == 0.0


@pytest.mark.parametrize('kwargs', [dict(resolution=12), dict(resolution=2), dict(graph_resolution=2),
                                    dict(graph_resolution=32), dict(graph_resolution=6)])
def test_bad_resolutions_rejected(tf_session, kwargs):
    with pytest.raises(ValueError):
        build_tiny_generator('G', **kwargs)
    with pytest.raises(ValueError):
        build_tiny_discriminator('D', **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Reduced-precision compute


def _run_or_skip_missing_kernel(session, fetches, feed, what):
    try:
        return session.run(fetches, feed)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError) as error:
        message = str(error)
        if 'kernel' in message.lower():
            pytest.skip('%s: this TensorFlow build (%s) has no CPU kernel for it: %s'
                        % (what, tf.__version__, message.splitlines()[0][:200]))
        raise


# Wider than TINY: with only two feature maps per pixel, pixel norm of a nearly-zero pixel amplifies float16
# rounding without bound, which says nothing about the network code.
WIDER = dict(fmap_base=64, fmap_max=16)


@pytest.mark.parametrize('dtype,tolerance', [('float16', 2e-2)])
def test_reduced_precision_generator(tf_session, dtype, tolerance):
    latents, labels, fake32 = build_tiny_generator('G', **WIDER)
    _, _, fake16 = build_tiny_generator('G', reuse=True, inputs=(latents, labels), dtype=dtype, **WIDER)
    assert len(scope_variables('G')) == 19                     # weights shared, still float32
    assert all(v.dtype.base_dtype == tf.float32 for v in scope_variables('G'))
    rng = np.random.RandomState(25)
    randomize_scope(tf_session, 'G', rng)
    feed = {latents: rng.randn(8, TINY_LATENT).astype(np.float32), labels: np.zeros((8, 0), np.float32)}
    lod = lod_variable('G')
    for value in [0.0, 0.5, 1.5]:
        lod.load(value, tf_session)
        ref = tf_session.run(fake32, feed)
        low = _run_or_skip_missing_kernel(tf_session, fake16, feed, 'G_paper(dtype=%r)' % dtype)
        assert low.dtype == np.float32 and low.shape == ref.shape
        assert_close(low, ref, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize('dtype,tolerance', [('float16', 2e-2)])
def test_reduced_precision_discriminator(tf_session, dtype, tolerance):
    images, scores32, _ = build_tiny_discriminator('D', **WIDER)
    with tf.variable_scope('D', reuse=True):
        scores16, _ = networks.D_paper(images, dtype=dtype, **dict(TINY, **WIDER))
    assert all(v.dtype.base_dtype == tf.float32 for v in scope_variables('D'))
    rng = np.random.RandomState(26)
    randomize_scope(tf_session, 'D', rng, bias_scale=0.2)
    feed = {images: rng.uniform(-1, 1, size=(8, 16, 16, 1)).astype(np.float32)}
    lod = lod_variable('D')
    for value in [0.0, 0.5, 1.5]:
        lod.load(value, tf_session)
        ref = tf_session.run(scores32, feed)
        low = _run_or_skip_missing_kernel(tf_session, scores16, feed, 'D_paper(dtype=%r)' % dtype)
        assert low.dtype == np.float32 and low.shape == ref.shape
        assert_close(low, ref, rtol=tolerance, atol=tolerance)
