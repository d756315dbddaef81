"""The progressive-growing GAN networks of Karras et al. (ICLR 2018), "G_paper" and "D_paper".

Read top to bottom like the paper's figure: layers first, then the generator (latent -> 4x4 -> ... -> image) and
the discriminator (image -> ... -> 4x4 -> score).  Variable names, shapes and creation order are those of the
original PGGAN code, so its published pickles load unchanged.

The numbers are the original's to the last bit, not just to float precision.  Our graphs are NHWC (TensorFlow's
CPU kernels need it and its layout optimizer converts for GPUs) where the original's are NCHW, so wherever the
layout could change the arithmetic we keep the original's order:
- the reshape after the generator's first dense layer and the flatten before the discriminator's first dense
  layer use channel-first order (the order of the stored weights);
- means over channels (pixel norm, minibatch stddev) are taken over a channel-first view: TensorFlow orders
  the sum over a middle axis differently from the sum over the last (contiguous) axis, and they round differently;
- the resolution is chosen with tf.cond on lod, as in the original's "recursive" structure: at an integer lod the
  image of that resolution is taken as it is, a fractional lod blends two resolutions by the original's formula,
  and resolutions that lod does not reach are not computed.

Names: `res` is log2 of a resolution (2 for 4x4), `lod` the level of detail at which a resolution is shown as it
is (resolution_log2 - res), `lod_in` the networks' current lod.

`graph_resolution` builds a network that works at a lower resolution than its full size: the generator then
emits (and the discriminator takes) images of that size.  Training uses it so that it only computes the
resolution being trained; inference leaves it at the full resolution.
"""
import numpy as np

from nodules.util import values
from nodules.util.tfcompat import tf

# ----------------------------------------------------------------------------------------------------------------
# Layers


def get_weight(shape, gain=np.sqrt(2), use_wscale=False, fan_in=None):
    """He-initialised weight; with use_wscale the stored variable is N(0, 1) and scaled at run time
    (equalized learning rate), so stored weights are the unscaled ones."""
    if fan_in is None:
        fan_in = np.prod(shape[:-1])
    std = gain / np.sqrt(fan_in)
    if use_wscale:
        wscale = tf.constant(np.float32(std), name='wscale')
        return tf.get_variable('weight', shape=shape, initializer=tf.random_normal_initializer()) * wscale
    return tf.get_variable('weight', shape=shape, initializer=tf.random_normal_initializer(0, std))


# Reduced precision: only the multiply-adds of convolutions and dense layers run in `dtype` (bfloat16 or
# float16); their results, biases, activations and normalisations stay float32, which keeps 8-bit outputs
# within a grey level of float32 while the expensive part runs at the faster precision.


def _in_precision(x, w, dtype):
    return tf.cast(x, dtype), tf.cast(w, dtype)


def dense(x, fmaps, gain=np.sqrt(2), use_wscale=False, dtype='float32'):
    if len(x.shape) > 2:
        x = tf.reshape(x, [-1, int(np.prod(x.shape.as_list()[1:]))])
    w = get_weight([x.shape.as_list()[1], fmaps], gain=gain, use_wscale=use_wscale)
    return tf.cast(tf.matmul(*_in_precision(x, w, dtype)), tf.float32)


def pad_edges(x, radius):
    """NHWC x with `radius` more pixels on every side of every feature map, mirrored from the inside including the
    edge pixel (for one pixel: the edge pixel repeated).  Layers that pad this way instead of with zeros see no dark
    frame around the image, which a generator otherwise learns to draw (or to undo) as a bright or dark border."""
    return tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode='SYMMETRIC')


def conv2d(x, fmaps, kernel, gain=np.sqrt(2), use_wscale=False, dtype='float32', edge_padding=False):
    """Stride-1 convolution to `fmaps` maps, same size: zero padding, or with edge_padding that of pad_edges."""
    w = get_weight([kernel, kernel, x.shape.as_list()[-1], fmaps], gain=gain, use_wscale=use_wscale)
    padding = 'SAME'
    if edge_padding and kernel > 1:
        x, padding = pad_edges(x, kernel // 2), 'VALID'
    x, w = _in_precision(x, w, dtype)
    return tf.cast(tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding=padding, data_format='NHWC'), tf.float32)


def apply_bias(x):
    return x + tf.get_variable('bias', shape=[x.shape.as_list()[-1]], initializer=tf.zeros_initializer())


def leaky_relu(x, alpha=0.2):
    return tf.maximum(x * alpha, x)


