"""2-inference.py end to end, as a user runs it: a real network pickle, a fresh interpreter per command, PNGs.

The model is a tiny generator (16x16, at most 16 feature maps, latent size 16) with fixed weights, saved by
nodules/gan/legacy.py.  The images the command writes are compared with the same pickle loaded here and run in this process,
converted to 8 bits in NumPy by the formula of the original script.  Every command of this file is started once,
concurrently (importing TensorFlow dominates each run), and the tests then look at what each one did.
"""
import os
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_clean_failure, load_script, run_script
from nodules import generation
from nodules.gan import legacy
from nodules.gan import tfutil
from nodules.util.tfcompat import tf

SCRIPT = '2-inference.py'
DEMO_MODEL = os.path.join(ROOT, 'demo', 'weight', 'AIS.pkl')  # unconditional, stores no class names
TINY = {'num_channels': 1, 'resolution': 16, 'label_size': 0, 'fmap_base': 64, 'fmap_max': 16}
LATENT_SIZE = 16
SIZE = 16
K = 3  # images between the endpoints of an interpolation strip


def to_uint8(x):
    """The original script's conversion of generator output to grey levels: clip(rint((x + 1) / 2 * 255))."""
    return np.clip(np.rint((x + 1) / 2 * 255), 0, 255).astype(np.uint8)


def tiny_weights(net, seed):
    """Fixed random weights, scaled so that most output pixels fall inside -1..1 (clipped pixels compare
    equal whatever the network computed, which would make the comparisons below weak)."""
    rng = np.random.RandomState(seed)
    values = {}
    for name, var in net.vars.items():
        if name == 'lod':
            values[name] = np.float32(0.0)
            continue
        value = rng.standard_normal(var.shape.as_list())
        if name.endswith('/bias'):
            value *= 0.1
        if name.startswith('ToRGB'):
            value *= 0.3
        values[name] = value.astype(np.float32)
    return values


class Model(object):
    def __init__(self, path, graph, session, Gs):
        self.path, self._graph, self._session, self._Gs = path, graph, session, Gs

    def images(self, latents, minibatch_size=None):
        """uint8 [N, 16, 16] computed in this process from the pickle."""
        with self._graph.as_default(), self._session.as_default():
            x = self._Gs.run(latents, np.zeros((len(latents), 0), np.float32), minibatch_size=minibatch_size)
        return to_uint8(x)[..., 0]


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('model') / 'tiny.pkl')
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        G = tfutil.Network('G', 'G_paper', **TINY)
        D = tfutil.Network('D', 'D_paper', **TINY)
        G.set_vars(tiny_weights(G, 1))
        D.set_vars(tiny_weights(D, 2))
        Gs = G.clone('Gs')
        G.set_vars({'ToRGB_lod0/bias': np.array([0.4], np.float32)})  # G differs from Gs: the script must use Gs
        legacy.save_network_pkl(path, (G, D, Gs))
    graph = tf.Graph()
    session = tf.Session(graph=graph)
    with graph.as_default(), session.as_default():
        Gs = legacy.load_network_pkl(path, which=('Gs',))
    yield Model(path, graph, session, Gs)
    session.close()


LABEL_NAMES = ['AIS', 'IAC', 'MIA']


def conditional_pickle(path, label_names=LABEL_NAMES, seed=5):
    """A tiny conditional network pickle (3 classes) with fixed weights, as 3-train.py --conditional writes one:
    G, D and Gs carry the class names in their static_kwargs (none if `label_names` is None, as the original
    code's conditional pickles)."""
    settings = dict(TINY, label_size=len(LABEL_NAMES), latent_size=LATENT_SIZE)
    if label_names is not None:
        settings['label_names'] = list(label_names)
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        G = tfutil.Network('G', 'G_paper', **settings)
        D = tfutil.Network('D', 'D_paper', **settings)
        G.set_vars(tiny_weights(G, seed))
        D.set_vars(tiny_weights(D, seed + 1))
        legacy.save_network_pkl(path, (G, D, G.clone('Gs')))
    return path


def wrong_shape_pickle(path):
    """Networks whose static_kwargs say 16 feature maps while their variables have 8."""
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        nets = [tfutil.Network(name, func, **dict(TINY, fmap_max=8))
                for name, func in (('G', 'G_paper'), ('D', 'D_paper'), ('Gs', 'G_paper'))]
        for net in nets:
            net.init_vars()
            net.static_kwargs = dict(TINY)
        legacy.save_network_pkl(path, nets)


