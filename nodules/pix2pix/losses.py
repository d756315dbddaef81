"""pix2pix losses as the original script computes them, and the corrections it needs, each behind a named option.

D (sigmoid scores per 70x70 window, D applied separately to the real and to the generated pair):
    loss_D = BCE(D(A, B), c) + BCE(D(A, G(A)), 0)
G:  loss_G = BCE(D(A, G(A)), 1) + 1000 * MSE(G(A), B)
with BCE(p, t) = -mean(t log(p + 1e-12) + (1 - t) log(1 - p + 1e-12)) over every score of the minibatch.

Two quirks of the original, reproduced by default:
* label_smoothing='once': the real target c is ONE number drawn from U(0.8, 1.1) when the graph is built, so a
  whole run trains against the same constant (the original multiplies ones by a Python random draw; its fake
  target, zeros times U(0, 0.2), is always 0).  The caller draws c (draw_real_label) and passes it in, so the run
  records it.  A c above 1 also makes the real term reward scores of exactly 1 without bound but for the 1e-12.
  'per-step' draws a new c from the same range for every minibatch; 'none' uses 1.
* reconstruction='mse': the term the script calls L1 is a mean squared error.  'l1' is the mean absolute
  error of the pix2pix paper.
"""
from nodules.pix2pix.settings import LABEL_SMOOTHING, REAL_LABEL_RANGE, RECONSTRUCTION_WEIGHT, RECONSTRUCTIONS
from nodules.util.tfcompat import tf

LOG_EPSILON = 1e-12


def draw_real_label(random_state, label_range=REAL_LABEL_RANGE):
    """The run's real target c for label_smoothing='once': one draw from U(low, high), as a plain float."""
    low, high = label_range
    return float(random_state.uniform(low, high))


def binary_cross_entropy(scores, target):
    """Mean over every score of -(t log(p + eps) + (1 - t) log(1 - p + eps)), written as the original writes it
    (not from logits: the +1e-12 is part of its numbers)."""
    return -tf.reduce_mean(tf.log(scores + LOG_EPSILON) * target + tf.log(1.0 - scores + LOG_EPSILON) * (1.0 - target))


def real_target(label_smoothing='once', real_label=None, label_range=REAL_LABEL_RANGE):
    """The target of real pairs in D's loss: a number, or a scalar tensor drawn anew each time it is evaluated."""
    if label_smoothing not in LABEL_SMOOTHING:
        raise ValueError('label_smoothing must be one of %s, got %r' % (', '.join(LABEL_SMOOTHING), label_smoothing))
    if label_smoothing == 'once':
        if real_label is None:
            raise ValueError("label_smoothing='once' needs the run's real_label (draw_real_label)")
        return float(real_label)
    if real_label is not None:
        raise ValueError("real_label is the constant of label_smoothing='once', not of %r" % label_smoothing)
    if label_smoothing == 'per-step':
        low, high = label_range
        return tf.random_uniform([], low, high, name='real_label')
    return 1.0


def D_loss(real_scores, fake_scores, label_smoothing='once', real_label=None, label_range=REAL_LABEL_RANGE):
    """loss_D = BCE(real scores, c) + BCE(fake scores, 0).  Returns (loss, {term name: scalar tensor})."""
    target = real_target(label_smoothing, real_label, label_range)
    real_term = binary_cross_entropy(real_scores, target)
    fake_term = binary_cross_entropy(fake_scores, 0.0)
    return real_term + fake_term, {'D_real': real_term, 'D_fake': fake_term, 'real_label': tf.convert_to_tensor(target)}


def reconstruction_error(fakes, reals, reconstruction='mse'):
    """Mean squared ('mse', the original's) or mean absolute ('l1') difference over every pixel."""
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError('reconstruction must be one of %s, got %r' % (', '.join(RECONSTRUCTIONS), reconstruction))
    difference = fakes - reals
    return tf.reduce_mean(tf.square(difference) if reconstruction == 'mse' else tf.abs(difference))


def G_loss(fake_scores, fakes, reals, reconstruction='mse', reconstruction_weight=RECONSTRUCTION_WEIGHT):
    """loss_G = BCE(fake scores, 1) + weight * reconstruction error.  Returns (loss, {term name: scalar tensor})."""
    adversarial = binary_cross_entropy(fake_scores, 1.0)
    error = reconstruction_error(fakes, reals, reconstruction)
    return adversarial + reconstruction_weight * error, {'G_adversarial': adversarial, 'G_reconstruction': error}