def channel_mean(x):
    """Mean over the channels of [N, C] vectors or NHWC maps, keeping the axis, summed in the original's order.

    The original reduces axis 1 of NCHW.  TensorFlow adds up a middle axis in another order than the last one
    (TF 1.12: channel after channel; TF 2.x: four interleaved partial sums; the last axis: vectorised partial
    sums), so the NHWC last-axis mean differs in the last bit.  Maps are therefore viewed as [N, C, H*W], the
    reduction the original's [N, C, H, W] axis-1 mean comes down to (one transpose; its cost is measured by
    benchmarks/bench_inference.py).
    """
    if x.shape.ndims == 2:  # [N, C]: channels are the last axis in both layouts
        return tf.reduce_mean(x, axis=1, keepdims=True)
    _, height, width, channels = x.shape.as_list()
    channel_first = tf.transpose(tf.reshape(x, [-1, height * width, channels]), [0, 2, 1])
    return tf.reshape(tf.reduce_mean(channel_first, axis=1), [-1, height, width, 1])


def pixel_norm(x, epsilon=1e-8):
    """Normalise every pixel's feature vector to unit average square."""
    return x * tf.rsqrt(channel_mean(tf.square(x)) + epsilon)


def upscale2d(x, factor=2):
    """Nearest-neighbour upscaling of NHWC images."""
    if factor == 1:
        return x
    _, height, width, channels = x.shape.as_list()
    x = tf.reshape(x, [-1, height, 1, width, 1, channels])
    x = tf.tile(x, [1, 1, factor, 1, factor, 1])
    return tf.reshape(x, [-1, height * factor, width * factor, channels])


def downscale2d(x, factor=2):
    """Box-filter (average) downscaling of NHWC images."""
    if factor == 1:
        return x
    ksize = [1, factor, factor, 1]
    return tf.nn.avg_pool(x, ksize=ksize, strides=ksize, padding='VALID', data_format='NHWC')


BINOMIAL_1D = (1.0, 2.0, 1.0)