# ----------------------------------------------------------------------------------------------------------------
# The commands

# Bad input: each must fail cleanly, name the problem, and leave its directory exactly as it was.
FAILURES = ['missing model', 'not a pickle', 'truncated pickle', 'pickle of something else', 'wrong shapes',
            'number 0', 'latents of the wrong shape', 'latents not .npy', 'outdir is a file', 'outdir under a file',
            'existing different image', 'latents of strings', 'latents of a structured dtype', 'latents in an npz',
            'latents of objects', 'latents beyond float32', 'seed 2**32', 'number 1e11', 'interpolate 1e11',
            'label index without labels', 'grid exists with other contents', 'grid is an image name',
            'grid under a file', 'grid ends in a slash', 'overwrite onto a directory',
            'seeds with seed', 'seeds with number', 'seeds with latents', 'seeds with interpolate',
            'seeds not a list', 'seeds range backwards', 'seeds beyond 2**32', 'seeds twice', 'seeds too many',
            'latents of integers', 'latents beyond 1e15', 'batch beyond memory']
# --seeds LIST: (extra arguments, fragments of the one-line refusal)
SEEDS_REFUSALS = {
    'seeds with seed': (['--seeds', '0-3', '--seed', '1'], ['--seeds', 'not allowed with', '--seed']),
    'seeds with number': (['--seeds', '0-3', '--number', '4'], ['--seeds', 'not allowed with', '--number']),
    'seeds with latents': (['--seeds', '0-3', '--latents', 'z.npy'], ['--seeds', 'not allowed with', '--latents']),
    'seeds with interpolate': (['--interpolate', '2', '--seeds', '0-3'], ['--seeds', 'not allowed with',
                                                                          '--interpolate']),
    'seeds not a list': (['--seeds', '0-3;5'], ['--seeds', "'0-3;5' is not a seed N or a range A-B"]),
    'seeds range backwards': (['--seeds', '1,9-4'], ['--seeds', 'the range 9-4 ends before it starts']),
    'seeds beyond 2**32': (['--seeds', '4294967290-4294967296'], ['--seeds', 'seed 4294967296 must be below 2**32']),
    'seeds twice': (['--seeds', '0-9,5'], ['--seeds', 'lists seed 5 twice']),
    'seeds too many': (['--seeds', '0-4294967295'], ['--seeds', 'lists 4294967296 seeds', 'at most 100000']),
}


def snapshot(directory):
    """Every folder and file under `directory`, with the files' contents."""
    state = {}
    for folder, _, files in os.walk(directory):
        state[os.path.relpath(folder, directory) + '/'] = None
        for name in files:
            with open(os.path.join(folder, name), 'rb') as f:
                state[os.path.relpath(os.path.join(folder, name), directory)] = f.read()
    return state


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return path


