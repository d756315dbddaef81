"""WGAN-GP losses of PGGAN (SPEC section 5), per sample; the training loop takes means over the minibatch.

Randomness (latents, interpolation factors) comes in as tensors, so that a minibatch split over several devices
computes exactly what one device would, and tests can feed known values.
"""
from tfcompat import tf


def _label_penalty(labels, logits):
    """AC-GAN classification term; zero for unconditional networks."""
    if labels.shape.as_list()[1] == 0:
        return 0.0
    return tf.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=logits)[:, tf.newaxis]


def G_wgan(G, D, latents, labels, graph_resolution=None, cond_weight=1.0):
    """Generator loss -D(G(z)) (+ the classification term with labels).  Returns [N, 1]."""
    fakes = G.get_output_for(latents, labels, graph_resolution=graph_resolution)
    fake_scores, fake_logits = D.get_output_for(fakes, graph_resolution=graph_resolution)
    return -fake_scores + _label_penalty(labels, fake_logits) * cond_weight


def gradient_penalty(D, reals, fakes, mixing, graph_resolution=None, wgan_target=1.0):
    """(||grad_x D(x)||_2 - target)^2 at x = reals + mixing * (fakes - reals), one value per sample: [N, 1]."""
    mixed = reals + (fakes - reals) * mixing
    mixed_scores, _ = D.get_output_for(mixed, graph_resolution=graph_resolution)
    grads = tf.gradients(tf.reduce_sum(mixed_scores), [mixed])[0]
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
    return tf.square(norms - wgan_target)[:, tf.newaxis]


def D_wgangp(G, D, latents, reals, labels, mixing, graph_resolution=None,
             wgan_lambda=10.0,      # weight of the gradient penalty
             wgan_epsilon=0.001,    # weight of the drift term that keeps real scores near zero
             wgan_target=1.0,       # target gradient norm
             cond_weight=1.0):      # weight of the AC-GAN terms when there are labels
    """Discriminator loss D(G(z)) - D(x) + lambda * GP + epsilon * D(x)^2 (+ classification terms).

    `mixing` is U(0, 1) per sample, shaped [N, 1, 1, 1].  Returns (loss [N, 1], {name: [N, 1] term}).
    """
    fakes = G.get_output_for(latents, labels, graph_resolution=graph_resolution)
    real_scores, real_logits = D.get_output_for(reals, graph_resolution=graph_resolution)
    fake_scores, fake_logits = D.get_output_for(fakes, graph_resolution=graph_resolution)
    penalty = gradient_penalty(D, reals, fakes, mixing, graph_resolution, wgan_target)
    loss = fake_scores - real_scores
    loss += penalty * (wgan_lambda / wgan_target ** 2)
    loss += tf.square(real_scores) * wgan_epsilon
    loss += (_label_penalty(labels, real_logits) + _label_penalty(labels, fake_logits)) * cond_weight
    terms = {'real_scores': real_scores, 'fake_scores': fake_scores, 'gradient_penalty': penalty}
    return loss, terms