def blur2d(x, taps=BINOMIAL_1D, edge_padding=False):
    """Low-pass filter every feature map of NHWC x with the separable kernel taps x taps, normalised to sum 1
    (same size; zero padding, or with edge_padding that of pad_edges).  Next to a resampling step it keeps the
    step's blocks (nearest-neighbour up-sampling) and aliasing (down-sampling) out of the features: without it
    small generators learn a lattice at the periods of their up-sampling steps.

    One ordinary single-channel convolution with the feature maps folded into the batch, rather than a depthwise
    convolution: the gradient penalty differentiates D twice, and TensorFlow 1.12 has no second derivative of
    depthwise convolutions (written as sums of shifted copies instead, a step of the demo networks took 2.8x as
    long as without the blur)."""
    weights = np.asarray(taps, dtype=np.float64) / np.sum(taps)
    radius = len(weights) // 2
    kernel = tf.constant(np.outer(weights, weights)[:, :, np.newaxis, np.newaxis], dtype=x.dtype)
    _, height, width, channels = x.shape.as_list()
    maps = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, height, width, 1])
    maps = tf.pad(maps, [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                  mode='SYMMETRIC' if edge_padding else 'CONSTANT')
    maps = tf.nn.conv2d(maps, kernel, strides=[1, 1, 1, 1], padding='VALID', data_format='NHWC')
    return tf.transpose(tf.reshape(maps, [-1, channels, height, width]), [0, 2, 3, 1])


def _fused_kernel(w):
    """Pad a 3x3 kernel to 5x5 and sum its four shifted 4x4 windows: one stride-2 op then does the
    resampling and the convolution together.  The add_n keeps this order only in sessions made with
    tfutil.session_config (Grappler's memory optimizer would reorder it from run to run)."""
    w = tf.pad(w, [[1, 1], [1, 1], [0, 0], [0, 0]], mode='CONSTANT')
    return tf.add_n([w[1:, 1:], w[:-1, 1:], w[1:, :-1], w[:-1, :-1]])


def upscale2d_conv2d(x, fmaps, kernel, gain=np.sqrt(2), use_wscale=False, dtype='float32', edge_padding=False):
    """Nearest upscale x2 followed by a conv, as one transposed convolution.  The variable is stored
    [k, k, out, in] (the transposed-convolution filter layout) with fan-in k*k*in.

    With edge_padding the up-scaled image is padded as pad_edges does: the input gets one edge pixel more on
    every side (which up-scales to the same two-pixel copies of the edge), the transposed convolution runs
    without padding, and the three outer output pixels it then adds on each side (one of SAME's implicit
    padding, two from the added input pixel) are cropped."""
    _, height, width, channels = x.shape.as_list()
    w = get_weight([kernel, kernel, fmaps, channels], gain=gain, use_wscale=use_wscale,
                   fan_in=kernel * kernel * channels)
    x, w = _in_precision(x, _fused_kernel(w), dtype)
    if edge_padding:
        x = pad_edges(x, 1)
        output_shape = tf.stack([tf.shape(x)[0], height * 2 + 6, width * 2 + 6, fmaps])
        x = tf.nn.conv2d_transpose(x, w, output_shape, strides=[1, 2, 2, 1], padding='VALID', data_format='NHWC')
        x = x[:, 3:-3, 3:-3]
    else:
        output_shape = tf.stack([tf.shape(x)[0], height * 2, width * 2, fmaps])
        x = tf.nn.conv2d_transpose(x, w, output_shape, strides=[1, 2, 2, 1], padding='SAME', data_format='NHWC')
    x.set_shape([None, height * 2, width * 2, fmaps])
    return tf.cast(x, tf.float32)


def conv2d_downscale2d(x, fmaps, kernel, gain=np.sqrt(2), use_wscale=False, dtype='float32'):
    """A conv followed by 2x2 average downscaling, as one stride-2 convolution."""
    w = get_weight([kernel, kernel, x.shape.as_list()[-1], fmaps], gain=gain, use_wscale=use_wscale)
    x, w = _in_precision(x, _fused_kernel(w) * 0.25, dtype)
    return tf.cast(tf.nn.conv2d(x, w, strides=[1, 2, 2, 1], padding='SAME', data_format='NHWC'), tf.float32)


def minibatch_stddev_layer(x, group_size=4):
    """Append one feature map: the average standard deviation of features over a group of samples.

    Sample n belongs to group n mod (N / G) (the minibatch is split as [G, N/G]); variance is the biased one.
    """
    group_size = tf.minimum(group_size, tf.shape(x)[0])
    _, height, width, channels = x.shape.as_list()
    y = tf.reshape(x, [group_size, -1, height, width, channels])
    y -= tf.reduce_mean(y, axis=0, keepdims=True)
    y = tf.reduce_mean(tf.square(y), axis=0)
    y = tf.sqrt(y + 1e-8)
    y = tf.reduce_mean(tf.transpose(y, [0, 3, 1, 2]), axis=[1, 2, 3])  # over C, H, W in the original's order
    y = tf.tile(tf.reshape(y, [-1, 1, 1, 1]), [group_size, height, width, 1])
    return tf.concat([x, y], axis=-1)


def lerp(a, b, t):
    """a + (b - a) * t: the fade-in between two resolutions, written as the original writes it (same rounding)."""
    return a + (b - a) * t


def select(cases, default):
    """The value of the first (condition, make_value) pair whose condition holds, else default(): nested tf.cond,
    so only the chosen branch is computed.  Branches are built in the order given (variables created inside
    them are created in that order)."""
    if not cases:
        return default()
    (condition, make_value), rest = cases[0], cases[1:]
    return tf.cond(condition, make_value, lambda: select(rest, default))


def channels_last_from_first(x, channels, size):
    """[N, C*size*size] laid out channel-first (as the original NCHW weights expect) -> NHWC [N, size, size, C]."""
    return tf.transpose(tf.reshape(x, [-1, channels, size, size]), [0, 2, 3, 1])


def flatten_channel_first(x):
    """NHWC -> [N, C*H*W] in channel-first order (index c*H*W + h*W + w), matching the original weights."""
    _, height, width, channels = x.shape.as_list()
    return tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, channels * height * width])


def feature_maps(fmap_base, fmap_decay, fmap_max):
    """nf(stage): the number of feature maps at a stage (stage 1 is 4x4, stage 2 is 8x8, ...)."""
    return lambda stage: min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


def _check_graph_resolution(resolution, graph_resolution):
    if not values.is_power_of_two(resolution):
        raise ValueError('resolution must be a power of two >= 4, got %r' % resolution)
    graph_resolution = graph_resolution or resolution
    if not values.is_power_of_two(graph_resolution, maximum=resolution):
        raise ValueError('graph_resolution must be a power of two in [4, %d], got %r'
                         % (resolution, graph_resolution))
    return int(resolution).bit_length() - 1, int(graph_resolution).bit_length() - 1


# ----------------------------------------------------------------------------------------------------------------
# Generator