def prepare_failures(model, root):
    """{name: (arguments, fragments the error must contain)}; each case's files live in root/<name>/."""
    cases = {}
    with open(model.path, 'rb') as f:
        model_bytes = f.read()
    for name in FAILURES:
        d = os.path.join(root, name.replace(' ', '_'))
        os.makedirs(d)
        out = os.path.join(d, 'out')
        args, fragments = ['--model', model.path, '--outdir', out], []
        if name == 'missing model':
            bad = os.path.join(d, 'absent.pkl')
            args, fragments = ['--model', bad, '--outdir', out], [bad, 'no such model file']
        elif name == 'not a pickle':
            bad = write(os.path.join(d, 'AIS.pkl'), b'these are not the weights you are looking for\n')
            args, fragments = ['--model', bad, '--outdir', out], [bad, 'pickle']
        elif name == 'truncated pickle':
            bad = write(os.path.join(d, 'cut.pkl'), model_bytes[:len(model_bytes) // 2])
            args, fragments = ['--model', bad, '--outdir', out], [bad, 'truncated']
        elif name == 'pickle of something else':
            bad = write(os.path.join(d, 'arrays.pkl'), pickle.dumps([np.zeros((3, 3), np.float32)] * 3, protocol=4))
            args, fragments = ['--model', bad, '--outdir', out], [bad, '(G, D, Gs)']
        elif name == 'wrong shapes':
            bad = os.path.join(d, 'shapes.pkl')
            wrong_shape_pickle(bad)
            args, fragments = ['--model', bad, '--outdir', out], [bad, 'shape', '[16, 256]']
        elif name == 'number 0':
            args, fragments = args + ['--number', '0'], ['--number', 'at least 1']
        elif name == 'latents of the wrong shape':
            bad = os.path.join(d, 'z.npy')
            np.save(bad, np.zeros((4, LATENT_SIZE - 1), np.float32))
            args, fragments = args + ['--latents', bad], [bad, '[4, 15]', '[N, 16]']
        elif name == 'latents not .npy':
            bad = write(os.path.join(d, 'z.txt'), b'0.1 0.2 0.3\n')
            args, fragments = args + ['--latents', bad], [bad, '.npy']
        elif name == 'outdir is a file':
            out = write(os.path.join(d, 'results'), b'my notes\n')
            args, fragments = ['--model', model.path, '--outdir', out], [out, 'existing file']
        elif name == 'outdir under a file':
            blocker = write(os.path.join(d, 'results'), b'my notes\n')
            out = os.path.join(blocker, 'run1')
            args, fragments = ['--model', model.path, '--outdir', out], [out, blocker]
        elif name == 'existing different image':
            os.makedirs(out)
            existing = os.path.join(out, 'inference_img_0.png')
            Image.fromarray(np.full((SIZE, SIZE), 77, np.uint8), 'L').save(existing)
            fragments = [existing, 'already exists']
        elif name.startswith('latents '):
            bad = os.path.join(d, 'z.npy')
            if name == 'latents of strings':
                np.save(bad, np.full((4, LATENT_SIZE), '0.5'))
                fragments = [bad, 'floating-point numbers']
            elif name == 'latents of integers':  # the README promises float arrays: an int array is a mistake
                np.save(bad, np.ones((4, LATENT_SIZE), np.int32))
                fragments = [bad + ': holds int32 values; latents must be floating-point numbers']
            elif name == 'latents beyond 1e15':  # finite, but their squares overflow: the all-zero latent's image
                np.save(bad, np.full((4, LATENT_SIZE), 1e30, np.float32))
                fragments = [bad + ': latents hold values up to 1e+30; beyond 1e+15 they overflow']
            elif name == 'latents of a structured dtype':
                np.save(bad, np.zeros(4, dtype=[('z', np.float32, (LATENT_SIZE,))]))
                fragments = [bad, 'structured']
            elif name == 'latents in an npz':
                bad = os.path.join(d, 'z.npz')
                np.savez(bad, z=np.zeros((4, LATENT_SIZE), np.float32))
                fragments = [bad, '.npz']
            elif name == 'latents of objects':
                np.save(bad, np.array([[0.5] * LATENT_SIZE] * 4, dtype=object))
                fragments = [bad, 'Python objects']
            else:
                np.save(bad, np.full((4, LATENT_SIZE), 1e300))  # finite in float64, infinite in float32
                fragments = [bad, 'float32']
            args = args + ['--latents', bad]
        elif name == 'seed 2**32':
            args, fragments = args + ['--seed', str(2 ** 32)], ['--seed', '2**32']
        elif name == 'number 1e11':
            args, fragments = args + ['--number', '100000000000'], ['100000000000', 'at most 100000']
        elif name == 'interpolate 1e11':
            args, fragments = args + ['--interpolate', '100000000000'], ['at most 100000']
        elif name == 'label index without labels':
            args, fragments = args + ['--label-index', '0'], ['--label-index', 'without labels']
        elif name.startswith('grid '):
            os.makedirs(out)
            notes = write(os.path.join(d, 'notes'), b'my notes\n')
            grid = {'grid exists with other contents': os.path.join(out, 'mosaic.png'),
                    'grid is an image name': 'inference_img_3.png',
                    'grid under a file': os.path.join(notes, 'mosaic.png'),
                    'grid ends in a slash': os.path.join(d, 'mosaics') + '/'}[name]
            if name == 'grid exists with other contents':
                write(grid, b'an earlier mosaic')
            args, fragments = args + ['--grid', grid], [os.path.basename(grid.rstrip('/'))]
        elif name == 'overwrite onto a directory':
            os.makedirs(os.path.join(out, 'inference_img_5.png'))
            for index in (0, 9):
                write(os.path.join(out, 'inference_img_%d.png' % index), b'earlier results')
            args, fragments = args + ['--overwrite'], ['inference_img_5.png', 'directory']
        elif name == 'batch beyond memory':  # the demo weights: about 1.9 MB per image in the estimate, 190 GB
            args = ['--model', DEMO_MODEL, '--outdir', out, '--number', '100000', '--batch-size', '100000']
            fragments = ['--batch-size 100000: generating 100000 images at once needs about 192 GB of memory']
        elif name in SEEDS_REFUSALS:
            extra, fragments = SEEDS_REFUSALS[name]
            args = args + extra
        cases[name] = (d, args, fragments)
    return cases


class Runs(object):
    pass


@pytest.fixture(scope='module')
def runs(model, tmp_path_factory):
    root = str(tmp_path_factory.mktemp('runs'))
    runs = Runs()
    runs.root = root
    runs.latents = np.random.RandomState(99).randn(3, LATENT_SIZE).astype(np.float32)
    latents_file = os.path.join(root, 'latents.npy')
    np.save(latents_file, runs.latents)

    def out(name):
        return os.path.join(root, name)
    commands = {
        'help': ['-h'],
        'defaults': ['--model', model.path, '--outdir', out('defaults')],
        'seed 0 again, grid': ['--model', model.path, '--outdir', out('again'), '--seed', '0', '--grid', 'mosaic.png'],
        'seed 1, batch 1': ['--model', model.path, '--outdir', out('batch1'), '--seed', '1', '--batch-size', '1'],
        'seed 1, batch 7': ['--model', model.path, '--outdir', out('batch7'), '--seed', '1', '--batch-size', '7'],
        'latents': ['--model', model.path, '--outdir', out('latents'), '--latents', latents_file],
        'interpolate': ['--model', model.path, '--outdir', out('strips'), '--interpolate', str(K), '--number', '2'],
        'seeds': ['--model', model.path, '--outdir', out('seeds'), '--seeds', '120,0-1', '--grid', 'mosaic.png'],
        'seed 1 of the list alone': ['--model', model.path, '--outdir', out('seed1'), '--seeds', '1'],
        'seeds, batch 2': ['--model', model.path, '--outdir', out('seeds2'), '--seeds', '120,0-1', '--batch-size', '2'],
    }
    runs.failures = prepare_failures(model, os.path.join(root, 'failures'))
    runs.before = {name: snapshot(d) for name, (d, _, _) in runs.failures.items()}
    commands.update((name, args) for name, (_, args, _) in runs.failures.items())

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(run_script, SCRIPT, *args) for name, args in commands.items()}
    runs.results = {name: future.result() for name, future in futures.items()}
    runs.outdir = out
    return runs


def succeeded(runs, name):
    result = runs.results[name]
    assert result.returncode == 0 and 'Traceback' not in result.stderr, (name, result.stdout, result.stderr)
    return result


def read_pngs(directory, pattern, count):
    """The PNGs of `directory` named by `pattern` % 0..count-1 (or % each of a list of numbers), checked to be
    8-bit grayscale, as uint8 arrays."""
    images = []
    for index in (range(count) if isinstance(count, int) else count):
        image = Image.open(os.path.join(directory, pattern % index))
        assert image.format == 'PNG' and image.mode == 'L', (pattern % index, image.format, image.mode)
        images.append(np.asarray(image))
    return np.stack(images)


def file_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


# ----------------------------------------------------------------------------------------------------------------
# The interface the user knows


def test_help_and_defaults(runs):
    result = succeeded(runs, 'help')
    text = ' '.join(result.stdout.split())  # independent of how argparse wraps lines
    assert '2-inference.py [-h] [--model MODEL] [--number NUMBER] [--outdir OUTDIR]' in text
    for fragment in ('Nodule generation pipeline', 'the model weight file path', 'set the number of output images',
                     'the output path', '[--seeds LIST]'):
        assert fragment in text, fragment
    for fragment in ('the model weight file path (default: demo/weight/AIS.pkl)', 'the output path (default: '
                     'demo/output)', 'set the number of output images (default: 10,', 'same images (default: 0)'):
        assert fragment in text, fragment  # the defaults, as the original's help never said them

    script = load_script(SCRIPT)
    args = script.parse_args([])
    assert args.model == 'demo/weight/AIS.pkl'
    assert args.outdir == 'demo/output'
    assert args.number in (None, 10)  # None stands for "10, or as many as --latents holds"; 10 files: next test
    args = script.parse_args(['--model', 'm.pkl', '--number', '3', '--outdir', 'o'])
    assert (args.model, args.number, args.outdir) == ('m.pkl', 3, 'o')


def test_default_command_writes_the_generators_images(runs, model):
    result = succeeded(runs, 'defaults')
    out = runs.outdir('defaults')
    assert sorted(os.listdir(out)) == sorted('inference_img_%d.png' % i for i in range(10))  # nothing else
    images = read_pngs(out, 'inference_img_%d.png', 10)
    assert images.shape == (10, SIZE, SIZE)

    latents = generation.random_latents(10, LATENT_SIZE, seed=0)
    assert np.array_equal(latents, np.random.RandomState(0).randn(10, LATENT_SIZE).astype(np.float32))
    expected = model.images(latents)
    assert np.mean((expected == 0) | (expected == 255)) < 0.05  # a meaningful comparison: few clipped pixels
    assert np.array_equal(images, expected)
    assert 'wrote 10 file(s)' in result.stdout


def test_same_seed_same_bytes_and_the_mosaic(runs):
    succeeded(runs, 'seed 0 again, grid')
    first, again = runs.outdir('defaults'), runs.outdir('again')
    for i in range(10):
        name = 'inference_img_%d.png' % i
        assert file_bytes(os.path.join(first, name)) == file_bytes(os.path.join(again, name)), name
    images = read_pngs(first, 'inference_img_%d.png', 10)

    mosaic = Image.open(os.path.join(again, 'mosaic.png'))
    assert mosaic.mode == 'L'
    mosaic = np.asarray(mosaic)
    columns = int(np.ceil(np.sqrt(10)))
    rows = int(np.ceil(10.0 / columns))
    height, width = mosaic.shape
    pad_x, pad_y = (width - columns * SIZE) // (columns - 1), (height - rows * SIZE) // (rows - 1)
    assert pad_x == pad_y >= 0
    assert (width, height) == (columns * SIZE + (columns - 1) * pad_x, rows * SIZE + (rows - 1) * pad_y)
    covered = np.zeros(mosaic.shape, bool)
    for i, image in enumerate(images):
        top, left = (i // columns) * (SIZE + pad_y), (i % columns) * (SIZE + pad_x)
        assert np.array_equal(mosaic[top:top + SIZE, left:left + SIZE], image), i
        covered[top:top + SIZE, left:left + SIZE] = True
    gaps = mosaic[~covered]
    assert gaps.size == 0 or np.all(gaps == gaps[0])  # between the tiles: a plain background


def test_seed_and_batch_size(runs, model):
    succeeded(runs, 'seed 1, batch 1')
    succeeded(runs, 'seed 1, batch 7')
    one = read_pngs(runs.outdir('batch1'), 'inference_img_%d.png', 10)
    seven = read_pngs(runs.outdir('batch7'), 'inference_img_%d.png', 10)
    seed0 = read_pngs(runs.outdir('defaults'), 'inference_img_%d.png', 10)
    assert all(np.mean(np.abs(a.astype(int) - b)) > 5 for a, b in zip(one, seed0))  # another seed, other nodules

    latents = generation.random_latents(10, LATENT_SIZE, seed=1)
    assert np.array_equal(one, model.images(latents, minibatch_size=1))
    assert np.array_equal(seven, model.images(latents, minibatch_size=7))
    # The batch size changes TensorFlow's summation order, so floats differ in the last bits (~1e-6) and a pixel
    # right at a rounding boundary may move by one grey level; anything more would be a real difference.
    difference = np.abs(one.astype(int) - seven)
    assert difference.max() <= 1
    assert np.mean(difference == 0) > 0.99


def test_latents_file(runs, model):
    succeeded(runs, 'latents')
    out = runs.outdir('latents')
    assert sorted(os.listdir(out)) == ['inference_img_%d.png' % i for i in range(3)]  # as many as the file holds
    assert np.array_equal(read_pngs(out, 'inference_img_%d.png', 3), model.images(runs.latents))


def test_interpolation_strips(runs, model):
    succeeded(runs, 'interpolate')
    out = runs.outdir('strips')
    assert sorted(os.listdir(out)) == ['interpolation_0.png', 'interpolation_1.png']
    strips = read_pngs(out, 'interpolation_%d.png', 2)
    assert strips.shape == (2, SIZE, (K + 2) * SIZE)
    tiles = strips.reshape(2, SIZE, K + 2, SIZE).transpose(0, 2, 1, 3)  # [strip, tile, y, x]

    endpoints = generation.random_latents(4, LATENT_SIZE, seed=0)  # pairs (0, 1) and (2, 3)
    steps = np.arange(K + 2, dtype=np.float64)[:, np.newaxis] / (K + 1)
    strip_latents = np.concatenate([(1 - steps) * a + steps * b for a, b in zip(endpoints[0::2], endpoints[1::2])])
    strip_latents = strip_latents.astype(np.float32)
    assert np.array_equal(strip_latents[[0, K + 1, K + 2, 2 * K + 3]], endpoints)  # the ends are the endpoints
    expected = model.images(strip_latents).reshape(2, K + 2, SIZE, SIZE)  # one batch of 10, as the script ran it

    for pair in range(2):
        assert np.array_equal(tiles[pair, 0], expected[pair, 0])
        assert np.array_equal(tiles[pair, -1], expected[pair, -1])
        # In between, the script's float32 steps may differ from these in the last bit.
        assert np.abs(tiles[pair, 1:-1].astype(int) - expected[pair, 1:-1]).max() <= 1
        assert np.mean(np.abs(tiles[pair, 0].astype(int) - tiles[pair, -1])) > 5  # it goes somewhere
    # The endpoints' images also match generating the endpoints on their own (up to TensorFlow's batch-size noise).
    alone = model.images(endpoints)
    assert np.abs(tiles[:, [0, -1]].reshape(4, SIZE, SIZE).astype(int) - alone[[0, 1, 2, 3]]).max() <= 1


def test_interpolation_latents_end_exactly_on_the_endpoints():
    endpoints = generation.random_latents(6, 512, seed=3)
    strips = generation.interpolation_latents(endpoints, K).reshape(3, K + 2, 512)
    assert np.array_equal(strips[:, 0], endpoints[0::2])
    assert np.array_equal(strips[:, -1], endpoints[1::2])
    middle = (endpoints[0::2] + endpoints[1::2]) / 2
    assert np.allclose(strips[:, (K + 1) // 2], middle, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize('name', FAILURES)
def test_bad_input_fails_cleanly_and_writes_nothing(runs, name):
    directory, args, fragments = runs.failures[name]
    assert_clean_failure(runs.results[name], *fragments)
    assert snapshot(directory) == runs.before[name]


# ----------------------------------------------------------------------------------------------------------------
# Conditional generators: --label NAME next to --label-index



@pytest.fixture(scope='module')
def conditional_runs(tmp_path_factory):
    """A conditional pickle with class names and one without; each command runs once, concurrently."""
    root = str(tmp_path_factory.mktemp('conditional'))
    named = conditional_pickle(os.path.join(root, 'named.pkl'))
    nameless = conditional_pickle(os.path.join(root, 'nameless.pkl'), label_names=None)

    def out(name):
        return os.path.join(root, name.replace(' ', '_'))
    commands = {
        'label MIA': ['--model', named, '--label', 'MIA', '--number', 6, '--seed', 4],
        'label-index 2': ['--model', named, '--label-index', 2, '--number', 6, '--seed', 4],
        'label-index 0': ['--model', named, '--label-index', 0, '--number', 6, '--seed', 4],
        'interpolate IAC': ['--model', named, '--label', 'IAC', '--interpolate', K, '--number', 2, '--seed', 6],
        'label on the demo model': ['--model', DEMO_MODEL, '--label', 'AIS'],
        'unknown label': ['--model', named, '--label', 'SCC'],
        'label without stored names': ['--model', nameless, '--label', 'MIA'],
        'no label, names stored': ['--model', named],
        'no label, no names stored': ['--model', nameless],
    }
    commands = {name: args + ['--outdir', out(name)] for name, args in commands.items()}
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(run_script, SCRIPT, *args) for name, args in commands.items()}
    runs = Runs()
    runs.results = {name: future.result() for name, future in futures.items()}
    runs.named, runs.nameless, runs.outdir = named, nameless, out
    return runs


def conditional_images(path, latents, labels):
    """uint8 images of the pickle's Gs for these latents and per-image labels, through nodules/generation.py."""
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        Gs = legacy.load_network_pkl(path, which=('Gs',))
        return generation.generate_images(Gs, latents, labels=labels)


def one_hot_rows(number, index):
    labels = np.zeros((number, len(LABEL_NAMES)), np.float32)
    labels[:, index] = 1
    return labels


@pytest.mark.slow
def test_label_by_name_writes_the_images_of_that_label_index(conditional_runs):
    for name in ('label MIA', 'label-index 2', 'label-index 0'):
        succeeded(conditional_runs, name)
    by_name, by_index = conditional_runs.outdir('label MIA'), conditional_runs.outdir('label-index 2')
    assert sorted(os.listdir(by_name)) == sorted('inference_img_%d.png' % i for i in range(6))
    for i in range(6):
        png = 'inference_img_%d.png' % i
        assert file_bytes(os.path.join(by_name, png)) == file_bytes(os.path.join(by_index, png)), png

    images = read_pngs(by_name, 'inference_img_%d.png', 6)
    latents = generation.random_latents(6, LATENT_SIZE, seed=4)
    assert np.array_equal(images, conditional_images(conditional_runs.named, latents, one_hot_rows(6, 2)))
    # The class matters: the same latents as class 0 (AIS) are other nodules.
    class_0 = read_pngs(conditional_runs.outdir('label-index 0'), 'inference_img_%d.png', 6)
    assert np.array_equal(class_0, conditional_images(conditional_runs.named, latents, one_hot_rows(6, 0)))
    assert all(np.mean(np.abs(a.astype(int) - b)) > 2 for a, b in zip(images, class_0))


@pytest.mark.slow
def test_interpolation_stays_within_the_chosen_class(conditional_runs):
    succeeded(conditional_runs, 'interpolate IAC')
    out = conditional_runs.outdir('interpolate IAC')
    assert sorted(os.listdir(out)) == ['interpolation_0.png', 'interpolation_1.png']
    strips = read_pngs(out, 'interpolation_%d.png', 2)
    tiles = strips.reshape(2, SIZE, K + 2, SIZE).transpose(0, 2, 1, 3).reshape(-1, SIZE, SIZE)

    latents = generation.interpolation_latents(generation.random_latents(4, LATENT_SIZE, seed=6), K)
    iac = one_hot_rows(len(latents), LABEL_NAMES.index('IAC'))  # every image of every strip, both ends included
    assert np.array_equal(tiles, conditional_images(conditional_runs.named, latents, iac))
    # Another class at one end would show: the strips' ends as MIA are other images.
    mia = one_hot_rows(len(latents), LABEL_NAMES.index('MIA'))
    other = conditional_images(conditional_runs.named, latents, mia)
    ends = [0, K + 1, K + 2, 2 * K + 3]
    assert all(np.mean(np.abs(tiles[i].astype(int) - other[i])) > 2 for i in ends)


def assert_one_line_refusal(runs, name, *fragments):
    result = runs.results[name]
    assert_clean_failure(result, *fragments)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(runs.outdir(name))  # nothing written, not even the output directory


@pytest.mark.slow
def test_label_on_an_unconditional_generator_is_refused(conditional_runs):
    assert_one_line_refusal(conditional_runs, 'label on the demo model', DEMO_MODEL,
                            'this generator was trained without labels; --label does not apply')


@pytest.mark.slow
def test_unknown_label_lists_the_class_names(conditional_runs):
    assert_one_line_refusal(conditional_runs, 'unknown label', conditional_runs.named, "'SCC'", 'AIS, IAC, MIA')


@pytest.mark.slow
def test_label_on_a_conditional_generator_without_names_points_to_label_index(conditional_runs):
    assert_one_line_refusal(conditional_runs, 'label without stored names', conditional_runs.nameless,
                            'stores no class names', '--label-index 0..2')


@pytest.mark.slow
def test_conditional_generator_without_a_class_asks_for_one(conditional_runs):
    assert_one_line_refusal(conditional_runs, 'no label, names stored', conditional_runs.named,
                            'conditional on 3 classes (AIS, IAC, MIA)', '--label AIS|IAC|MIA', '--label-index 0..2')
    assert_one_line_refusal(conditional_runs, 'no label, no names stored', conditional_runs.nameless,
                            'conditional on 3 classes', '--label-index 0..2')
    assert '--label ' not in conditional_runs.results['no label, no names stored'].stderr


def test_label_and_label_index_together_are_refused_when_parsing(tmp_path):
    out = str(tmp_path / 'out')
    result = run_script(SCRIPT, '--model', str(tmp_path / 'any.pkl'), '--label', 'MIA', '--label-index', '2',
                        '--outdir', out)
    assert_clean_failure(result, '--label-index', 'not allowed with', '--label')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert os.listdir(str(tmp_path)) == []

    result = run_script(SCRIPT, '-h')
    text = ' '.join(result.stdout.split())
    assert '[--label NAME | --label-index I]' in text
    assert 'stored with networks trained by 3-train.py --conditional' in text


# ----------------------------------------------------------------------------------------------------------------
# --seeds LIST: one image per seed, named after it, each the image of its seed alone


def test_seeds_write_one_image_per_seed_named_after_it(runs, model):
    result = succeeded(runs, 'seeds')
    out = runs.outdir('seeds')
    assert sorted(os.listdir(out)) == ['mosaic.png', 'seed0000.png', 'seed0001.png', 'seed0120.png']
    assert 'wrote 4 file(s)' in result.stdout
    images = read_pngs(out, 'seed%04d.png', [120, 0, 1])
    # Each image is the generator on its seed's own latent vector, RandomState(seed).randn(latent_size), computed
    # in a minibatch of the script's size (32) whatever else the minibatch holds.
    latents = np.stack([np.random.RandomState(s).randn(LATENT_SIZE) for s in (120, 0, 1)]).astype(np.float32)
    padded = np.concatenate([latents, np.random.RandomState(7).randn(29, LATENT_SIZE).astype(np.float32)])
    assert np.array_equal(images, model.images(padded, minibatch_size=32)[:3])
    # Seed 0's image is also the first image of --seed 0 (the default command), up to TensorFlow's rounding at
    # another batch size.
    defaults = read_pngs(runs.outdir('defaults'), 'inference_img_%d.png', 1)[0]
    assert np.abs(images[1].astype(int) - defaults).max() <= 1
    mosaic = np.asarray(Image.open(os.path.join(out, 'mosaic.png')))
    assert np.array_equal(mosaic[:SIZE, :SIZE], images[0])  # the mosaic keeps the order of the list


def test_a_seeds_image_does_not_depend_on_the_other_seeds(runs):
    succeeded(runs, 'seed 1 of the list alone')
    assert os.listdir(runs.outdir('seed1')) == ['seed0001.png']
    # Byte for byte: a list that overlaps an earlier one can be written into the same folder (identical files are
    # left alone), as StyleGAN's generate.py users expect.
    assert file_bytes(os.path.join(runs.outdir('seed1'), 'seed0001.png')) == \
        file_bytes(os.path.join(runs.outdir('seeds'), 'seed0001.png'))


def test_seeds_at_another_batch_size_differ_at_most_by_rounding(runs):
    succeeded(runs, 'seeds, batch 2')
    at_32, at_2 = (read_pngs(runs.outdir(d), 'seed%04d.png', [120, 0, 1]).astype(int) for d in ('seeds', 'seeds2'))
    assert np.abs(at_32 - at_2).max() <= 1


def test_seed_latents_are_drawn_per_seed_alike_on_every_stack():
    latents = generation.seed_latents([0, 120, 2 ** 32 - 1], 4)
    assert latents.dtype == np.float32
    assert latents.tolist() == [  # RandomState(seed).randn(4) as float32: NumPy keeps this stream stable
        [1.764052391052246, 0.40015721321105957, 0.978738009929657, 2.2408931255340576],
        [0.1474497765302658, 2.0248403549194336, -0.4268803596496582, 2.3102903366088867],
        [0.6484086513519287, 0.6693235039710999, -1.0805437564849854, 0.2845010459423065]]
    odd = generation.seed_latents([5, 3, 5], 7)  # odd sizes leave a cached normal behind in a generator: not here
    assert np.array_equal(odd[0], odd[2])
    assert np.array_equal(odd[1], generation.random_latents(1, 7, 3)[0])


@pytest.mark.parametrize('text, seeds', [('5', [5]), ('0-3,7', [0, 1, 2, 3, 7]), (' 9 , 2-3 ', [9, 2, 3]),
                                         ('4294967295', [2 ** 32 - 1]), ('0-99999', list(range(100000)))])
def test_seed_lists_parse_in_the_order_given(text, seeds):
    assert load_script(SCRIPT).parse_args(['--seeds', text]).seeds == seeds
