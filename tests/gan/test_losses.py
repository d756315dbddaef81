"""Tests for nodules/gan/losses.py: every loss term against the original's full-resolution computation, the gradient penalty
against finite differences, and how the terms are composed.

The original evaluates D on full-resolution images only: at level of detail lod, images of R / 2^floor(lod) pixels
are nearest-upscaled to R x R and D, built at R x R, box-averages them back.  The reference here does exactly that
with the same weights (networks built at full resolution, inputs upscaled in NumPy, the gradient taken with respect
to the R x R image) and the losses under test must give the same numbers from graphs built at the lower resolution.
"""
import contextlib

import numpy as np
import pytest

from nodules.util.tfcompat import tf
from nodules.gan import losses
from nodules.gan import tfutil

RESOLUTION = 32
NETWORK = dict(num_channels=1, resolution=RESOLUTION, fmap_base=128, fmap_max=32)
LATENT = 16
MINIBATCH = 8              # two minibatch-stddev groups of 4
LODS = [0.0, 1.0, 1.5, 2.0, 3.0]


@contextlib.contextmanager
def new_session(seed):
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=tfutil.session_config()) as session, \
            session.as_default():
        tf.set_random_seed(seed)
        yield session


def randomize_biases(net, rng, scale=0.2):
    """Weights keep their N(0, 1) initialisation; biases become random too, so that no term is trivially zero."""
    net.set_vars({name: (rng.randn(*var.shape.as_list()) * scale).astype(np.float32)
                  for name, var in net.trainables.items() if name.endswith('/bias')})


def nearest_upscale(images, factor):
    """NHWC nearest-neighbour upscaling in NumPy, as the original does to bring reals and fakes to full size."""
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def one_hot(classes, label_size):
    """[N, label_size] one-hot rows ([N, 0] without labels)."""
    labels = np.zeros((len(classes), label_size), np.float32)
    if label_size:
        labels[np.arange(len(classes)), classes] = 1.0
    return labels


def original_losses(G, D, latents, reals, labels, mixing, wgan_lambda=10.0, wgan_epsilon=0.001, cond_weight=1.0):
    """The original's D and G losses per sample, on full-resolution tensors (reals already upscaled)."""
    fakes = G.get_output_for(latents, labels)
    real_scores, real_logits = D.get_output_for(reals)
    fake_scores, fake_logits = D.get_output_for(fakes)
    mixed = reals + (fakes - reals) * mixing
    mixed_scores, _ = D.get_output_for(mixed)
    grads = tf.gradients(tf.reduce_sum(mixed_scores), [mixed])[0]
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
    penalty = tf.square(norms - 1.0)[:, tf.newaxis]
    D_loss = fake_scores - real_scores + penalty * wgan_lambda + tf.square(real_scores) * wgan_epsilon
    G_loss = -fake_scores
    if labels.shape.as_list()[1]:
        xent = lambda logits: tf.nn.softmax_cross_entropy_with_logits_v2(labels=labels, logits=logits)[:, tf.newaxis]
        D_loss += (xent(real_logits) + xent(fake_logits)) * cond_weight
        G_loss += xent(fake_logits) * cond_weight
    return {'D_loss': D_loss, 'G_loss': G_loss, 'real_scores': real_scores, 'fake_scores': fake_scores,
            'gradient_penalty': penalty, 'norms': norms, 'fakes': fakes}


@pytest.fixture(scope='module', params=[0, pytest.param(3, marks=pytest.mark.slow)],
                ids=['unconditional', 'three-labels'])
