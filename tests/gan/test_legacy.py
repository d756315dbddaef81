"""nodules/gan/legacy.py: reading network pickles in the published layout, refusing everything else, writing our own.

The "published" pickles are built here from plain NumPy arrays, without our tfutil.Network: a throwaway module
stands in for the original `tfutil` (or the older `network`) while pickling, so the bytes name the original
class and carry the original version-2 state dict, and nothing of ours is in them.  The expected variable names
and shapes come from an independent list written from the PGGAN architecture, not from nodules/gan/networks.py.  The
networks are tiny (16x16, at most 16 feature maps) so that every test builds them in well under a second.

Hostile files (lengths, memo indices and frames far beyond the file, codecs, shapes that overflow) are read under
a memory limit, and those that could hang the reader run in a separate interpreter with a time limit.
"""
import _codecs
import contextlib
import io
import os
import pickle
import pickletools
import resource
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from nodules.util import cli
from conftest import ROOT, assert_clean_failure, run_script
from nodules.util.errors import UserError
from nodules.gan import legacy
from nodules.gan import tfutil
from nodules.util.tfcompat import tf

TINY = {'num_channels': 1, 'resolution': 16, 'label_size': 0, 'fmap_base': 64, 'fmap_max': 16}
LATENT_SIZE = 16  # nf(0) = min(64 / 2^0, 16)
NUMPY_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')  # NumPy 1.x / 2.x names in array pickles


# ----------------------------------------------------------------------------------------------------------------
# The expected variables, from the PGGAN architecture


def _nf(fmap_base, fmap_max, fmap_decay=1.0):
    return lambda stage: min(int(fmap_base / 2.0 ** (stage * fmap_decay)), fmap_max)


def generator_variables(num_channels=1, resolution=64, label_size=0, fmap_base=8192, fmap_max=512,
                        latent_size=None):
    """[(name, shape)] of G_paper (fused scaling) in creation order, as the original pickles list them."""
    nf = _nf(fmap_base, fmap_max)
    log2 = int(round(np.log2(resolution)))
    latent_size = nf(0) if latent_size is None else latent_size
    variables = [('lod', ()),
                 ('4x4/Dense/weight', (latent_size + label_size, nf(1) * 16)), ('4x4/Dense/bias', (nf(1),)),
                 ('4x4/Conv/weight', (3, 3, nf(1), nf(1))), ('4x4/Conv/bias', (nf(1),)),
                 ('ToRGB_lod%d/weight' % (log2 - 2), (1, 1, nf(1), num_channels)),
                 ('ToRGB_lod%d/bias' % (log2 - 2), (num_channels,))]
    for r in range(3, log2 + 1):
        block = '%dx%d' % (2 ** r, 2 ** r)
        variables += [(block + '/Conv0_up/weight', (3, 3, nf(r - 1), nf(r - 2))),  # stored [k, k, out, in]
                      (block + '/Conv0_up/bias', (nf(r - 1),)),
                      (block + '/Conv1/weight', (3, 3, nf(r - 1), nf(r - 1))), (block + '/Conv1/bias', (nf(r - 1),)),
                      ('ToRGB_lod%d/weight' % (log2 - r), (1, 1, nf(r - 1), num_channels)),
                      ('ToRGB_lod%d/bias' % (log2 - r), (num_channels,))]
    return variables


def discriminator_variables(num_channels=1, resolution=64, label_size=0, fmap_base=8192, fmap_max=512):
    """[(name, shape)] of D_paper (fused scaling, minibatch stddev on) in creation order, as the original pickles list
    them."""
    nf = _nf(fmap_base, fmap_max)
    log2 = int(round(np.log2(resolution)))
    variables = [('lod', ()),
                 ('FromRGB_lod0/weight', (1, 1, num_channels, nf(log2 - 1))), ('FromRGB_lod0/bias', (nf(log2 - 1),))]
    for r in range(log2, 2, -1):
        block = '%dx%d' % (2 ** r, 2 ** r)
        lod = log2 - r + 1
        variables += [(block + '/Conv0/weight', (3, 3, nf(r - 1), nf(r - 1))), (block + '/Conv0/bias', (nf(r - 1),)),
                      (block + '/Conv1_down/weight', (3, 3, nf(r - 1), nf(r - 2))),
                      (block + '/Conv1_down/bias', (nf(r - 2),)),
                      ('FromRGB_lod%d/weight' % lod, (1, 1, num_channels, nf(r - 2))),
                      ('FromRGB_lod%d/bias' % lod, (nf(r - 2),))]
    variables += [('4x4/Conv/weight', (3, 3, nf(1) + 1, nf(1))), ('4x4/Conv/bias', (nf(1),)),
                  ('4x4/Dense0/weight', (nf(1) * 16, nf(0))), ('4x4/Dense0/bias', (nf(0),)),
                  ('4x4/Dense1/weight', (nf(0), 1 + label_size)), ('4x4/Dense1/bias', (1 + label_size,))]
    return variables


