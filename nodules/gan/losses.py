"""WGAN-GP losses of PGGAN (with the AC-GAN label terms of its conditional variant), one value per sample; the
training loop takes means over the minibatch.

The original always evaluates D on full-resolution images: at level of detail lod, reals and fakes of resolution
R / 2^floor(lod) are nearest-upscaled to R x R, and D's first step box-averages them back down.  Here the networks
are built at the resolution being trained (`graph_resolution`), which gives the same scores, and so the same
score, drift and label terms.  The one term that sees the difference is the gradient penalty: the gradient with
respect to an R x R image whose f x f blocks were averaged into one pixel (f = 2^floor(lod)) is the low-resolution
gradient divided by f^2 and repeated over f^2 pixels, so its norm is the low-resolution norm divided by f.
`gradient_penalty` applies that factor, which makes every term equal to the original's at every lod.

Randomness (latents, interpolation factors) comes in as tensors, so that a minibatch split over several devices
computes exactly what one device would, and tests can feed known values.

`augment(images, role)` (default: none) is what every image goes through on its way into D, for small-data
training (nodules/gan/augment.py): role 'reals', 'fakes' and 'mixed' in D's loss and 'G' in G's, so that the training loop can
give each its own random parameters.  D then never sees an image that was not augmented the same way, real or
generated, which is what keeps augmentations from leaking into the generator.  The gradient penalty differentiates
through the augmentation, with respect to the interpolated image itself.
"""
from nodules.util.tfcompat import tf


def _label_penalty(labels, logits):
    """AC-GAN classification term [N, 1]; zero for unconditional networks."""
    if labels.shape.as_list()[1] == 0:
        return 0.0
    return tf.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=logits)[:, tf.newaxis]


def full_resolution_factor(D, graph_resolution=None):
    """f = full resolution / graph resolution: how many full-resolution pixels, per side, one graph pixel stands for."""
    full_resolution = D.input_shapes[0][1]
    return full_resolution // (graph_resolution or full_resolution)


def no_augmentation(images, role):
    return images


def G_wgan(G, D, latents, labels, graph_resolution=None, cond_weight=1.0, augment=no_augmentation):
    """Generator loss -D(G(z)) (+ the classification term with labels).  Returns [N, 1]."""
    fakes = G.get_output_for(latents, labels, graph_resolution=graph_resolution)
    fake_scores, fake_logits = D.get_output_for(augment(fakes, 'G'), graph_resolution=graph_resolution)
    return -fake_scores + _label_penalty(labels, fake_logits) * cond_weight


def gradient_norms(D, mixed, graph_resolution=None, augment=no_augmentation):
    """||d sum(D(x)) / dx||_2 per sample [N], x being the full-resolution image that `mixed` stands for."""
    mixed_scores, _ = D.get_output_for(augment(mixed, 'mixed'), graph_resolution=graph_resolution)
    grads = tf.gradients(tf.reduce_sum(mixed_scores), [mixed])[0]
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
    return norms / float(full_resolution_factor(D, graph_resolution))


def gradient_penalty(D, reals, fakes, mixing, graph_resolution=None, wgan_target=1.0, augment=no_augmentation):
    """(||grad_x D(x)||_2 - target)^2 at x = reals + mixing * (fakes - reals), one value per sample: [N, 1]."""
    return _penalty_and_norms(D, reals, fakes, mixing, graph_resolution, wgan_target, augment)[0]


def _penalty_and_norms(D, reals, fakes, mixing, graph_resolution, wgan_target, augment):
    mixed = reals + (fakes - reals) * mixing
    norms = gradient_norms(D, mixed, graph_resolution, augment)[:, tf.newaxis]
    return tf.square(norms - wgan_target), norms


def D_wgangp(G, D, latents, reals, labels, mixing, graph_resolution=None,
             wgan_lambda=10.0,      # weight of the gradient penalty
             wgan_epsilon=0.001,    # weight of the drift term that keeps real scores near zero
             wgan_target=1.0,       # target gradient norm
             cond_weight=1.0,       # weight of the AC-GAN terms when there are labels
             augment=no_augmentation):  # what images go through before D: augment(images, role)
    """Discriminator loss D(G(z)) - D(x) + lambda * GP + epsilon * D(x)^2 (+ classification terms).

    Fakes are generated for the reals' labels.  `mixing` is U(0, 1) per sample, shaped [N, 1, 1, 1].
    Returns (loss [N, 1], {name: [N, 1]}) with the terms real_scores, fake_scores, gradient_penalty and the
    gradient_norms it penalises.
    """
    fakes = G.get_output_for(latents, labels, graph_resolution=graph_resolution)
    real_scores, real_logits = D.get_output_for(augment(reals, 'reals'), graph_resolution=graph_resolution)
    fake_scores, fake_logits = D.get_output_for(augment(fakes, 'fakes'), graph_resolution=graph_resolution)
    penalty, norms = _penalty_and_norms(D, reals, fakes, mixing, graph_resolution, wgan_target, augment)
    loss = fake_scores - real_scores
    loss += penalty * (wgan_lambda / wgan_target ** 2)
    loss += tf.square(real_scores) * wgan_epsilon
    loss += (_label_penalty(labels, real_logits) + _label_penalty(labels, fake_logits)) * cond_weight
    terms = {'real_scores': real_scores, 'fake_scores': fake_scores, 'gradient_penalty': penalty,
             'gradient_norms': norms}
    return loss, terms