def full_resolution_reference(request):
    """Tiny 32x32 G and D with random weights; the original's losses at full resolution and ours at every graph
    resolution, all on placeholders.  Yields a function lod -> (ours, original) as NumPy dicts."""
    label_size = request.param
    rng = np.random.RandomState(17 + label_size)
    with new_session(seed=3) as session:
        G = tfutil.Network('G', 'G_paper', label_size=label_size, latent_size=LATENT, **NETWORK)
        D = tfutil.Network('D', 'D_paper', label_size=label_size, **NETWORK)
        G.init_vars()
        D.init_vars()
        randomize_biases(G, rng)
        randomize_biases(D, rng)
        latents_in = tf.placeholder(tf.float32, [MINIBATCH, LATENT])
        labels_in = tf.placeholder(tf.float32, [MINIBATCH, label_size])
        mixing_in = tf.placeholder(tf.float32, [MINIBATCH, 1, 1, 1])
        full_reals_in = tf.placeholder(tf.float32, [MINIBATCH, RESOLUTION, RESOLUTION, 1])
        original = original_losses(G, D, latents_in, full_reals_in, labels_in, mixing_in)
        ours_by_resolution = {}
        for graph_resolution in (4, 8, 16, 32):
            reals_in = tf.placeholder(tf.float32, [MINIBATCH, graph_resolution, graph_resolution, 1])
            D_loss, terms = losses.D_wgangp(G, D, latents_in, reals_in, labels_in, mixing_in,
                                            graph_resolution=graph_resolution)
            G_loss = losses.G_wgan(G, D, latents_in, labels_in, graph_resolution=graph_resolution)
            fakes = G.get_output_for(latents_in, labels_in, graph_resolution=graph_resolution)
            ours = dict(terms, D_loss=D_loss, G_loss=G_loss, fakes=fakes, norms=terms['gradient_norms'][:, 0])
            ours_by_resolution[graph_resolution] = (reals_in, ours)

        def evaluate(lod, seed=0):
            factor = 2 ** int(np.floor(lod))
            graph_resolution = RESOLUTION // factor
            reals_in, ours = ours_by_resolution[graph_resolution]
            draws = np.random.RandomState(seed)
            reals = draws.uniform(-1, 1, (MINIBATCH, graph_resolution, graph_resolution, 1)).astype(np.float32)
            feed = {latents_in: draws.randn(MINIBATCH, LATENT).astype(np.float32),
                    labels_in: one_hot(draws.randint(0, max(label_size, 1), MINIBATCH), label_size),
                    mixing_in: draws.uniform(0, 1, (MINIBATCH, 1, 1, 1)).astype(np.float32)}
            ours_feed, original_feed = dict(feed), dict(feed)
            ours_feed[reals_in] = reals
            original_feed[full_reals_in] = nearest_upscale(reals, factor)
            with session.as_default():
                for net in (G, D):
                    net.set_vars({'lod': np.float32(lod)})
                ours_values = tfutil.run(ours, ours_feed)
                original_values = tfutil.run(original, original_feed)
            return ours_values, original_values
        yield evaluate