def test_expected_variable_lists_match_the_published_parameter_counts():
    """The lists above reproduce the parameter counts of PGGAN's default 64x64 networks (22.5M each) and their
    layer shapes."""
    def trainable(variables):
        return sum(int(np.prod(shape)) for name, shape in variables if name != 'lod')
    G, D = generator_variables(), discriminator_variables()
    assert trainable(G) == 22485765
    assert trainable(D) == 22493441
    G, D = dict(G), dict(D)
    assert G['4x4/Dense/weight'] == (512, 8192) and G['64x64/Conv0_up/weight'] == (3, 3, 256, 512)
    assert G['ToRGB_lod0/weight'] == (1, 1, 256, 1) and G['ToRGB_lod4/weight'] == (1, 1, 512, 1)
    assert D['4x4/Conv/weight'] == (3, 3, 513, 512) and D['4x4/Dense0/weight'] == (8192, 512)


# ----------------------------------------------------------------------------------------------------------------
# Writing pickles in the published layout without our Network class


def published_state(name, build_func_name, seed, lod=0.0, build_module_src='# nodules/gan/networks.py of the original\n'):
    """The version-2 state dict of the original tfutil.Network, filled with our own random arrays."""
    variables_of = generator_variables if build_func_name == 'G_paper' else discriminator_variables
    kwargs = dict(TINY)
    shapes = variables_of(**kwargs)
    rng = np.random.RandomState(seed)
    variables = [('lod', np.float32(lod))]  # the original's get_vars() returned the scalar as np.float32
    variables += [(n, rng.standard_normal(shape).astype(np.float32)) for n, shape in shapes[1:]]
    return {'version': 2, 'name': name, 'static_kwargs': kwargs, 'build_module_src': build_module_src,
            'build_func_name': build_func_name, 'variables': variables}


def published_states(**overrides):
    return [published_state('G', 'G_paper', 1, **overrides), published_state('D', 'D_paper', 2, **overrides),
            published_state('Gs', 'G_paper', 3, **overrides)]


def pickle_as_original(objects, class_module='tfutil', protocol=4):
    """Pickle `objects`, in which dicts wrapped by `Original` become objects of class `<class_module>.Network`
    whose state is that dict, as if the original code had pickled its networks."""
    fake = types.ModuleType(class_module)

    class Network(object):
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = class_module, 'Network'
    fake.Network = Network

    def convert(obj):
        if isinstance(obj, Original):
            return Network(obj.state)
        if isinstance(obj, tuple):
            return tuple(convert(o) for o in obj)
        return obj

    saved = sys.modules.get(class_module)
    sys.modules[class_module] = fake
    try:
        return pickle.dumps(convert(objects), protocol=protocol)
    finally:
        if saved is None:
            del sys.modules[class_module]
        else:
            sys.modules[class_module] = saved


class Original(object):
    def __init__(self, state):
        self.state = state


def published_pickle(states, class_module='tfutil', numpy_module=None, protocol=4):
    data = pickle_as_original(tuple(Original(s) for s in states), class_module, protocol)
    return rename_numpy_module(data, numpy_module) if numpy_module else data


