"""A small convolutional network that tells nodule subtypes apart from 2-D grey patches, and how it is trained.

Architecture (shown for 64x64 patches and the default widths 32, 64, 128; every convolution is 3x3, 'same'
padding, no bias, followed by batch normalisation and ReLU):

    uint8 patch [N, 64, 64]  ->  x / 127.5 - 1, NHWC [N, 64, 64, 1]
    patchify stem: space-to-depth 4x4                   -> [N, 16, 16, 16]   (lossless rearrangement)
    stage 1: conv 16 -> 32, conv 32 -> 32                -> [N, 16, 16, 32]
             2x2 max-pool                                -> [N,  8,  8, 32]
    stage 2: conv 32 -> 64, conv 64 -> 64                -> [N,  8,  8, 64]
             2x2 max-pool                                -> [N,  4,  4, 64]
    stage 3: conv 64 -> 128, conv 128 -> 128             -> [N,  4,  4, 128]
    global average pool, dropout (0.5), dense 128 -> classes, softmax

About 0.29 M weights and 10.6 M multiply-adds per 64x64 patch.  Why this shape: a convolution with one input
channel at full resolution does almost no arithmetic per byte it moves, so it runs far below the CPU's
matrix-multiply speed; the space-to-depth stem (the 4x4 "patchify" stem of ConvNeXt, without its extra layer)
hands the first convolution 16 channels at 16x16 instead, so that every convolution is a matrix product with at
least 144 multiply-adds per output and 32 outputs per pixel, which CPUs run near their GEMM speed
(benchmarks/bench_classify.py).  A 64x64 lung-window patch of a subcentimetre nodule at about 0.7 mm per pixel
puts the nodule in the middle few cells of the 16x16 grid, still seen at full detail through the 16 stem channels.
Twice the widths (64, 128, 256) cost three times as much and classified the shipped phantoms no better.

Training: Adam (learning rate 1e-3, beta1 0.9, beta2 0.999), minibatches of 64 drawn as successive seeded
permutations of the training set, softmax cross-entropy optionally weighted per class so that every class counts
equally however many patches it has (`class_weighting='balanced'`, weight n / (classes * n_class)), batch
normalisation with moving averages (momentum 0.9) for evaluation, dropout before the last layer.  After every
epoch the (equally weighted) cross-entropy on a held-out validation set decides early stopping: training stops
after `patience` epochs without improvement and the best epoch's weights are restored.

Every random choice (initial weights, minibatch order, dropout masks, augmentation) is drawn from NumPy's
RandomState with the given seed and fed to the graph, so the same seed gives the same draws on every TensorFlow
version, and a run repeats itself exactly on the same machine.
"""
import collections

import numpy as np

from nodules.gan import tfutil
from nodules.util.tfcompat import native_stderr_captured, tf

DEFAULT_WIDTHS = (32, 64, 128)
STEM_BLOCK = 4           # space-to-depth block size of the stem
CONVS_PER_STAGE = 2
BATCH_SIZE = 64
EVAL_BATCH_SIZE = 256
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3

ConvSpec = collections.namedtuple('ConvSpec', 'name in_channels out_channels size')


def conv_layers(resolution, widths=DEFAULT_WIDTHS, convs_per_stage=CONVS_PER_STAGE):
    """The convolutions of the network for square patches of `resolution` pixels, in order (one home for the
    architecture: the graph is built from it and the benchmark counts its arithmetic from it)."""
    if resolution < 4 * STEM_BLOCK or resolution % (STEM_BLOCK * 2 ** (len(widths) - 1)):
        raise ValueError('the classifier needs patches of at least %d pixels, divisible by %d; got %d'
                         % (4 * STEM_BLOCK, STEM_BLOCK * 2 ** (len(widths) - 1), resolution))
    size, channels, layers = resolution // STEM_BLOCK, STEM_BLOCK ** 2, []
    for stage, width in enumerate(widths):
        for index in range(convs_per_stage):
            layers.append(ConvSpec('stage%d/conv%d' % (stage + 1, index), channels, width, size))
            channels = width
        if stage < len(widths) - 1:
            size //= 2
    return layers


def multiply_adds(resolution, num_classes, widths=DEFAULT_WIDTHS):
    """Forward multiply-adds per patch of the convolutions and the dense layer (element-wise work not counted)."""
    convs = sum(layer.size ** 2 * 9 * layer.in_channels * layer.out_channels
                for layer in conv_layers(resolution, widths))
    return convs + widths[-1] * num_classes