@pytest.mark.parametrize('lod', LODS)
def test_every_loss_term_equals_the_full_resolution_original(full_resolution_reference, lod):
    ours, original = full_resolution_reference(lod)
    factor = 2 ** int(np.floor(lod))
    # The generator built at full resolution gives the low-resolution image nearest-upscaled.
    np.testing.assert_allclose(nearest_upscale(ours['fakes'], factor), original['fakes'], rtol=0, atol=1e-6)
    assert np.all(original['norms'] > 0.01)  # a meaningful comparison, not 0 == 0
    np.testing.assert_allclose(ours['norms'], original['norms'], rtol=1e-5)
    for key in ('real_scores', 'fake_scores', 'gradient_penalty', 'D_loss', 'G_loss'):
        assert ours[key].shape == (MINIBATCH, 1), key
        np.testing.assert_allclose(ours[key], original[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert np.mean(ours['D_loss']) == pytest.approx(np.mean(original['D_loss']), rel=1e-5, abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# The gradient penalty against finite differences


@pytest.mark.parametrize('mbstd_group_size', [0, 4])
def test_gradient_penalty_matches_finite_differences(mbstd_group_size):
    """||dD/dx|| at x = reals + u (fakes - reals), estimated in NumPy by central differences over every pixel of
    8x8 inputs, against the norm inside losses.gradient_penalty (target 0 gives norm^2, target 1 the penalty).

    D is piecewise linear (leaky ReLUs), so a difference is exact unless a kink lies within the step; in float32
    the step cannot be tiny either.  Each entry is therefore the median of central differences over five small
    steps.  With the minibatch-stddev layer on, a sample's score depends on its group and the penalty
    differentiates the sum of scores; so does the estimate (one pixel of one sample moves, all scores summed)."""
    rng = np.random.RandomState(7)
    N, R = 4, 8
    reals = rng.uniform(-1, 1, (N, R, R, 1)).astype(np.float32)
    fakes = rng.uniform(-1, 1, (N, R, R, 1)).astype(np.float32)
    mixing = rng.uniform(0, 1, (N, 1, 1, 1)).astype(np.float32)
    mixed = reals + (fakes - reals) * mixing
    steps = np.array([2e-4, 3e-4, 5e-4, 7e-4, 1e-3])
    # Every perturbed copy of the minibatch, [steps, +/-, N*R*R pixels] of them.
    copies = []
    for h in steps:
        for sign in (1.0, -1.0):
            for index in np.ndindex(*mixed.shape):
                copy = mixed.copy()
                copy[index] += np.float32(sign * h)
                copies.append(copy)
    K = len(copies)
    # All copies go through D in one run.  Copy k's sample j sits at row j*K + k: with minibatch-stddev groups
    # n mod (N*K / 4) each copy is then exactly one group, as the minibatch alone would be.
    stacked = np.stack(copies, axis=1).reshape((N * K,) + mixed.shape[1:])
    with new_session(seed=3):
        D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=R, mbstd_group_size=mbstd_group_size,
                           fmap_base=32, fmap_max=8)
        D.init_vars()
        reals_in = tf.placeholder(tf.float32, [N, R, R, 1])
        fakes_in = tf.placeholder(tf.float32, [N, R, R, 1])
        mixing_in = tf.placeholder(tf.float32, [N, 1, 1, 1])
        squared_norm = losses.gradient_penalty(D, reals_in, fakes_in, mixing_in, wgan_target=0.0)
        penalty = losses.gradient_penalty(D, reals_in, fakes_in, mixing_in)
        squared_norm, penalty = tfutil.run([squared_norm, penalty],
                                           {reals_in: reals, fakes_in: fakes, mixing_in: mixing})
        x_in = tf.placeholder(tf.float32, [None, R, R, 1])
        scores = tfutil.run(D.get_output_for(x_in)[0], {x_in: stacked})
    sums = scores.reshape(N, K).astype(np.float64).sum(axis=0).reshape(len(steps), 2, -1)
    differences = (sums[:, 0] - sums[:, 1]) / (2 * steps[:, np.newaxis])
    estimate = np.median(differences, axis=0).reshape(mixed.shape)

    assert squared_norm.shape == (N, 1) and penalty.shape == (N, 1)
    norms_fd = np.sqrt(np.sum(estimate ** 2, axis=(1, 2, 3)))
    norms_tf = np.sqrt(squared_norm[:, 0])
    assert np.all(norms_fd > 0.01)
    np.testing.assert_allclose(norms_tf, norms_fd, rtol=5e-3)
    np.testing.assert_allclose(penalty[:, 0], (norms_fd - 1.0) ** 2, rtol=1e-2)


# ----------------------------------------------------------------------------------------------------------------
# How the terms are composed


def small_minibatch(seed, N=4):
    """Latents, 8x8 reals, interpolation factors and (empty) labels of an unconditional minibatch."""
    rng = np.random.RandomState(seed)
    return (rng.randn(N, LATENT).astype(np.float32), rng.uniform(-1, 1, (N, 8, 8, 1)).astype(np.float32),
            rng.uniform(0, 1, (N, 1, 1, 1)).astype(np.float32), np.zeros((N, 0), np.float32))


def small_networks():
    G = tfutil.Network('G', 'G_paper', num_channels=1, resolution=8, latent_size=LATENT, fmap_base=32, fmap_max=8)
    D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=8, fmap_base=32, fmap_max=8)
    G.init_vars()
    D.init_vars()
    return G, D


def test_D_and_G_losses_are_composed_as_in_wgan_gp():
    """D loss = D(G(z)) - D(x) + 10 * GP + 0.001 * D(x)^2 per sample; G loss = -D(G(z))."""
    latents, reals, mixing, labels = small_minibatch(seed=11)
    with new_session(seed=4):
        G, D = small_networks()
        D_loss, terms = losses.D_wgangp(G, D, tf.constant(latents), tf.constant(reals), tf.constant(labels),
                                        tf.constant(mixing))
        G_loss = losses.G_wgan(G, D, tf.constant(latents), tf.constant(labels))
        D_loss, G_loss, terms = tfutil.run([D_loss, G_loss, terms])
        fakes = G.run(latents, labels)
        fake_scores = D.run(fakes)[0]
        real_scores = D.run(reals)[0]
    np.testing.assert_allclose(terms['real_scores'], real_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms['fake_scores'], fake_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(G_loss, -fake_scores, rtol=1e-5, atol=1e-6)
    expected = fake_scores - real_scores + 10.0 * terms['gradient_penalty'] + 0.001 * real_scores ** 2
    np.testing.assert_allclose(D_loss, expected, rtol=1e-5, atol=1e-6)


def test_every_image_D_sees_goes_through_augment_with_its_role():
    """augment(images, role) stands between every image and D: the reals, the fakes and the interpolated images
    of D's loss and the fakes of G's loss, each with its own role.  Distinct transforms per role (NumPy
    references in NHWC) show which image went where; the gradient penalty differentiates through the augmentation
    with respect to the interpolated image itself (for a sign flip its norm is D's gradient norm at -x)."""
    latents, reals, mixing, labels = small_minibatch(seed=12)
    transforms = {'reals': (lambda x: tf.reverse(x, [2]), lambda x: x[:, :, ::-1]),
                  'fakes': (lambda x: tf.transpose(x, [0, 2, 1, 3]), lambda x: x.transpose(0, 2, 1, 3)),
                  'mixed': (lambda x: -x, lambda x: -x),
                  'G': (lambda x: tf.reverse(x, [1]), lambda x: x[:, ::-1])}
    roles = []

    def augment(images, role):
        roles.append(role)
        return transforms[role][0](images)

    with new_session(seed=5):
        G, D = small_networks()
        D_loss, terms = losses.D_wgangp(G, D, tf.constant(latents), tf.constant(reals), tf.constant(labels),
                                        tf.constant(mixing), augment=augment)
        G_loss = losses.G_wgan(G, D, tf.constant(latents), tf.constant(labels), augment=augment)
        assert sorted(roles) == ['G', 'fakes', 'mixed', 'reals']
        D_loss, G_loss, terms = tfutil.run([D_loss, G_loss, terms])
        fakes = G.run(latents, labels)
        mixed = reals + (fakes - reals) * mixing
        plain_norms = tfutil.run(losses.gradient_norms(D, tf.constant(transforms['mixed'][1](mixed))))
        real_scores = D.run(transforms['reals'][1](reals))[0]
        fake_scores = D.run(transforms['fakes'][1](fakes))[0]
        G_scores = D.run(transforms['G'][1](fakes))[0]
        unaugmented_scores = D.run(reals)[0]
    assert np.abs(real_scores - unaugmented_scores).max() > 1e-4  # the flip matters to this D
    np.testing.assert_allclose(terms['real_scores'], real_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms['fake_scores'], fake_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(G_loss, -G_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms['gradient_norms'][:, 0], plain_norms, rtol=1e-5)
    expected = fake_scores - real_scores + 10.0 * terms['gradient_penalty'] + 0.001 * real_scores ** 2
    np.testing.assert_allclose(D_loss, expected, rtol=1e-5, atol=1e-6)