def rename_numpy_module(data, numpy_module):
    """Rewrite the NumPy module names that array pickles refer to (NumPy 1.x writes numpy.core.multiarray, 2.x
    numpy._core.multiarray), at the opcode level: frames are dropped (they are optional) so lengths may change."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    for index, (op, arg, pos) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(data)
        if op.name == 'FRAME':
            continue
        if op.name == 'SHORT_BINUNICODE' and arg in NUMPY_MODULES:
            encoded = numpy_module.encode('ascii')
            out += b'\x8c' + bytes([len(encoded)]) + encoded
        else:
            out += data[pos:end]
    return bytes(out)


def pickled_globals(data):
    """The (module, name) pairs a protocol 2..4 pickle refers to (following memoized strings)."""
    found, memo, pushed = set(), {}, []
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'MEMOIZE':
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ('GET', 'BINGET', 'LONG_BINGET'):
            pushed.append(memo.get(arg))
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE'):
            pushed.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.add(tuple(pushed[-2:]))
            pushed.append(None)
        elif op.name == 'GLOBAL':
            found.add(tuple(arg.split(' ', 1)))
            pushed.append(None)
        elif op.name not in ('FRAME', 'PROTO'):
            pushed.append(None)  # anything else: not a string the next global could name
    return found


@contextlib.contextmanager
def fresh_session():
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as session:
        yield session


def write(path, data):
    with open(str(path), 'wb') as f:
        f.write(data)
    return str(path)


def listing(directory):
    return sorted(os.path.relpath(os.path.join(d, f), str(directory))
                  for d, _, files in os.walk(str(directory)) for f in files)


# ----------------------------------------------------------------------------------------------------------------
# Published pickles load


@pytest.mark.parametrize('class_module, numpy_module, protocol', [
    ('tfutil', 'numpy.core.multiarray', 4),   # the published AIS/MIA/IAC files (Python 3.6, NumPy 1.x)
    ('network', 'numpy.core.multiarray', 4),  # older PGGAN snapshots
    ('tfutil', 'numpy._core.multiarray', 4),  # the same layout written under NumPy 2
    ('tfutil', None, 2),                      # whatever this NumPy writes, at protocol 2
    ('tfutil', None, 0),                      # protocols 0 and 1 create objects with copy_reg._reconstructor
    ('tfutil', None, 1),
])
def test_published_layout_loads_every_variable(tmp_path, tf_session, class_module, numpy_module, protocol):
    states = published_states(lod=0.0 if class_module == 'tfutil' else 1.5)
    data = published_pickle(states, class_module, numpy_module, protocol)
    assert (class_module, 'Network') in pickled_globals(data)
    if numpy_module:
        assert {(numpy_module, '_reconstruct'), (numpy_module, 'scalar')} <= pickled_globals(data)
    path = write(tmp_path / 'published.pkl', data)

    G, D, Gs = legacy.load_network_pkl(path)

    for net, state in zip((G, D, Gs), states):
        assert isinstance(net, tfutil.Network)
        assert net.name == state['name'] and net.build_func_name == state['build_func_name']
        loaded = net.get_vars()
        assert list(loaded) == [name for name, _ in state['variables']]  # the original's creation order
        for name, value in state['variables']:
            assert loaded[name].dtype == np.float32
            assert loaded[name].shape == np.shape(value), name
            assert np.array_equal(loaded[name], value), name
    assert float(Gs.get_vars()['lod']) == float(states[2]['variables'][0][1])

    latents = np.random.RandomState(0).randn(8, LATENT_SIZE).astype(np.float32)
    images = Gs.run(latents, np.zeros((8, 0), np.float32))
    assert images.shape == (8, 16, 16, 1) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and np.std(images) > 0
    assert not np.array_equal(images, G.run(latents, np.zeros((8, 0), np.float32)))  # G and Gs kept apart
    scores = D.run(images)  # minibatch stddev: 8 is a multiple of the group size 4
    assert scores[0].shape == (8, 1) and np.all(np.isfinite(scores[0]))


def test_loading_only_gs_builds_only_gs(tmp_path, tf_session):
    path = write(tmp_path / 'published.pkl', published_pickle(published_states()))
    Gs = legacy.load_network_pkl(path, which=('Gs',))
    assert isinstance(Gs, tfutil.Network) and Gs.name == 'Gs'
    assert {v.name.split('/')[0] for v in tf.global_variables()} == {Gs.scope}


def test_build_module_src_is_never_executed(tmp_path, tf_session):
    def source(marker):
        return 'import os\nwith open(%r, "w") as f:\n    f.write("pwned")\n\ndef G_paper(*a, **k):\n    pass\n' % marker

    live = str(tmp_path / 'live')
    exec(compile(source(live), 'nodules/gan/networks.py', 'exec'), {})  # the source really does create its file when run
    assert os.path.exists(live)

    marker = str(tmp_path / 'pwned')
    path = write(tmp_path / 'published.pkl', published_pickle(published_states(build_module_src=source(marker))))
    G, D, Gs = legacy.load_network_pkl(path)
    assert not os.path.exists(marker)
    assert Gs.get_vars()['4x4/Dense/weight'].shape == (LATENT_SIZE, 16 * 16)


# ----------------------------------------------------------------------------------------------------------------
# Everything else is refused, and nothing happens


class Payload(object):
    """Unpickling this calls `func(*args)` (and then sets `state` on the result, when given)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def payloads(marker):
    return {'os.system': Payload(os.system, ('touch %s' % marker,)),
            'subprocess.call': Payload(subprocess.call, (['touch', marker],)),
            'exec': Payload(exec, ('open(%r, "w").close()' % marker,))}


def assert_refused(path, *fragments):
    """legacy refuses `path` with a UserError naming the file and the problem; returns the message."""
    with pytest.raises(UserError) as info:
        with fresh_session():
            legacy.load_network_pkl(path)
    message = str(info.value)
    assert path in message and '\n' not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize('kind', ['os.system', 'subprocess.call', 'exec'])
@pytest.mark.parametrize('where', ['whole pickle', 'inside a network state'])
def test_a_pickle_that_runs_code_is_refused(tmp_path, kind, where):
    live = str(tmp_path / 'live')
    pickle.loads(pickle.dumps(payloads(live)[kind], protocol=4))  # a plain unpickler does run it
    assert os.path.exists(live)
    os.remove(live)

    marker = str(tmp_path / 'pwned')
    payload = payloads(marker)[kind]
    if where == 'whole pickle':
        data = pickle.dumps(payload, protocol=4)
    else:
        states = published_states()
        states[2]['variables'][1] = ('4x4/Dense/weight', payload)
        data = published_pickle(states)
    path = write(tmp_path / 'evil.pkl', data)
    before = listing(tmp_path)

    message = assert_refused(path, 'refused', payload.func.__name__)
    assert not os.path.exists(marker), message
    assert listing(tmp_path) == before


