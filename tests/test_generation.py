"""generation.py: reduced-precision generation agrees with float32, or fails with one clear line where the
TensorFlow build has no such kernels (TF 1.12 on a CPU has no bfloat16 convolutions)."""
import numpy as np
import pytest

from errors import UserError
from tfcompat import TF_VERSION, tf
import generation
import tfutil


@pytest.fixture
def tiny_generator(tf_session):
    tf.set_random_seed(1)  # before the variables exist, so that their initial values are the same every run
    G = tfutil.Network('Gs', 'G_paper', resolution=16, fmap_base=128, fmap_max=32)
    G.init_vars()
    return G


@pytest.mark.parametrize('precision', ['bfloat16', 'float16'])
def test_reduced_precision_is_close_to_float32_or_refused_cleanly(tiny_generator, precision):
    latents = generation.random_latents(16, tiny_generator.input_shapes[0][1], seed=3)
    reference = generation.generate_images(tiny_generator, latents).astype(int)
    try:
        reduced = generation.generate_images(tiny_generator, latents, precision=precision).astype(int)
    except UserError as error:
        assert precision in str(error) and TF_VERSION in str(error) and 'float32' in str(error)
        assert TF_VERSION.startswith('1.'), 'TensorFlow 2.x has %s kernels on CPUs' % precision
        return
    difference = np.abs(reduced - reference)
    assert reduced.shape == reference.shape == (16, 16, 16)
    # float16 keeps 11 significant bits, bfloat16 only 8: each must stay within a few grey levels of float32.
    assert np.mean(difference <= 1) >= (0.99 if precision == 'float16' else 0.7)
    assert difference.max() <= (2 if precision == 'float16' else 20)
