"""The pix2pix networks of the original project: a U-Net generator (mask -> CT patch) and a PatchGAN discriminator.

Read top to bottom like the figure of the pix2pix paper (Isola et al., CVPR 2017): layers first, then the
generator (down 64 -> 1, up 1 -> 64, a skip at every level) and the discriminator (mask and patch -> 6x6 scores).
The layer rules are the original Keras script's (kernels N(0, 0.02), biases 0):

* Generator, level k = 1 (64x64, outermost) .. 6 (2x2, innermost), filters min(ngf * 2^(k-1), 8 ngf):
  down: 4x4 stride-2 'same' convolution; bias and no batch norm at the outermost and the innermost level,
        no bias and batch norm in between.  LeakyReLU 0.2 leads into the next level, but the skip keeps the
        pre-activation output.
  up:   ReLU of concat(down output, inner level's result) (of the down output alone at the innermost),
        4x4 stride-2 'valid' transposed convolution to the level's input channels, crop 1 pixel on every side;
        batch norm (no bias) except at the outermost (bias, no batch norm); dropout where the result is 8x8 or
        smaller.  Output tanh.
* Discriminator on concat(mask, patch): 4x4 stride-2 'same' convolutions ndf (bias, no batch norm), 2ndf,
  4ndf (no bias, batch norm); zero-pad 1 and a 4x4 stride-1 convolution to 8ndf (no bias, batch norm); each
  followed by LeakyReLU 0.2; zero-pad 1 and a 4x4 convolution to 1 channel (bias), sigmoid.

Batch norm and dropout always run as in training, at generation time too: batch norm normalises with the
statistics of the minibatch it is given (biased variance, epsilon 1.01e-5, gamma initialised N(1, 0.02)), and
dropout is the generator's only source of randomness (there is no latent), as in the pix2pix paper.  The
original's batch norm layers have moving averages (momentum 0.9) that its training never updates and nothing
reads, so they are not created here; trainable parameters are the same.

Variables are named by layer ('down1/weight', 'up6/gamma', 'conv4/beta', 'score/bias', ...) inside whatever
variable scope the caller opens ('G', 'D'); down_k and up_k belong to the same level k.  Graphs are NHWC.
"""
import numpy as np

from nodules.gan.networks import apply_bias, leaky_relu
from nodules.util.tfcompat import tf

KERNEL = 4             # every convolution of both networks is 4x4
INIT_STD = 0.02        # kernels N(0, 0.02), batch norm gamma N(1, 0.02)
BN_EPSILON = 1.01e-5   # the original's (Keras' fused batch norm wants at least 1.001e-5)
LEAKY_SLOPE = 0.2

# ----------------------------------------------------------------------------------------------------------------
# Layers


def _weight(shape, init_std):
    return tf.get_variable('weight', shape=shape, initializer=tf.random_normal_initializer(0.0, init_std))


def conv2d(x, filters, stride=2, padding='SAME', use_bias=True, init_std=INIT_STD):
    """4x4 convolution; 'SAME' pads as TensorFlow (and Keras) do, the extra pixel, if any, after."""
    w = _weight([KERNEL, KERNEL, x.shape.as_list()[-1], filters], init_std)
    x = tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding=padding, data_format='NHWC')
    return apply_bias(x) if use_bias else x


def conv2d_transpose_cropped(x, filters, use_bias=True, init_std=INIT_STD):
    """4x4 stride-2 'valid' transposed convolution (s -> 2s + 2), then 1 pixel cropped on every side (-> 2s).

    The kernel is stored [k, k, out, in], the transposed-convolution layout of TensorFlow and Keras.
    """
    _, size, _, channels = x.shape.as_list()
    w = _weight([KERNEL, KERNEL, filters, channels], init_std)
    full = 2 * size + KERNEL - 2
    output_shape = tf.stack([tf.shape(x)[0], full, full, filters])
    x = tf.nn.conv2d_transpose(x, w, output_shape, strides=[1, 2, 2, 1], padding='VALID', data_format='NHWC')
    x.set_shape([None, full, full, filters])
    x = x[:, 1:-1, 1:-1, :]
    return apply_bias(x) if use_bias else x