@pytest.mark.parametrize('content', ['dict', 'list of arrays', 'bare array', 'two networks', 'tuple of dicts'])
def test_a_pickle_of_something_else_is_refused(tmp_path, content):
    states = published_states()
    objects = {'dict': {'G': states[0], 'D': states[1], 'Gs': states[2]},
               'list of arrays': [v for _, v in states[2]['variables']],
               'bare array': states[2]['variables'][1][1],
               'two networks': (Original(states[0]), Original(states[1])),
               'tuple of dicts': tuple(states)}[content]
    path = write(tmp_path / 'other.pkl', pickle_as_original(objects))
    before = listing(tmp_path)
    assert_refused(path, 'not the (G, D, Gs) network tuple')
    assert listing(tmp_path) == before


@pytest.mark.parametrize('keep', [0.5, 0.99, -1, 2, 20])
def test_a_truncated_pickle_is_refused(tmp_path, keep):
    data = published_pickle(published_states())
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path = write(tmp_path / 'cut.pkl', data[:cut])
    assert_refused(path, 'truncated')
    assert listing(tmp_path) == ['cut.pkl']
    with open(path, 'rb') as f:
        assert f.read() == data[:cut]


@pytest.mark.parametrize('content', [np.random.RandomState(0).bytes(4096), b'G, D, Gs = weights\n', b'',
                                     b'\x80\x04' + np.random.RandomState(1).bytes(100)],
                         ids=['random bytes', 'text', 'empty', 'protocol header then noise'])
def test_not_a_pickle_is_refused(tmp_path, content):
    path = write(tmp_path / 'noise.pkl', content)
    assert_refused(path, 'pickle')
    assert listing(tmp_path) == ['noise.pkl']


def test_a_missing_file_or_a_directory_is_refused(tmp_path):
    missing = str(tmp_path / 'absent.pkl')
    assert_refused(missing, 'no such model file')
    assert not os.path.exists(missing)
    assert_refused(str(tmp_path), 'directory')
    assert listing(tmp_path) == []


def _edit_gs(states, edit):
    variables = states[2]['variables']
    names = [n for n, _ in variables]
    if edit == 'missing':
        del variables[names.index('8x8/Conv1/bias')]
    elif edit == 'wrong shape':
        variables[names.index('4x4/Conv/weight')] = ('4x4/Conv/weight', np.zeros((3, 3, 16, 15), np.float32))
    elif edit == 'transposed':
        weight = variables[names.index('16x16/Conv0_up/weight')][1]
        variables[names.index('16x16/Conv0_up/weight')] = ('16x16/Conv0_up/weight', weight.transpose(0, 1, 3, 2))
    elif edit == 'extra':
        variables.append(('32x32/Conv1/weight', np.zeros((3, 3, 8, 8), np.float32)))
    elif edit == 'duplicate':
        variables.append(('lod', np.float32(3.0)))
    elif edit == 'strings':
        variables[names.index('ToRGB_lod0/bias')] = ('ToRGB_lod0/bias', np.array(['0.5']))
    elif edit == 'objects':
        variables[names.index('ToRGB_lod0/bias')] = ('ToRGB_lod0/bias', np.array([0.5], dtype=object))
    elif edit == 'booleans':
        variables[names.index('ToRGB_lod0/bias')] = ('ToRGB_lod0/bias', np.array([True]))
    elif edit == 'NaN':
        variables[names.index('8x8/Conv1/weight')][1][1, 2, 3, 4] = np.nan
    elif edit == 'infinity':
        variables[names.index('lod')] = ('lod', np.float32(np.inf))
    elif edit == 'build_func_name a list':
        states[2]['build_func_name'] = ['G_paper']
    elif edit == 'build_func_name holds an array':
        states[2]['build_func_name'] = ('G_paper', np.zeros((4, 4)))
    elif edit == 'version an array':
        states[2]['version'] = np.array([2, 2])
    elif edit == 'name an int':
        states[2]['name'] = 7
    elif edit == 'name a path':
        states[2]['name'] = '../Gs'
    elif edit == 'huge setting':
        states[2]['static_kwargs'] = dict(TINY, fmap_base=2 ** 40)
    elif edit == 'nested list setting':
        states[2]['static_kwargs'] = dict(TINY, label_names=[['AIS'], 'MIA'])
    elif edit == 'endless list setting':
        states[2]['static_kwargs'] = dict(TINY, label_names=['c%d' % i for i in range(legacy.MAX_SETTING_ITEMS + 1)])
    elif edit == 'unknown network':
        states[2]['build_func_name'] = 'G_mine'
    elif edit == 'wrong config':
        states[2]['static_kwargs'] = dict(TINY, resolution=32)
    elif edit == 'G, D, D':  # a valid discriminator in the generator's place
        states[2] = dict(states[1], name='Gs')
    elif edit == 'two channels':
        for state in states:  # consistent, so that only the channel count is wrong
            state['static_kwargs'] = dict(TINY, num_channels=2)
    elif edit == 'four channels':
        states[2]['static_kwargs'] = dict(TINY, num_channels=4)
    elif edit == 'unknown setting':
        states[2]['static_kwargs'] = dict(TINY, fmap_bse=64)
    elif edit == 'use_wscale yes':
        states[2]['static_kwargs'] = dict(TINY, use_wscale='yes')
    elif edit == 'fractional fmap_base':
        states[2]['static_kwargs'] = dict(TINY, fmap_base=64.5)
    elif edit == 'absurd fmap_base':
        states[2]['static_kwargs'] = dict(TINY, fmap_base=2 ** 30, fmap_max=2 ** 30)
    elif edit == 'class names not strings':
        states[2]['static_kwargs'] = dict(TINY, label_size=3, label_names=[1, 2, 3])
    elif edit == 'class names for other columns':
        states[2]['static_kwargs'] = dict(TINY, label_size=3, label_names=['AIS', 'MIA'])
    return states