def G_paper(latents_in, labels_in,
            num_channels=1,             # 1 for grayscale CT
            resolution=64,              # output size
            label_size=0,               # width of the one-hot label input, 0 = unconditional
            fmap_base=8192,             # feature maps: nf(stage) = min(fmap_base / 2^(stage*fmap_decay), fmap_max)
            fmap_decay=1.0,
            fmap_max=512,
            latent_size=None,           # default nf(0)
            normalize_latents=True,     # pixel-norm the input vector
            use_wscale=True,            # equalized learning rate
            use_pixelnorm=True,         # pixel-wise feature normalisation after every conv
            pixelnorm_epsilon=1e-8,
            use_leakyrelu=True,         # leaky ReLU (slope 0.2) instead of ReLU
            dtype='float32',            # precision of conv/dense multiply-adds: 'bfloat16'/'float16' are faster
            fused_scale=True,           # one transposed conv instead of upscale + conv
            blur_resampling=False,      # binomial [1,2,1] blur after every up-scaling (not in the original)
            edge_padding=False,         # pad convolutions and blurs with edge pixels, not zeros (not in the original)
            graph_resolution=None,      # build only up to this resolution and output images of this size
            **_ignored):                # settings of other code paths found in old pickles (e.g. `structure`)
    resolution_log2, graph_log2 = _check_graph_resolution(resolution, graph_resolution)
    nf = feature_maps(fmap_base, fmap_decay, fmap_max)
    if latent_size is None:
        latent_size = nf(0)
    act = leaky_relu if use_leakyrelu else tf.nn.relu
    blur = (lambda x: blur2d(x, edge_padding=edge_padding)) if blur_resampling else (lambda x: x)
    PN = (lambda x: pixel_norm(x, epsilon=pixelnorm_epsilon)) if use_pixelnorm else (lambda x: x)

    # The multiply-add layers of the blocks, with this network's settings.
    conv = lambda x, fmaps: conv2d(x, fmaps, kernel=3, use_wscale=use_wscale, dtype=dtype, edge_padding=edge_padding)
    conv_up = lambda x, fmaps: upscale2d_conv2d(x, fmaps, kernel=3, use_wscale=use_wscale, dtype=dtype,
                                                edge_padding=edge_padding)

    latents_in.set_shape([None, latent_size])
    labels_in.set_shape([None, label_size])
    combo_in = tf.concat([latents_in, labels_in], axis=1)
    lod_in = tf.get_variable('lod', initializer=np.float32(0.0), trainable=False)

    def block(x, res):
        with tf.variable_scope('%dx%d' % (2 ** res, 2 ** res)):
            if res == 2:
                if normalize_latents:
                    x = pixel_norm(x, epsilon=pixelnorm_epsilon)
                with tf.variable_scope('Dense'):
                    # gain sqrt(2)/4 as in the original (it matched an older Theano implementation).
                    x = dense(x, fmaps=nf(res - 1) * 16, gain=np.sqrt(2) / 4, use_wscale=use_wscale, dtype=dtype)
                    x = channels_last_from_first(x, nf(res - 1), 4)
                    x = PN(act(apply_bias(x)))
                with tf.variable_scope('Conv'):
                    x = PN(act(apply_bias(conv(x, nf(res - 1)))))
            else:
                if fused_scale:
                    with tf.variable_scope('Conv0_up'):
                        x = PN(act(apply_bias(blur(conv_up(x, nf(res - 1))))))
                else:
                    x = blur(upscale2d(x))
                    with tf.variable_scope('Conv0'):
                        x = PN(act(apply_bias(conv(x, nf(res - 1)))))
                with tf.variable_scope('Conv1'):
                    x = PN(act(apply_bias(conv(x, nf(res - 1)))))
            return x

    def torgb(x, res):
        with tf.variable_scope('ToRGB_lod%d' % (resolution_log2 - res)):
            return apply_bias(conv2d(x, fmaps=num_channels, kernel=1, gain=1, use_wscale=use_wscale))

    def grow(x, res, coarser_rgb):
        """The output image, from the features entering resolution 2**res on: this resolution's image is taken as
        it is at lod_in == lod, faded towards the coarser resolution's image for lod < lod_in < lod + 1, and left
        to the finer resolutions for lod_in < lod."""
        lod = resolution_log2 - res
        x = block(x, res)
        rgb = torgb(x, res)  # here, before the branches, so that variables are created in the original's order
        to_graph_size = lambda image: upscale2d(image, 2 ** (graph_log2 - res))
        finer, fade = [], []
        if res < graph_log2:
            finer = [(lod_in < lod, lambda: grow(x, res + 1, rgb))]
        if res > 2:
            fade = [(lod_in > lod, lambda: to_graph_size(lerp(rgb, upscale2d(coarser_rgb), lod_in - lod)))]
        return select(finer + fade, lambda: to_graph_size(rgb))

    images_out = grow(combo_in, 2, None)
    return tf.identity(images_out, name='images_out')