def zero_pad(x, pixels=1):
    return tf.pad(x, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]])


def batch_norm(x, epsilon=BN_EPSILON, init_std=INIT_STD):
    """Normalise every channel with the mean and biased variance of this minibatch (always: see the module doc)."""
    channels = x.shape.as_list()[-1]
    gamma = tf.get_variable('gamma', shape=[channels], initializer=tf.random_normal_initializer(1.0, init_std))
    beta = tf.get_variable('beta', shape=[channels], initializer=tf.zeros_initializer())
    # One fused op (and one for its gradient) instead of a dozen: in training mode it normalises with the
    # minibatch's mean and biased variance, as Keras' batch norm in the original does.
    return tf.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon, is_training=True, data_format='NHWC')[0]


def dropout(x, rate):
    """Inverted dropout as Keras does it: zero with probability `rate`, scale the rest by 1 / (1 - rate).

    Written out rather than tf.nn.dropout, whose arguments differ between TF 1.12 (keep_prob) and 2.x (rate).
    Its draws follow the graph seed (tf.set_random_seed): a graph built with the same seed repeats the same
    sequence of generations, and every evaluation within a run draws anew.
    """
    if rate == 0:
        return x
    keep = tf.cast(tf.random_uniform(tf.shape(x)) >= rate, x.dtype)
    return x * keep * (1.0 / (1.0 - rate))


def _record(layer_outputs, name, x):
    if layer_outputs is not None:
        layer_outputs[name] = x
    return x


def doubling_filters(step, base, max_filters):
    """Filters of step 1, 2, 3, ... of either network: base, 2 base, 4 base, ... capped at max_filters."""
    return min(base * 2 ** (step - 1), max_filters)


def _levels(resolution):
    """Number of stride-2 steps from resolution x resolution down to 1x1."""
    levels = int(np.log2(resolution))
    if resolution != 2 ** levels or levels < 1:
        raise ValueError('resolution must be a power of two >= 2, got %r' % (resolution,))
    return levels


def _check_input(x, resolution, channels, what):
    """x with its static shape set; a ValueError naming the input if it cannot have that shape."""
    expected = tf.TensorShape([None, resolution, resolution, channels])
    if not x.shape.is_compatible_with(expected):
        raise ValueError('%s must be [N, %d, %d, %d], got %s' % (what, resolution, resolution, channels, x.shape))
    x.set_shape(expected)
    return x


# ----------------------------------------------------------------------------------------------------------------
# Generator: U-Net


def G_unet(masks,                  # input A: binary masks scaled to [-1, 1], [N, resolution, resolution, mask_channels]
           num_channels=1,         # channels of the generated patch
           mask_channels=1,        # channels of the input mask
           resolution=64,          # input and output size; the U-Net has log2(resolution) levels
           ngf=128,                # filters of the outermost level
           max_filters=None,       # cap on filters per level (default 8 * ngf)
           dropout_rate=0.5,       # dropout at the up steps of dropout_max_size and smaller (0 = none)
           dropout_max_size=8,
           bn_epsilon=BN_EPSILON,
           init_std=INIT_STD,
           layer_outputs=None):    # optional dict: receives each layer's output tensor by name (for inspection)
    """Mask -> CT patch in [-1, 1], [N, resolution, resolution, num_channels]."""
    levels = _levels(resolution)
    max_filters = 8 * ngf if max_filters is None else max_filters
    x = _check_input(masks, resolution, mask_channels, 'masks')

    down_outputs = []  # pre-activation, outermost first: what the skips concatenate
    for level in range(1, levels + 1):
        inputs = x if level == 1 else leaky_relu(x, LEAKY_SLOPE)
        with tf.variable_scope('down%d' % level):
            x = _conv_step(inputs, doubling_filters(level, ngf, max_filters), batch_normed=1 < level < levels,
                           bn_epsilon=bn_epsilon, init_std=init_std)
        down_outputs.append(_record(layer_outputs, 'down%d' % level, x))

    for level in range(levels, 0, -1):
        inputs = x if level == levels else tf.concat([down_outputs[level - 1], x], axis=-1)
        filters = num_channels if level == 1 else doubling_filters(level - 1, ngf, max_filters)  # as level's input
        size = resolution >> (level - 1)  # of this up step's output
        with tf.variable_scope('up%d' % level):
            x = _up_step(tf.nn.relu(inputs), filters, batch_normed=level > 1,
                         dropout_rate=dropout_rate if size <= dropout_max_size else 0,
                         bn_epsilon=bn_epsilon, init_std=init_std)
        _record(layer_outputs, 'up%d' % level, x)
    return tf.tanh(x)