@pytest.mark.parametrize('edit, fragments', [
    ('missing', ['Gs', 'missing', '8x8/Conv1/bias']),
    ('wrong shape', ['Gs', '4x4/Conv/weight', '[3, 3, 16, 15]', '[3, 3, 16, 16]']),
    ('transposed', ['Gs', '16x16/Conv0_up/weight', 'shape']),
    ('extra', ['Gs', 'unexpected', '32x32/Conv1/weight']),
    ('duplicate', ['Gs', 'lod', 'more than once']),
    ('strings', ['refused', "NumPy values of type 'U3'"]),        # refused while unpickling
    ('objects', ['refused', "NumPy values of type 'O8'"]),
    ('booleans', ['Gs', 'ToRGB_lod0/bias', 'not real numbers']),
    ('NaN', ['Gs', '8x8/Conv1/weight', '1 NaN or infinite value(s) of 2304']),
    ('infinity', ['Gs', 'lod', 'NaN or infinite']),
    ('build_func_name a list', ['Gs', "built by ['G_paper']", 'not a PGGAN network']),
    ('build_func_name holds an array', ['Gs', "built by ('G_paper', array([[0., 0., 0., 0.],"]),
    ('version an array', ['Gs', 'state version array([2, 2])']),
    ('name an int', ['Gs', 'has the name 7']),
    ('name a path', ['Gs', "has the name '../Gs'"]),
    ('huge setting', ['Gs', 'malformed static_kwargs']),
    ('nested list setting', ['Gs', 'malformed static_kwargs']),
    ('endless list setting', ['Gs', 'malformed static_kwargs']),
    ('unknown network', ['Gs', 'G_mine']),
    ('wrong config', ['Gs', 'missing', '32x32']),
    ('G, D, D', ['network Gs is built by D_paper, as the D of a PGGAN network pickle is; its Gs is built by G_paper']),
    ('two channels', ['network G has num_channels = 2; it must be 1 (grayscale) or 3 (RGB)']),
    ('four channels', ['network Gs has num_channels = 4; it must be 1 (grayscale) or 3 (RGB)']),
    ('unknown setting', ["network Gs has the setting 'fmap_bse', which G_paper does not take"]),
    ('use_wscale yes', ["network Gs has use_wscale = 'yes'; it must be True or False"]),
    ('fractional fmap_base', ['network Gs has fmap_base = 64.5; it must be a whole number from 1 to 65536']),
    ('absurd fmap_base', ['network Gs has fmap_base = 1073741824; it must be a whole number from 1 to 65536']),
    ('class names not strings', ['network Gs has label_names = [1, 2, 3]; it must be None or a list of different '
                                 'class names']),
    ('class names for other columns', ['network Gs stores 2 class names for 3 label columns']),
])
def test_a_network_that_does_not_match_its_description_is_refused(tmp_path, edit, fragments):
    path = write(tmp_path / 'bad.pkl', published_pickle(_edit_gs(published_states(), edit)))
    before = listing(tmp_path)
    assert_refused(path, *fragments)
    assert listing(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------
# Hostile bytes: one line, memory bounded by the file's size, never a traceback


def data_segment_kb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmData:'):
                return int(line.split()[1])
    raise RuntimeError('no VmData in /proc/self/status')


@contextlib.contextmanager
def memory_limit(extra_mb=256):
    """Limit this process's data segment (RLIMIT_DATA: the heap and private mappings, where Python, NumPy and
    the unpickler allocate) to its present size plus `extra_mb`, and restore it afterwards.  An address-space
    limit would not do: TensorFlow reserves far more address space than it uses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = (data_segment_kb() + extra_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def read_states_error(path, extra_mb=256):
    """The UserError message of legacy.read_network_states(path), read under a memory limit; None if it loads."""
    try:
        with memory_limit(extra_mb):
            legacy.read_network_states(path)
    except UserError as error:
        return str(error)
    return None


def test_memory_limit_is_real():
    with pytest.raises(MemoryError):
        with memory_limit(64):
            bytearray(512 * 2 ** 20)
    assert len(bytearray(512 * 2 ** 20)) == 512 * 2 ** 20  # and lifted again


def array_with_state(state):
    """A pickle-able object whose unpickling is _reconstruct(ndarray, (0,), b'b') then BUILD with `state`."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return Payload(reconstruct, (np.ndarray, (0,), b'b'), state)


def self_doubling_tuple_key(levels):
    """A protocol-4 pickle of {t: None} where t(0) = () and t(k + 1) = (t(k), t(k)) through the memo: a few
    bytes per level, but hashing t(levels) takes 2**levels steps."""
    data = b'\x80\x04}' + b')\x94' + b'0'  # {} on the stack; () stored as memo 0 and popped
    for level in range(levels):
        data += b'h' + bytes([level]) + b'h' + bytes([level]) + b'\x86\x94' + b'0'
    return data + b'h' + bytes([levels]) + b'Ns.'


HOSTILE_PICKLES = {
    # name: (bytes, fragments of the one-line error)
    'memo index 1.4e9': (b'\x80\x04N' + b'r' + struct.pack('<I', 1400000000) + b'.',
                         ['not a valid network pickle', 'memo entry 1400000000']),
    'memo read never stored': (b'\x80\x04' + b'j' + struct.pack('<I', 1400000000) + b'.',
                               ['memo entry 1400000000', 'never stored']),
    'frame of 2^64-1': (b'\x80\x04\x95' + b'\xff' * 8 + b'N.', ['frame', '18446744073709551615', 'only 2 follow']),
    'bytes of 2^63': (b'\x80\x04\x8e' + struct.pack('<Q', 2 ** 63) + b'.', ['9223372036854775808 bytes claimed']),
    'bytearray of 2^40': (b'\x80\x04\x96' + struct.pack('<Q', 2 ** 40) + b'.', ['byte 2']),
    'unicode of 2^32-1': (b'\x80\x04X' + b'\xff' * 4 + b'abc.', ['4294967295 bytes claimed', 'only 4 follow']),
    'number of 10^5 digits': (b'L' + b'9' * 100000 + b'L\n.', ['a number written with 100001 characters']),
    'no end mark': (b'\x80\x04N', ['truncated', 'end-of-pickle']),
    'empty': (b'', ['truncated', 'empty']),
    'protocol 6': (b'\x80\x06N.', ['protocol 6', 'reads protocols up to %d' % pickle.HIGHEST_PROTOCOL]),
    'unknown codec': (pickle.dumps(Payload(_codecs.encode, ('abc', 'no-such-codec')), protocol=4),
                      ['refused', "codec 'no-such-codec'"]),
    'expanding codec': (pickle.dumps(Payload(_codecs.encode, ('abc', 'utf-32')), protocol=4),
                        ['refused', "codec 'utf-32'"]),
    'ndarray(shape)': (pickle.dumps(Payload(np.ndarray, ((10 ** 10,),)), protocol=4), ['refused', 'numpy.ndarray']),
    'big _reconstruct': (pickle.dumps(Payload(np.ndarray.__reduce__(np.zeros(1))[0],
                                              (np.ndarray, (10 ** 10,), b'b')), protocol=4),
                         ['refused', 'rebuilds an array']),
    'overflowing array shape': (pickle.dumps(array_with_state((1, (2 ** 62, 2 ** 62), np.dtype('f4'), False, b'')),
                                             protocol=4), ['damaged', 'array of shape', 'holds 0']),
    'array shape beyond its bytes': (pickle.dumps(array_with_state((1, (10 ** 9,), np.dtype('f4'), False, b'1234')),
                                                  protocol=4), ['damaged', 'needs 4000000000 bytes but holds 4']),
    'set': (pickle.dumps((1, {2, 3}), protocol=4), ['refused', 'set']),
    'tuple as dictionary key': (pickle.dumps({(1, 2): 3}, protocol=4), ['refused', 'tuple', 'dictionary key']),
    'persistent id': (b'\x80\x04\x8c\x01xQ.', ['damaged', 'persistent']),
    'extension code': (b'\x80\x04\x82\x01.', ['damaged', 'extension']),
    'numpy.ndarray as a class': (b'\x80\x04\x8c\x05numpy\x8c\x07ndarray\x93)\x81.', ['damaged', 'TypeError']),
}


@pytest.mark.parametrize('case', sorted(HOSTILE_PICKLES))
def test_hostile_pickle_is_one_line_within_bounded_memory(tmp_path, case):
    data, fragments = HOSTILE_PICKLES[case]
    path = write(tmp_path / 'hostile.pkl', data)
    message = read_states_error(path)
    assert message is not None, 'loaded'
    assert path in message and '\n' not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert listing(tmp_path) == ['hostile.pkl']


def test_protocol_5(tmp_path):
    """Python 3.8+ writes protocol 5 (NumPy arrays through _frombuffer): it loads there, and Python 3.6 says which
    protocol the file uses and which Python reads it."""
    if pickle.HIGHEST_PROTOCOL >= 5:
        states = published_states()
        data = published_pickle(states, protocol=5)
        assert data[:2] == b'\x80\x05'
        assert any(name == '_frombuffer' for _, name in pickled_globals_any_protocol(data))
        path = write(tmp_path / 'p5.pkl', data)
        with memory_limit(256):
            loaded = legacy.read_network_states(path)
        for got, expected in zip(loaded, states):
            for (name, value), (expected_name, expected_value) in zip(got['variables'], expected['variables']):
                assert name == expected_name and np.array_equal(value, expected_value)
    else:
        data = b'\x80\x05' + published_pickle(published_states(), protocol=4)[2:]
        path = write(tmp_path / 'p5.pkl', data)
        message = read_states_error(path)
        assert path in message and 'protocol 5' in message and 'Python 3.8' in message, message
        assert 'reads protocols up to 4' in message, message


def pickled_globals_any_protocol(data):
    """(module, name) of every STACK_GLOBAL, for pickles of any protocol this Python reads."""
    strings, found = [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ('SHORT_BINUNICODE', 'BINUNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.append(tuple(strings[-2:]))
    return found


def test_array_pickles_of_this_numpy_still_load(tmp_path):
    """The argument checks accept what NumPy writes, and the arrays come out as the standard unpickler makes
    them: every weight dtype, byte orders, Fortran order, empty and 0-d arrays, scalars."""
    values = [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(6, dtype='>f4').reshape(3, 2),
              np.asfortranarray(np.ones((3, 4), np.float64)), np.zeros((0, 5), np.float16), np.array(3.5),
              np.arange(4, dtype=np.int64), np.arange(3, dtype=np.uint8), np.float32(0.25), np.int32(7)]
    states = published_states()
    states[1]['variables'] += [('extra%d' % i, value) for i, value in enumerate(values)]
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = write(tmp_path / ('p%d.pkl' % protocol), published_pickle(states, protocol=protocol))
        with memory_limit(256):
            loaded = legacy.read_network_states(path)
        got = dict(loaded[1]['variables'])
        for i, value in enumerate(values):
            reference = pickle.loads(pickle.dumps(value, protocol=protocol))
            assert type(got['extra%d' % i]) is type(reference), (protocol, i)
            assert got['extra%d' % i].dtype == reference.dtype, (protocol, i)
            assert np.array_equal(got['extra%d' % i], value), (protocol, i)


ISOLATED_READER = """
import sys
sys.path.insert(0, %r)
from nodules.gan import legacy
from nodules.util.errors import UserError
for path in sys.argv[1:]:
    try:
        legacy.read_network_states(path)
        print('loaded')
    except UserError as error:
        print(error)
"""


def read_states_in_fresh_python(paths, timeout=120):
    """[message or 'loaded'] per path, read in a fresh interpreter that is killed after `timeout` seconds."""
    result = subprocess.run([sys.executable, '-c', ISOLATED_READER % ROOT] + list(paths), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.slow  # ~5 s: subprocesses with a time limit, one per kind of file
def test_files_that_could_hang_the_reader_are_refused(tmp_path):
    fifo = str(tmp_path / 'pipe.pkl')
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    bomb = write(tmp_path / 'bomb.pkl', self_doubling_tuple_key(64))  # hashing would take 2**64 steps
    messages = read_states_in_fresh_python(['/dev/zero', fifo, bomb])  # /dev/zero: reading never ends
    assert messages[0] == '/dev/zero: is not a regular file (a device, pipe or socket), not a model file'
    assert messages[1] == '%s: is not a regular file (a device, pipe or socket), not a model file' % fifo
    assert messages[2].startswith(bomb + ': refused: ') and 'tuple as a dictionary key' in messages[2]


def test_self_doubling_tuple_really_is_a_tuple_key():
    # The bomb above, made small, is what it claims to be (so the test above can fail).
    expected = ()
    for _ in range(3):
        expected = (expected, expected)
    assert pickle.loads(self_doubling_tuple_key(3)) == {expected: None}


def test_inference_refuses_non_finite_weights(tmp_path):
    states = published_states()
    states[2]['variables'][3][1][0, 0, 0, 0] = np.nan
    path = write(tmp_path / 'nan.pkl', published_pickle(states))
    out = str(tmp_path / 'out')
    result = run_script('2-inference.py', '--model', path, '--outdir', out, '--number', 2)
    assert_clean_failure(result, path, states[2]['variables'][3][0], 'NaN')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------------------------------------------
# Our own pickles


def test_our_pickles_round_trip_exactly(tmp_path):
    latents = np.random.RandomState(7).randn(6, LATENT_SIZE).astype(np.float32)
    labels = np.zeros((6, 0), np.float32)
    with fresh_session():
        G = tfutil.Network('G', 'G_paper', **TINY)
        D = tfutil.Network('D', 'D_paper', **TINY)
        G.init_vars()
        D.init_vars()
        Gs = G.clone('Gs')
        G.set_vars({'4x4/Conv/bias': np.full(16, 0.25, np.float32)})  # G and Gs differ, as after training
        saved = [net.get_vars() for net in (G, D, Gs)]
        saved_images = Gs.run(latents, labels)
        path = str(tmp_path / 'network-final.pkl')
        legacy.save_network_pkl(path, (G, D, Gs))

    assert listing(tmp_path) == ['network-final.pkl']  # written atomically: no temporary files left behind
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:2] == b'\x80\x04'  # protocol 4: readable by Python 3.6 (the legacy stack, the original code)
    assert max(op.proto for op, _, _ in pickletools.genops(data)) <= 4
    modules = {module for module, _ in pickled_globals(data)}
    assert ('tfutil', 'Network') in pickled_globals(data)
    assert modules <= {'tfutil', 'numpy', '_codecs'} | set(NUMPY_MODULES), modules

    states = legacy.read_network_states(path)
    assert [s['name'] for s in states] == ['G', 'D', 'Gs']
    assert [s['build_func_name'] for s in states] == ['G_paper', 'D_paper', 'G_paper']
    assert all(s['version'] == 2 and s['static_kwargs'] == TINY for s in states)
    assert 'def G_paper' in states[0]['build_module_src']

    with fresh_session():
        loaded = legacy.load_network_pkl(path)
        for net, before in zip(loaded, saved):
            after = net.get_vars()
            assert list(after) == list(before)
            for name in before:
                assert after[name].dtype == before[name].dtype and np.array_equal(after[name], before[name]), name
        assert np.array_equal(loaded[2].run(latents, labels), saved_images)


def our_pickle(path, seed=0):
    with fresh_session():
        G = tfutil.Network('G', 'G_paper', **TINY)
        D = tfutil.Network('D', 'D_paper', **TINY)
        tf.set_random_seed(seed)
        G.init_vars()
        D.init_vars()
        legacy.save_network_pkl(path, (G, D, G.clone('Gs')))
    return path


def test_our_pickles_carry_a_checksum_of_their_weights(tmp_path):
    """A flipped bit inside any weight is found; the original's loader ignores the extra state key, and pickles
    without one (the published files) load as before (test_published_layout_loads_every_variable)."""
    path = our_pickle(str(tmp_path / 'ours.pkl'))
    with open(path, 'rb') as f:
        data = f.read()
    found = [state for state in pickle_states_raw(data)]
    assert all(tfutil.CHECKSUM_KEY in state for state in found)
    assert all(tfutil.CHECKSUM_KEY not in state for state in legacy.read_network_states(path))  # verified, dropped
    weight = np.asarray(found[0]['variables'][3][1])  # G's 4x4/Conv/weight (Gs, its copy, comes later in the file)
    start = data.find(weight.tobytes())
    assert start > 0
    for offset in (0, weight.nbytes // 2, weight.nbytes - 1):  # low, middle and high bytes of the array
        flipped = bytearray(data)
        flipped[start + offset] ^= 0x10
        bad = write(tmp_path / ('flipped%d.pkl' % offset), bytes(flipped))
        assert_refused(bad, 'network G: its weights do not match the checksum stored with them: the file is damaged')


def pickle_states_raw(data):
    """The state dicts of a pickle, read by the standard unpickler with a stand-in network class (test only)."""
    class Network(object):
        def __setstate__(self, state):
            self.state = state

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return Network if name == 'Network' else pickle.Unpickler.find_class(self, module, name)
    return [net.state for net in Unpickler(io.BytesIO(data)).load()]


def test_a_failed_save_keeps_the_previous_file(tmp_path, tf_session, monkeypatch):
    G = tfutil.Network('G', 'G_paper', **TINY)
    D = tfutil.Network('D', 'D_paper', **TINY)
    G.init_vars()
    D.init_vars()
    Gs = G.clone('Gs')
    path = write(tmp_path / 'network-snapshot-000140.pkl', b'previous snapshot')

    def broken_replace(src, dst):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'replace', broken_replace)
    with pytest.raises(UserError) as error:  # one line naming the file (a full disk during training)
        legacy.save_network_pkl(path, (G, D, Gs))
    monkeypatch.undo()
    assert str(error.value) == '%s: cannot be written (No space left on device); the old file is unchanged' % path

    assert listing(tmp_path) == ['network-snapshot-000140.pkl']
    with open(path, 'rb') as f:
        assert f.read() == b'previous snapshot'
