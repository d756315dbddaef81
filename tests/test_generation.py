"""nodules/generation.py: reduced-precision generation agrees with float32, or fails with one clear line where the
TensorFlow build has no such kernels (TF 1.12 on a CPU has no bfloat16 convolutions)."""
import numpy as np
import pytest

from nodules.util.errors import UserError
from nodules.util.tfcompat import TF_VERSION, tf
from nodules import generation
from nodules.gan import tfutil


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


# ---------------------------------------------------------------------------------------------------------------
# Generation: labels, chunking, non-finite output


def test_label_index_on_an_unconditional_generator_is_refused(tiny_generator):
    latents = generation.random_latents(2, tiny_generator.input_shapes[0][1], seed=0)
    with pytest.raises(UserError, match='without labels'):
        generation.generate_images(tiny_generator, latents, label_index=0)


def test_conditional_generator_needs_a_label_and_takes_per_image_labels(tf_session):
    tf.set_random_seed(2)
    G = tfutil.Network('Gc', 'G_paper', resolution=16, fmap_base=128, fmap_max=32, label_size=3)
    G.init_vars()
    latents = generation.random_latents(6, G.input_shapes[0][1], seed=4)
    with pytest.raises(UserError, match='--label-index 0..2'):
        generation.generate_images(G, latents)
    with pytest.raises(UserError, match='--label-index 0..2'):
        generation.generate_images(G, latents, label_index=3)
    one_class = generation.generate_images(G, latents, label_index=1)
    labels = np.zeros((6, 3), np.float32)
    labels[:, 1] = 1
    assert np.array_equal(generation.generate_images(G, latents, labels=labels), one_class)
    labels[3:] = [1, 0, 0]
    mixed = generation.generate_images(G, latents, labels=labels)
    assert np.array_equal(mixed[:3], one_class[:3]) and not np.array_equal(mixed[3:], one_class[3:])


def conditional_generator(name, **settings):
    return tfutil.Network(name, 'G_paper', resolution=16, fmap_base=64, fmap_max=16, latent_size=16, label_size=3,
                          **settings)


def test_class_names_and_label_index_for_a_conditional_generator_with_names(tf_session):
    G = conditional_generator('Gn', label_names=['AIS', 'IAC', 'MIA'])
    assert generation.class_names(G) == ['AIS', 'IAC', 'MIA']
    assert [generation.label_index_for(G, name=n) for n in ('AIS', 'IAC', 'MIA')] == [0, 1, 2]
    assert generation.label_index_for(G, name='mia') == 2  # one class matches regardless of case
    assert generation.label_index_for(G, index=1) == 1
    with pytest.raises(UserError) as error:
        generation.label_index_for(G, name='SCC', source='all.pkl')
    assert str(error.value) == "all.pkl: no class 'SCC'; the classes of this generator are AIS, IAC, MIA"
    with pytest.raises(UserError) as error:
        generation.label_index_for(G, source='all.pkl')
    assert str(error.value) == ('all.pkl: this generator is conditional on 3 classes (AIS, IAC, MIA): pass '
                                '--label AIS|IAC|MIA or --label-index 0..2')
    with pytest.raises(UserError, match=r'--label-index 0\.\.2'):
        generation.label_index_for(G, index=3)
    with pytest.raises(ValueError):
        generation.label_index_for(G, name='AIS', index=0)


def test_names_that_differ_only_in_case_must_match_exactly(tf_session):
    G = conditional_generator('Gc', label_names=['a', 'A', 'b'])
    assert generation.label_index_for(G, name='A') == 1
    assert generation.label_index_for(G, name='B') == 2
    with pytest.raises(UserError, match="no class 'a '"):
        generation.label_index_for(G, name='a ')


def test_conditional_generator_without_names_has_only_indices(tf_session):
    G = conditional_generator('Gi')
    assert generation.class_names(G) is None
    assert generation.label_index_for(G, index=2) == 2
    with pytest.raises(UserError) as error:
        generation.label_index_for(G, name='MIA', source='orig.pkl')
    assert str(error.value) == 'orig.pkl: this conditional generator stores no class names; use --label-index 0..2'
    with pytest.raises(UserError) as error:
        generation.label_index_for(G)
    assert str(error.value) == 'this generator is conditional on 3 classes: pass --label-index 0..2'


def test_class_names_that_do_not_fit_the_labels_are_refused(tf_session):
    G = conditional_generator('Gw', label_names=['AIS', 'MIA'])
    with pytest.raises(UserError, match='do not name its 3 label columns'):
        generation.label_index_for(G, name='AIS')


def test_label_on_an_unconditional_generator_is_refused(tiny_generator):
    assert generation.class_names(tiny_generator) is None
    assert generation.label_index_for(tiny_generator) is None
    with pytest.raises(UserError) as error:
        generation.label_index_for(tiny_generator, name='AIS', source='AIS.pkl')
    assert str(error.value) == 'AIS.pkl: this generator was trained without labels; --label does not apply'
    with pytest.raises(UserError, match='without labels; --label-index does not apply'):
        generation.label_index_for(tiny_generator, index=0)


def test_class_names_round_trip_through_a_network_pickle(tmp_path):
    from test_inference import LABEL_NAMES, conditional_pickle
    from nodules.gan import legacy
    path = conditional_pickle(str(tmp_path / 'all.pkl'))
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        nets = legacy.load_network_pkl(path)
        for net in nets:
            assert net.static_kwargs['label_names'] == LABEL_NAMES, net.name
        Gs = nets[2]
        assert Gs.input_shapes[1] == [None, 3]
        assert generation.class_names(Gs) == LABEL_NAMES
        assert generation.label_index_for(Gs, name='IAC') == 1