# ----------------------------------------------------------------------------------------------------------------
# Discriminator


def D_paper(images_in,                  # NHWC [N, graph_resolution, graph_resolution, num_channels]
            num_channels=1,
            resolution=64,
            label_size=0,               # >0: auxiliary classifier outputs (AC-GAN)
            fmap_base=8192,
            fmap_decay=1.0,
            fmap_max=512,
            use_wscale=True,
            mbstd_group_size=4,         # minibatch stddev group size; 0 or 1 turns it off
            dtype='float32',            # precision of conv/dense multiply-adds, as in G_paper
            fused_scale=True,           # one stride-2 conv instead of conv + downscale
            blur_resampling=False,      # binomial [1,2,1] blur before every down-scaling (not in the original)
            graph_resolution=None,      # take images of this size and build only the blocks they need
            **_ignored):
    resolution_log2, graph_log2 = _check_graph_resolution(resolution, graph_resolution)
    nf = feature_maps(fmap_base, fmap_decay, fmap_max)
    act = leaky_relu
    blur = blur2d if blur_resampling else (lambda x: x)

    conv = lambda x, fmaps: conv2d(x, fmaps, kernel=3, use_wscale=use_wscale, dtype=dtype)
    conv_down = lambda x, fmaps: conv2d_downscale2d(x, fmaps, kernel=3, use_wscale=use_wscale, dtype=dtype)

    images_in.set_shape([None, 2 ** graph_log2, 2 ** graph_log2, num_channels])
    lod_in = tf.get_variable('lod', initializer=np.float32(0.0), trainable=False)

    def fromrgb(res):
        """FromRGB of the input box-downscaled to resolution 2**res in one step, as the original does.  Each
        resolution's layer is built in two branches (the fade of the finer resolution, and this one's own input):
        whichever is built first creates its variables, in the original's order."""
        images = downscale2d(images_in, 2 ** (graph_log2 - res))
        with tf.variable_scope('FromRGB_lod%d' % (resolution_log2 - res), reuse=tf.AUTO_REUSE):
            return act(apply_bias(conv2d(images, fmaps=nf(res - 1), kernel=1, use_wscale=use_wscale)))

    def block(x, res):
        with tf.variable_scope('%dx%d' % (2 ** res, 2 ** res)):
            if res >= 3:
                with tf.variable_scope('Conv0'):
                    x = act(apply_bias(conv(x, nf(res - 1))))
                if fused_scale:
                    with tf.variable_scope('Conv1_down'):
                        x = act(apply_bias(conv_down(blur(x), nf(res - 2))))
                else:
                    with tf.variable_scope('Conv1'):
                        x = act(apply_bias(conv(x, nf(res - 2))))
                    x = downscale2d(blur(x))
            else:
                if mbstd_group_size > 1:
                    x = minibatch_stddev_layer(x, mbstd_group_size)
                with tf.variable_scope('Conv'):
                    x = act(apply_bias(conv(x, nf(res - 1))))
                with tf.variable_scope('Dense0'):
                    x = flatten_channel_first(x)
                    x = act(apply_bias(dense(x, fmaps=nf(res - 2), use_wscale=use_wscale, dtype=dtype)))
                with tf.variable_scope('Dense1'):
                    x = apply_bias(dense(x, fmaps=1 + label_size, gain=1, use_wscale=use_wscale))
            return x

    def grow(res):
        """Features leaving resolution 2**res: its input comes from the finer resolutions when lod_in < lod, else
        from the image; for lod < lod_in < lod + 1 its output fades towards the coarser FromRGB."""
        lod = resolution_log2 - res
        finer = [(lod_in < lod, lambda: grow(res + 1))] if res < graph_log2 else []
        features = block(select(finer, lambda: fromrgb(res)), res)
        fade = [(lod_in > lod, lambda: lerp(features, fromrgb(res - 1), lod_in - lod))] if res > 2 else []
        return select(fade, lambda: features)

    combo_out = grow(2)
    scores_out = tf.identity(combo_out[:, :1], name='scores_out')
    labels_out = tf.identity(combo_out[:, 1:], name='labels_out')
    return scores_out, labels_out