def _conv_step(x, filters, batch_normed, bn_epsilon, init_std, stride=2, padding='SAME'):
    """A convolution with either a bias or batch norm after it (a bias before batch norm would cancel out)."""
    x = conv2d(x, filters, stride=stride, padding=padding, use_bias=not batch_normed, init_std=init_std)
    return batch_norm(x, bn_epsilon, init_std) if batch_normed else x


def _up_step(x, filters, batch_normed, dropout_rate, bn_epsilon, init_std):
    x = conv2d_transpose_cropped(x, filters, use_bias=not batch_normed, init_std=init_std)
    if batch_normed:
        x = batch_norm(x, bn_epsilon, init_std)
    return dropout(x, dropout_rate)


# ----------------------------------------------------------------------------------------------------------------
# Discriminator: PatchGAN


def D_patchgan(masks,              # input A, [N, resolution, resolution, mask_channels]
               patches,            # input B (real or generated), [N, resolution, resolution, num_channels]
               num_channels=1,
               mask_channels=1,
               resolution=64,
               ndf=128,            # filters of the first convolution
               strided_layers=3,   # stride-2 convolutions before the padded stride-1 one
               max_filters=None,   # cap on filters per layer (default 8 * ndf)
               bn_epsilon=BN_EPSILON,
               init_std=INIT_STD,
               layer_outputs=None):
    """Probability that each patch of the (mask, patch) pair is real: [N, S, S, 1], S = 6 for 64x64 inputs.

    Every score sees a 70x70 window of the input (the pix2pix paper's "70x70 PatchGAN").
    """
    max_filters = 8 * ndf if max_filters is None else max_filters
    x = tf.concat([_check_input(masks, resolution, mask_channels, 'masks'),
                   _check_input(patches, resolution, num_channels, 'patches')], axis=-1)
    for layer in range(1, strided_layers + 1):
        with tf.variable_scope('conv%d' % layer):
            x = leaky_relu(_conv_step(x, doubling_filters(layer, ndf, max_filters), batch_normed=layer > 1,
                                      bn_epsilon=bn_epsilon, init_std=init_std), LEAKY_SLOPE)
        _record(layer_outputs, 'conv%d' % layer, x)
    layer = strided_layers + 1
    with tf.variable_scope('conv%d' % layer):
        x = leaky_relu(_conv_step(zero_pad(x), doubling_filters(layer, ndf, max_filters), batch_normed=True,
                                  bn_epsilon=bn_epsilon, init_std=init_std, stride=1, padding='VALID'), LEAKY_SLOPE)
    _record(layer_outputs, 'conv%d' % layer, x)
    with tf.variable_scope('score'):
        x = tf.sigmoid(conv2d(zero_pad(x), 1, stride=1, padding='VALID', use_bias=True, init_std=init_std))
    return _record(layer_outputs, 'score', x)