def test_result_does_not_depend_on_how_output_is_chunked(tiny_generator, monkeypatch):
    latents = generation.random_latents(20, tiny_generator.input_shapes[0][1], seed=5)
    whole = generation.generate_images(tiny_generator, latents, batch_size=4)
    monkeypatch.setattr(generation, '_CHUNK_IMAGES', 8)  # chunks of two minibatches instead of 256
    progress = []
    chunked = generation.generate_images(tiny_generator, latents, batch_size=4, progress=progress.append)
    assert np.array_equal(whole, chunked)
    assert progress == [4] * 5


def test_non_finite_generator_output_is_an_error_not_black_images(tiny_generator):
    latents = generation.random_latents(4, tiny_generator.input_shapes[0][1], seed=6)
    name = [n for n in tiny_generator.vars if n.startswith('ToRGB') and n.endswith('weight')][-1]
    weight = tiny_generator.get_vars()[name]
    tiny_generator.set_vars({name: np.full_like(weight, 3e38)})
    with pytest.raises(UserError, match='NaN or infinite'):
        generation.generate_images(tiny_generator, latents)
    images = generation.generate_images(tiny_generator, latents, check_finite=False)  # on request: as before
    assert images.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------------------
# Latent files (no TensorFlow involved)


def saved(path, array):
    np.save(str(path), array)
    return str(path)


@pytest.mark.parametrize('case,fragment', [
    ('strings', 'floating-point numbers'),
    ('integers', 'holds int16 values; latents must be floating-point numbers'),  # the README promises floats
    ('beyond 1e15', 'latents hold values up to 1e+16; beyond 1e+15 they overflow'),
    ('structured', 'structured'),
    ('npz', '.npz'),
    ('objects', 'Python objects'),
    ('beyond float32', 'float32'),
    ('nan', 'NaN'),
    ('one-dimensional', 'shape [16]'),
    ('empty', 'shape [0, 16]'),
    ('complex', 'floating-point numbers'),
    ('too many', 'at most 5'),
    ('not npy', 'not a NumPy .npy array'),
    ('missing', 'no such latents file'),
])
def test_read_latents_refuses_what_is_not_a_latent_array(tmp_path, case, fragment):
    path = str(tmp_path / 'z.npy')
    if case == 'strings':
        saved(path, np.full((4, 16), '0.5'))
    elif case == 'integers':
        saved(path, np.arange(64, dtype=np.int16).reshape(4, 16))
    elif case == 'beyond 1e15':  # finite in float32, but the squares of the input normalisation overflow
        saved(path, np.array([[0.5] * 15 + [-1e16]] * 4, np.float32))
    elif case == 'structured':
        saved(path, np.zeros(4, dtype=[('z', np.float32, (16,))]))
    elif case == 'npz':
        path = str(tmp_path / 'z.npz')
        np.savez(path, z=np.zeros((4, 16), np.float32))
    elif case == 'objects':
        saved(path, np.array([[0.5] * 16] * 4, dtype=object))
    elif case == 'beyond float32':
        saved(path, np.full((4, 16), 1e300))
    elif case == 'nan':
        saved(path, np.array([[0.0] * 15 + [np.nan]] * 4))
    elif case == 'one-dimensional':
        saved(path, np.zeros(16, np.float32))
    elif case == 'empty':
        saved(path, np.zeros((0, 16), np.float32))
    elif case == 'complex':
        saved(path, np.zeros((4, 16), np.complex64))
    elif case == 'too many':
        saved(path, np.zeros((6, 16), np.float32))
    elif case == 'not npy':
        with open(path, 'wb') as f:
            f.write(b'0.1 0.2 0.3\n')
    with pytest.raises(UserError) as error:
        generation.read_latents(path, max_count=5)
    assert path in str(error.value) and fragment in str(error.value), str(error.value)


def test_read_latents_casts_numbers_to_float32(tmp_path):
    values = np.random.RandomState(7).randn(3, 16)
    latents = generation.read_latents(saved(tmp_path / 'f64.npy', values))
    assert latents.dtype == np.float32 and np.array_equal(latents, values.astype(np.float32))
    latents = generation.read_latents(saved(tmp_path / 'f16.npy', np.arange(32, dtype=np.float16).reshape(2, 16)))
    assert latents.dtype == np.float32 and latents[1, 15] == 31
    with pytest.raises(UserError, match=r'needs \[N, 512\]'):
        generation.load_latents(str(tmp_path / 'f16.npy'), 512)


def test_image_count_is_bounded_before_anything_is_allocated():
    with pytest.raises(UserError, match='at most %d' % generation.MAX_IMAGES):
        generation.random_latents(generation.MAX_IMAGES + 1, 512, seed=0)
    generation.check_image_count(generation.MAX_IMAGES)


def test_generation_memory_estimate_counts_every_feature_map(tiny_generator):
    """Per image: each layer's feature maps (the length of its bias) times its pixels, counted independently from
    the networks' rule nf(stage) = min(fmap_base / 2**stage, fmap_max) with fmap_base 128 and fmap_max 32."""
    nf = lambda stage: min(128 // 2 ** stage, 32)
    # 4x4: the dense layer and one convolution; every larger block: two convolutions
    per_image = 2 * 16 * nf(1) + 2 * 64 * nf(2) + 2 * 256 * nf(3)
    expected = 4 * generation.GENERATION_ACTIVATION_COPIES * per_image
    assert generation.generation_bytes(tiny_generator, 1) == expected
    assert generation.generation_bytes(tiny_generator, 1000) == 1000 * expected