def training_flops(resolution, num_classes, widths=DEFAULT_WIDTHS):
    """Floating-point operations of one training step per patch: forward, weight gradients and input gradients
    (each as many multiply-adds as the forward pass of its layer; the first layer needs no input gradient)."""
    first = conv_layers(resolution, widths)[0]
    first_macs = first.size ** 2 * 9 * first.in_channels * first.out_channels
    forward = multiply_adds(resolution, num_classes, widths)
    return 2.0 * (3 * forward - first_macs)


def num_weights(resolution, num_classes, widths=DEFAULT_WIDTHS):
    layers = conv_layers(resolution, widths)
    return (sum(9 * l.in_channels * l.out_channels + 2 * l.out_channels for l in layers)
            + widths[-1] * num_classes + num_classes)


# Float32 values held while training, per weight (the weight, its gradient and Adam's two moments) and per
# activation of one patch (the outputs of convolution, batch normalisation and ReLU and their gradients).
WEIGHT_COPIES = 4
ACTIVATION_COPIES = 6


def training_bytes(resolution, num_classes, widths=DEFAULT_WIDTHS, batch_size=BATCH_SIZE):
    """About how many bytes training holds: meant to refuse widths and minibatches that cannot fit, not to
    predict the peak."""
    activations = sum(layer.size ** 2 * layer.out_channels for layer in conv_layers(resolution, widths))
    return 4 * (WEIGHT_COPIES * num_weights(resolution, num_classes, widths)
                + ACTIVATION_COPIES * max(batch_size, EVAL_BATCH_SIZE) * activations)


class Classifier(object):
    """The network in its own graph and session: `fit` trains from freshly seeded weights, `predict` gives class
    probabilities.  One instance serves many training runs (folds, arms, repeats): each `fit` starts anew."""

    def __init__(self, resolution, num_classes, widths=DEFAULT_WIDTHS, convs_per_stage=CONVS_PER_STAGE,
                 dropout=0.5, learning_rate=1e-3, num_threads=0):
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.dropout = float(dropout)
        self.layers = conv_layers(self.resolution, self.widths, convs_per_stage)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._build(learning_rate)
        with native_stderr_captured():  # CUDA probing on GPU-less machines logs errors that are not ours
            self.session = tf.Session(graph=self.graph, config=tfutil.session_config(num_threads))

    # -- graph ---------------------------------------------------------------------------------------------------

    def _build(self, learning_rate):
        res, features = self.resolution, self.widths[-1]
        self.images_in = tf.placeholder(tf.uint8, [None, res, res], name='images')
        self.labels_in = tf.placeholder(tf.int32, [None], name='labels')
        self.loss_weights_in = tf.placeholder(tf.float32, [None], name='loss_weights')
        # Dropout as a fed mask (already divided by the keep rate): drawn in NumPy, so seeded on every stack.
        self.dropout_mask_in = tf.placeholder(tf.float32, [None, features], name='dropout_mask')

        with tf.variable_scope('classifier'):
            train_logits, _, bn_updates = self._forward(self.images_in, training=True)
        with tf.variable_scope('classifier', reuse=True):
            eval_logits, self.eval_features, _ = self._forward(self.images_in, training=False)
        # Weights and moving statistics: what initialisation draws and early stopping keeps (not Adam's slots).
        self.model_vars = tf.global_variables()

        def weighted_cross_entropy(logits):
            per_patch = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.labels_in, logits=logits)
            return tf.reduce_sum(per_patch * self.loss_weights_in) / tf.reduce_sum(self.loss_weights_in)

        self.train_loss = weighted_cross_entropy(train_logits)
        self.eval_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.labels_in, logits=eval_logits)
        self.probabilities = tf.nn.softmax(eval_logits)
        optimizer = tf.train.AdamOptimizer(learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8)
        with tf.control_dependencies(bn_updates):
            self.train_op = optimizer.minimize(self.train_loss)

        self.reset_op = tf.variables_initializer(tf.global_variables())  # weights, moving stats, Adam's slots
        self._value_in = [tf.placeholder(v.dtype.base_dtype, v.shape) for v in self.model_vars]
        self._assign_op = tf.group(*[tf.assign(v, p) for v, p in zip(self.model_vars, self._value_in)])
        self.graph.finalize()

    def _forward(self, images, training):
        """(logits, penultimate features [N, widths[-1]] (the pooled activations the dense layer reads), and in
        training mode the moving-average updates of batch normalisation)."""
        x = tf.cast(images, tf.float32) * (1.0 / 127.5) - 1.0
        x = tf.space_to_depth(x[:, :, :, tf.newaxis], STEM_BLOCK)
        updates = []
        stage = None
        for layer in self.layers:
            layer_stage = layer.name.split('/')[0]
            if stage is not None and layer_stage != stage:
                x = tf.nn.max_pool(x, [1, 2, 2, 1], [1, 2, 2, 1], 'VALID')
            stage = layer_stage
            with tf.variable_scope(layer.name):
                w = tf.get_variable('weight', [3, 3, layer.in_channels, layer.out_channels],
                                    initializer=tf.zeros_initializer())
                x = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding='SAME', data_format='NHWC')
                x, update = self._batch_norm(x, training)
                updates += update
                x = tf.nn.relu(x)
        features = x = tf.reduce_mean(x, axis=[1, 2])
        if training:
            x = x * self.dropout_mask_in
        with tf.variable_scope('logits'):
            w = tf.get_variable('weight', [self.widths[-1], self.num_classes], initializer=tf.zeros_initializer())
            b = tf.get_variable('bias', [self.num_classes], initializer=tf.zeros_initializer())
        return tf.matmul(x, w) + b, features, updates

    @staticmethod
    def _batch_norm(x, training):
        channels = x.shape.as_list()[-1]
        scale = tf.get_variable('bn_scale', [channels], initializer=tf.ones_initializer())
        offset = tf.get_variable('bn_offset', [channels], initializer=tf.zeros_initializer())
        mean = tf.get_variable('bn_mean', [channels], initializer=tf.zeros_initializer(), trainable=False)
        variance = tf.get_variable('bn_variance', [channels], initializer=tf.ones_initializer(), trainable=False)
        if not training:
            y, _, _ = tf.nn.fused_batch_norm(x, scale, offset, mean, variance, epsilon=BN_EPSILON,
                                             data_format='NHWC', is_training=False)
            return y, []
        y, batch_mean, batch_variance = tf.nn.fused_batch_norm(x, scale, offset, epsilon=BN_EPSILON,
                                                               data_format='NHWC', is_training=True)
        updates = [tf.assign(mean, mean * BN_MOMENTUM + batch_mean * (1 - BN_MOMENTUM)),
                   tf.assign(variance, variance * BN_MOMENTUM + batch_variance * (1 - BN_MOMENTUM))]
        return y, updates

    # -- weights -------------------------------------------------------------------------------------------------

    def initial_weights(self, rng):
        """He-normal convolutions, a unit-gain dense layer, identity batch normalisation, all from `rng`."""
        values = []
        for var in self.model_vars:
            name, shape = var.op.name, var.shape.as_list()
            if name.endswith('weight'):
                fan_in = int(np.prod(shape[:-1]))
                gain = 1.0 if '/logits/' in name else np.sqrt(2.0)
                values.append((rng.standard_normal(shape) * (gain / np.sqrt(fan_in))).astype(np.float32))
            elif name.endswith(('bn_scale', 'bn_variance')):
                values.append(np.ones(shape, np.float32))
            else:
                values.append(np.zeros(shape, np.float32))
        return values

    def get_weights(self):
        return self.session.run(self.model_vars)

    def set_weights(self, values):
        self.session.run(self._assign_op, dict(zip(self._value_in, values)))

    # -- training and inference ----------------------------------------------------------------------------------

    def train_step(self, images, labels, loss_weights, dropout_mask):
        """One Adam step on a minibatch; returns its training loss."""
        loss, _ = self.session.run([self.train_loss, self.train_op], {
            self.images_in: images, self.labels_in: labels, self.loss_weights_in: loss_weights,
            self.dropout_mask_in: dropout_mask})
        return loss

    def dropout_mask(self, rng, count):
        keep = 1.0 - self.dropout
        return ((rng.uniform(size=(count, self.widths[-1])) < keep) / keep).astype(np.float32)

    def fit(self, images, labels, validation_images=None, validation_labels=None, seed=0, epochs=30, patience=6,
            class_weighting='balanced', augment=None, batch_size=BATCH_SIZE, progress=None):
        """Train from fresh weights drawn with `seed`; returns a summary dict.

        images uint8 [N, H, W], labels int [N] in 0..classes-1.  `augment(batch, rng)`, when given, transforms each
        minibatch.  With a validation set, early stopping keeps the epoch of lowest validation loss; without one,
        all `epochs` run.  `progress(epochs_done)` is called after every epoch.
        """
        images, labels = np.asarray(images), np.asarray(labels, np.int32)
        rng = np.random.RandomState(seed)
        self.session.run(self.reset_op)
        self.set_weights(self.initial_weights(rng))
        weights = class_loss_weights(labels, self.num_classes, class_weighting)
        has_validation = validation_images is not None and len(validation_images) > 0
        steps_per_epoch = int(np.ceil(len(images) / float(batch_size)))
        order = np.zeros(0, np.int64)
        best_loss, best_epoch, best_weights, history = np.inf, 0, None, []
        for epoch in range(1, epochs + 1):
            losses = []
            for _ in range(steps_per_epoch):
                while len(order) < batch_size:  # successive permutations, so every patch is seen equally often
                    order = np.concatenate([order, rng.permutation(len(images))])
                batch, order = order[:batch_size], order[batch_size:]
                batch_images = images[batch] if augment is None else augment(images[batch], rng)
                losses.append(self.train_step(batch_images, labels[batch], weights[labels[batch]],
                                              self.dropout_mask(rng, batch_size)))
            record = {'epoch': epoch, 'train_loss': float(np.mean(losses))}
            if has_validation:
                record['validation_loss'] = self.loss(validation_images, validation_labels, class_weighting)
                if record['validation_loss'] < best_loss:
                    best_loss, best_epoch, best_weights = record['validation_loss'], epoch, self.get_weights()
            history.append(record)
            if progress is not None:
                progress(1)
            if has_validation and epoch - best_epoch >= patience:
                break
        if best_weights is not None:
            self.set_weights(best_weights)
        else:
            best_epoch = len(history)
        if progress is not None:
            progress(epochs - len(history))  # epochs that early stopping saved count as done
        return {'epochs_trained': len(history), 'best_epoch': best_epoch, 'history': history}

    def predict(self, images, batch_size=EVAL_BATCH_SIZE):
        """Class probabilities [N, classes] (batch normalisation with its moving averages, no dropout)."""
        return self._evaluate(self.probabilities, images, batch_size)

    def features(self, images, batch_size=EVAL_BATCH_SIZE):
        """Penultimate features [N, widths[-1]] in evaluation mode: the globally pooled activations of the last
        stage, which the dense layer turns into logits (the space the memorization audit also measures in)."""
        return self._evaluate(self.eval_features, images, batch_size)

    def _evaluate(self, output, images, batch_size):
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0,) + tuple(output.shape.as_list()[1:]), np.float32)
        return np.concatenate([self.session.run(output, {self.images_in: images[i:i + batch_size]})
                               for i in range(0, len(images), batch_size)])

    def loss(self, images, labels, class_weighting='balanced', batch_size=EVAL_BATCH_SIZE):
        """Mean cross-entropy in evaluation mode, with the class weights the validation set itself implies."""
        labels = np.asarray(labels, np.int32)
        per_patch = np.concatenate([
            self.session.run(self.eval_losses, {self.images_in: images[i:i + batch_size],
                                                self.labels_in: labels[i:i + batch_size]})
            for i in range(0, len(images), batch_size)])
        weights = class_loss_weights(labels, self.num_classes, class_weighting)[labels]
        return float(np.sum(per_patch * weights) / np.sum(weights))

    def close(self):
        self.session.close()


CLASS_WEIGHTINGS = ('balanced', 'none')


def class_loss_weights(labels, num_classes, class_weighting='balanced'):
    """Per-class loss weights [classes]: n / (classes present * n_class) for 'balanced', so that every class
    present carries the same total weight and all weights add up to n (absent classes weigh 0); ones for 'none'."""
    if class_weighting == 'none':
        return np.ones(num_classes, np.float32)
    if class_weighting != 'balanced':
        raise ValueError('class_weighting must be one of %s, got %r' % (CLASS_WEIGHTINGS, class_weighting))
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    present = max(int(np.sum(counts > 0)), 1)
    weights = np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Classic augmentation


def classic_augmentation(max_shift=None):
    """Random flips, 90-degree rotations (together the 8 symmetries of the square) and shifts of up to
    `max_shift` pixels (default: 1/16 of the patch) with mirrored borders, drawn per patch from the fit's rng."""

    def augment(images, rng):
        images = np.asarray(images)
        shift = max_shift if max_shift is not None else images.shape[-1] // 16
        count = len(images)
        rotations = rng.randint(0, 4, size=count)
        flips = rng.randint(0, 2, size=count)
        offsets = rng.randint(-shift, shift + 1, size=(count, 2)) if shift else np.zeros((count, 2), np.int64)
        padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)), mode='reflect') if shift else images
        size = images.shape[-1]
        out = np.empty_like(images)
        for i in range(count):
            top, left = shift + offsets[i, 0], shift + offsets[i, 1]
            patch = np.rot90(padded[i, top:top + size, left:left + size], rotations[i])
            out[i] = patch[:, ::-1] if flips[i] else patch
        return out

    return augment
