"""Network pickles: the published AIS/MIA/IAC weights, PGGAN snapshots, and the files 3-train.py and
5-pix2pix.py write.

A pickle is a tuple of objects of class `tfutil.Network` (older files: `network.Network`), each carrying a
version-2 state dict: name, static_kwargs, build_module_src, build_func_name and the variables as
(name, array) pairs.  Two kinds of model are stored so (KINDS): a PGGAN is (G, D, Gs), built by G_paper
and D_paper; a pix2pix model is (G, D), built by pix2pix_G and pix2pix_D.  A reader says which kind it
expects, and a file of the other kind is refused in one line that says what it holds.  The original loader executed `build_module_src`.  This one never runs anything from a
file, and nothing a file claims can make it allocate much more than the file's own size:

1. A pass over the opcodes, before any object is built, checks that the file is one complete pickle of a
   protocol this Python reads, that every length and frame lies inside the file, that memo indices refer to
   stored values, and that there are no more opcodes than a network pickle could need.
2. The pure-Python unpickler then rebuilds the objects (its memo is a dict; the C unpickler's is an array sized
   by the largest index a file names).  It may name only the network class and what NumPy needs to rebuild
   arrays, and each of those checks its arguments: arrays start empty and get exactly the bytes in the file.
3. The networks are rebuilt from our own nodules/gan/networks.py and every variable is assigned by name and shape; non-finite
   weights are refused.
"""
import inspect
import io
import os
import pickle
import pickletools
import re
import reprlib
import struct
import sys

import numpy as np

from nodules.util.errors import UserError, check_regular_file
from nodules.util import outputs
from nodules.util.values import is_power_of_two, is_whole
from nodules.gan import tfutil

# Protocol 4 is the highest that Python 3.6 (the legacy stack, and the published files) can read.
PICKLE_PROTOCOL = 4
NETWORK_CLASSES = {('tfutil', 'Network'), ('network', 'Network')}
STATE_KEYS = {'version', 'name', 'static_kwargs', 'build_module_src', 'build_func_name', 'variables'}
# A (G, D, Gs) pickle takes about 30 opcodes per variable: some 3,000 for PGGAN's networks at any width.
MAX_PICKLE_OPCODES = 100000
# The first Python that reads each pickle protocol newer than 2.
FIRST_PYTHON_OF_PROTOCOL = {3: '3.0', 4: '3.4', 5: '3.8'}
# Numbers written as text (protocol 0) longer than this are refused: Python 3.6 converts them in quadratic time
# (3.11 and later refuse more than 4300 digits themselves).
MAX_NUMBER_TEXT = 4300
_NETWORK_NAME = re.compile(r'[A-Za-z0-9.][A-Za-z0-9_.\-]{0,99}\Z')  # a TensorFlow scope name without '/'
_DTYPE_CODE = re.compile(r'[biuf][0-9]{1,2}\Z')  # booleans, integers, floats: what weights are stored as


class ModelKind(object):
    """One kind of network pickle: the roles of its networks, in order, and the build function of each."""

    def __init__(self, name, roles, build_funcs, description, used_by):
        self.name, self.roles, self.build_funcs = name, tuple(roles), dict(build_funcs)
        self.description, self.used_by = description, used_by

    def holds(self, states):
        """Whether unpickled states look like this kind: as many networks, each with a role's build function."""
        return len(states) == len(self.roles) and all(
            isinstance(state, dict) and state.get('build_func_name') in self.build_funcs.get(role, ())
            for role, state in zip(self.roles, states))

    def summary(self):
        return '%s (%s)' % (self.description, ', '.join(self.roles))


KINDS = {
    # Gs is the averaged copy of G: a discriminator in its place (G, D, D) would be run as a generator.
    'pggan': ModelKind('pggan', ('G', 'D', 'Gs'), {'G': ('G_paper',), 'D': ('D_paper',), 'Gs': ('G_paper',)},
                       'a PGGAN network pickle', '2-inference.py'),
    # The pix2pix networks are built by nodules/pix2pix (not through tfutil): only their names are known here.
    'pix2pix': ModelKind('pix2pix', ('G', 'D'), {'G': ('pix2pix_G',), 'D': ('pix2pix_D',)},
                         'a pix2pix mask-to-patch model', '5-pix2pix.py generate'),
}


class NetworkState(object):
    """What an unpickled network becomes here: just its state dict, nothing executable.  Pickled, it is named
    `tfutil.Network` with the state dict as its state, exactly like a network (save_network_states)."""

    def __init__(self, state=None):
        self.state = state

    def __getstate__(self):
        return self.state

    def __setstate__(self, state):
        self.state = state


def load_network_pkl(path, which=('G', 'D', 'Gs')):
    """Load a network pickle; returns the networks named in `which` (in that order), built and assigned.

    Inference asks for ('Gs',) only, which skips building the training networks.
    """
    states = dict(zip(('G', 'D', 'Gs'), read_network_states(path)))
    nets = [network_from_state(states[role], path) for role in which]
    return nets[0] if len(nets) == 1 else tuple(nets)


def save_network_pkl(path, networks):
    """Write (G, D, Gs) in the published layout, atomically (a temporary file renamed into place)."""
    buffer = io.BytesIO()
    _NetworkPickler(buffer, protocol=PICKLE_PROTOCOL).dump(tuple(networks))
    outputs.write_file_atomic(path, buffer.getvalue())


def save_network_states(path, states):
    """Write networks given as state dicts (a pix2pix model's (G, D)) in the same layout, atomically, each with the
    checksum of its variables."""
    save_network_pkl(path, [NetworkState(dict(state, **{tfutil.CHECKSUM_KEY: tfutil.variables_checksum(
        state['variables'])})) for state in states])


class _NetworkPickler(pickle._Pickler):
    """Names our network class `tfutil.Network`, as the original code and the published files do.

    The class lives in nodules.gan.tfutil here; the plain pickler would record that module path, which neither
    the original code nor an older copy of this project could resolve.  (The pure-Python pickler is the one that
    lets a subclass choose how a class is named on Python 3.6; network pickles are mostly a few large arrays.)
    """

    def save_global(self, obj, name=None):
        if obj is not tfutil.Network and obj is not NetworkState:
            return super(_NetworkPickler, self).save_global(obj, name)
        self.save('tfutil')
        self.save('Network')
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def read_network_states(path, kind='pggan'):
    """Unpickle `path` safely into the state dicts of its networks, (G, D, Gs) for kind 'pggan' and (G, D) for
    'pix2pix' (see KINDS); nothing in the file is executed.

    Every failure is a UserError of one line naming the file and what is wrong with it; a pickle of the other
    kind is refused saying what it holds and what reads it.
    """
    expected = KINDS[kind]
    loaded = _unpickle(path)
    networks = isinstance(loaded, tuple) and all(isinstance(n, NetworkState) for n in loaded)
    states = [getattr(n, 'state', None) for n in loaded] if networks else []
    if networks and not expected.holds(states):
        for other in KINDS.values():
            if other is not expected and other.holds(states):
                raise UserError('%s: is %s, not %s; %s reads it'
                                % (path, other.summary(), expected.summary(), other.used_by))
    if not (networks and len(loaded) == len(expected.roles)):
        raise UserError('%s: holds a %s, not the (%s) network tuple of %s'
                        % (path, type(loaded).__name__, ', '.join(expected.roles), expected.description))
    for role, state in zip(expected.roles, states):
        _check_state(path, role, state, expected)
        state.pop(tfutil.CHECKSUM_KEY, None)  # verified; readers see the state as the original wrote it
    return states


def model_kind(path):
    """The name of the kind of model (KINDS) a network pickle holds; a UserError when it is none of them."""
    loaded = _unpickle(path)
    if isinstance(loaded, tuple) and all(isinstance(n, NetworkState) for n in loaded):
        states = [getattr(n, 'state', None) for n in loaded]
        for kind in KINDS.values():
            if kind.holds(states):
                return kind.name
    read_network_states(path)  # says what is wrong, as for a PGGAN pickle
    return 'pggan'


def _unpickle(path):
    """The object a network pickle holds, unpickled safely (module docstring, steps 1 and 2)."""
    data = _read_model_file(path)
    _scan_opcodes(path, data)
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as error:
        raise UserError('%s: refused: it %s' % (path, error))
    except Exception as error:  # whatever the unpickling machinery or NumPy raise on bytes that make no sense
        raise UserError('%s: not a valid network pickle (damaged: %s)' % (path, _describe_error(error)))


def network_from_state(state, path='<state>'):
    """Build a tfutil.Network from our nodules/gan/networks.py as the state describes and assign its variables."""
    try:
        net = tfutil.Network(state['name'], state['build_func_name'], **state['static_kwargs'])
    except Exception as error:  # the settings come from the file; nodules/gan/networks.py says what it cannot build
        raise UserError('%s: network %s cannot be built with %s: %s'
                        % (path, state['name'], _short(state['static_kwargs']), _describe_error(error)))
    values = {name: np.asarray(value) for name, value in state['variables']}
    missing = [n for n in net.vars if n not in values]
    unexpected = [n for n in values if n not in net.vars]
    if missing or unexpected:
        raise UserError('%s: network %s variables do not match %s%s%s' % (
            path, state['name'], state['build_func_name'],
            '; missing: ' + ', '.join(missing[:5]) if missing else '',
            '; unexpected: ' + ', '.join(_clip(n) for n in unexpected[:5]) if unexpected else ''))
    for name, var in net.vars.items():
        expected = tuple(var.shape.as_list())
        if tuple(values[name].shape) != expected:
            raise UserError('%s: network %s variable %s has shape %s, expected %s'
                            % (path, state['name'], name, list(values[name].shape), list(expected)))
    net.set_vars(values)
    return net


# ----------------------------------------------------------------------------------------------------------------
# Reading the file


def _read_model_file(path):
    """The bytes of a regular file (a device such as /dev/zero would never end, a pipe would block)."""
    check_regular_file(path, 'model file', missing='no such model file')
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))


def _protocol_problem(protocol):
    here = 'this is Python %d.%d, which reads protocols up to %d' % (sys.version_info[:2] + (pickle.HIGHEST_PROTOCOL,))
    first = FIRST_PYTHON_OF_PROTOCOL.get(protocol)
    if first is None:
        return 'declares pickle protocol %d, which no Python known here writes; %s' % (protocol, here)
    return ('uses pickle protocol %d, which Python %s and newer read; %s (load it with Python %s or newer, or '
            're-save it there with protocol %d)' % (protocol, first, here, first, pickle.HIGHEST_PROTOCOL))


_OPCODES = dict((ord(op.code), op) for op in pickletools.opcodes)
_FIXED_ARGUMENTS = {'uint1': struct.Struct('<B'), 'uint2': struct.Struct('<H'), 'int4': struct.Struct('<i'),
                    'uint4': struct.Struct('<I'), 'uint8': struct.Struct('<Q'), 'float8': struct.Struct('>d')}
_LENGTH_FIELDS = {pickletools.TAKEN_FROM_ARGUMENT1: struct.Struct('<B'),
                  pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct('<i'),
                  pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct('<I'),
                  pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct('<Q')}
_NUMBER_TEXTS = {'decimalnl_short', 'decimalnl_long', 'floatnl'}
_MEMO_STORES = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_MEMO_READS = {'GET', 'BINGET', 'LONG_BINGET'}
_SET_OPCODES = {'EMPTY_SET', 'ADDITEMS', 'FROZENSET'}


def _scan_opcodes(path, data):
    """Check the opcode stream of `data` without building any object (see the module docstring, step 1)."""
    def invalid(reason):
        return UserError('%s: not a valid network pickle (%s)' % (path, reason))

    position, count, stored = 0, 0, set()
    while position < len(data):
        opcode = _OPCODES.get(data[position])
        if opcode is None:
            raise invalid('damaged: byte %d (0x%02x) is no pickle opcode%s' % (
                position, data[position], '' if position else '; this is not a pickle file'))
        count += 1
        if count > MAX_PICKLE_OPCODES:
            raise invalid('damaged: more than %d opcodes; a network pickle has a few thousand' % MAX_PICKLE_OPCODES)
        try:
            argument, end = _read_argument(opcode, data, position + 1)
        except ValueError as error:
            raise invalid('%s, at byte %d (%s)' % (error, position, opcode.name))
        name = opcode.name
        if name == 'PROTO' and argument > pickle.HIGHEST_PROTOCOL:
            raise UserError('%s: cannot be read here: it %s' % (path, _protocol_problem(argument)))
        elif name == 'FRAME' and argument > len(data) - end:
            raise invalid('truncated or damaged: the frame at byte %d claims %d bytes but only %d follow'
                          % (position, argument, len(data) - end))
        elif name in _MEMO_STORES:
            if argument >= count:  # picklers number their stored values from 0
                raise invalid('damaged: byte %d stores memo entry %d after only %d opcodes'
                              % (position, argument, count))
            stored.add(argument)
        elif name == 'MEMOIZE':
            stored.add(len(stored))
        elif name in _MEMO_READS and argument not in stored:
            raise invalid('damaged: byte %d reads memo entry %d, which was never stored' % (position, argument))
        elif name in _SET_OPCODES:
            raise UserError('%s: refused: it builds a set (byte %d), which a network pickle never holds'
                            % (path, position))
        elif name == 'STOP':
            return
        position = end
    if not data:
        raise invalid('truncated: the file is empty')
    raise invalid('truncated: the file ends at byte %d before the end-of-pickle mark' % len(data))


def _read_argument(opcode, data, position):
    """(value, end) of the argument of `opcode` at `position`: only numbers are decoded; data is skipped.
    Raises ValueError saying what is wrong when the argument does not fit in `data`."""
    spec = opcode.arg
    if spec is None:
        return None, position
    if spec.n > 0:
        if position + spec.n > len(data):
            raise ValueError('truncated: the file ends inside an argument')
        return _FIXED_ARGUMENTS[spec.name].unpack_from(data, position)[0], position + spec.n
    if spec.n == pickletools.UP_TO_NEWLINE:
        end = position
        for _ in range(2 if spec.name == 'stringnl_noescape_pair' else 1):
            end = data.find(b'\n', end) + 1
            if end == 0:
                raise ValueError('truncated: the file ends inside a line of text')
        text = data[position:end - 1]
        if spec.name in _NUMBER_TEXTS and len(text) > MAX_NUMBER_TEXT:
            raise ValueError('damaged: a number written with %d characters' % len(text))
        if opcode.name in ('GET', 'PUT'):
            try:
                return int(text), end
            except ValueError:
                raise ValueError('damaged: memo index %s is not a number' % _short(text))
        return None, end
    field = _LENGTH_FIELDS[spec.n]
    start = position + field.size
    if start > len(data):
        raise ValueError('truncated: the file ends inside a length')
    length = field.unpack_from(data, position)[0]
    if length < 0 or length > len(data) - start:
        raise ValueError('truncated or damaged: %d bytes claimed but only %d follow' % (length, len(data) - start))
    return length, start + length


# ----------------------------------------------------------------------------------------------------------------
# Unpickling


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a network pickle never needs."""


class _NdarrayName(object):
    """What the name numpy.ndarray means in a network pickle: only the first argument of _reconstruct.  NumPy's
    class itself would let a pickle call ndarray(shape) and allocate whatever size it names."""
    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise _Refused('calls numpy.ndarray, which NumPy\'s array pickles never do')


class _Reconstruct(object):
    """numpy's _reconstruct(ndarray, (0,), dtype) as array pickles call it: an empty array that the next opcode
    (BUILD, checked by _check_array_state) fills with bytes from the file."""
    __slots__ = ()  # no attributes a pickle's BUILD could set

    def __call__(self, subtype, shape, dtype):
        if not isinstance(subtype, _NdarrayName) or type(shape) is not tuple or shape != (0,):
            raise _Refused('rebuilds an array in a way NumPy never pickles one')
        return _numpy_function('multiarray', '_reconstruct')(np.ndarray, (0,), dtype)


class _Dtype(object):
    """numpy.dtype, for the plain numeric types that weights are stored as."""
    __slots__ = ()

    def __call__(self, code, align=False, copy=False):
        if type(code) is not str or not _DTYPE_CODE.match(code):
            raise _Refused('builds NumPy values of type %s, which a network pickle never holds' % _short(code))
        return np.dtype(code, align=bool(align), copy=bool(copy))


class _Frombuffer(object):
    """numpy's _frombuffer(buffer, dtype, shape, order), as protocol-5 array pickles call it."""
    __slots__ = ()

    def __call__(self, buffer, dtype, shape, order):
        if not isinstance(buffer, (bytes, bytearray)) or order not in ('C', 'F'):
            raise _Refused('rebuilds an array in a way NumPy never pickles one')
        _check_array_size(shape, dtype, buffer)
        return _numpy_function('numeric', '_frombuffer')(buffer, dtype, shape, order)


class _EmptyBytes(object):
    """bytes(): how protocols 0 to 2 store an empty bytes object (an empty array's data).  Nothing else: bytes(n)
    would allocate n zero bytes."""
    __slots__ = ()

    def __call__(self, *args):
        if args:
            raise _Refused('calls bytes with arguments, which a network pickle never does')
        return b''


class _LatinOneEncode(object):
    """_codecs.encode(text, 'latin1'): how protocol 2 stores bytes.  No other codec (some expand their input,
    and a chain of them would grow without bound)."""
    __slots__ = ()

    def __call__(self, text, encoding='utf-8'):
        if type(text) is not str or encoding not in ('latin1', 'latin-1'):
            raise _Refused('encodes data with the codec %s, which a network pickle never does' % _short(encoding))
        return text.encode('latin-1')


class _ObjectName(object):
    """What the name `object` means in a network pickle: only the base class of copy_reg._reconstructor."""
    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise _Refused('calls object, which a network pickle never does')


_OBJECT = _ObjectName()


class _NewNetwork(object):
    """copy_reg._reconstructor(cls, object, None): how pickle protocols 0 and 1 create an object before its state
    is set; here for the network class only."""
    __slots__ = ()

    def __call__(self, cls, base, state):
        if cls is not NetworkState or base is not _OBJECT or state is not None:
            raise _Refused('creates an object with copy_reg._reconstructor other than a network')
        return NetworkState()


def _numpy_function(module, name):
    core = getattr(np, '_core', None) or np.core  # NumPy 2 renamed numpy.core to numpy._core
    return getattr(getattr(core, module), name)


def _check_array_size(shape, dtype, buffer):
    """An array of `shape` and `dtype` must take exactly the bytes given (NumPy 1.16 accepts shapes whose
    element count overflows)."""
    if (type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape)
            or not isinstance(dtype, np.dtype) or not isinstance(buffer, (bytes, bytearray))):
        raise ValueError('an array state is not (shape, dtype, bytes)')
    size = dtype.itemsize
    for extent in shape:
        size *= extent
    if size != len(buffer):
        raise ValueError('an array of shape %s %s needs %d bytes but holds %d'
                         % (_short(list(shape)), dtype, size, len(buffer)))


def _check_array_state(state):
    """ndarray.__setstate__ arguments: ([version,] shape, dtype, is_fortran, raw bytes)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise ValueError('an array state is not (shape, dtype, bytes)')
    _check_array_size(state[-4], state[-3], state[-1])


def _check_keys(keys):
    """Dictionaries in a network pickle are keyed by names.  Other keys are refused before they are hashed:
    nested tuples that refer to each other through the memo hash in exponential time."""
    for key in keys:
        if type(key) is not str:
            raise _Refused('uses a %s as a dictionary key; a network pickle uses names' % type(key).__name__)


def _allowed_globals():
    """{(module, name): object} of everything a network pickle may name (NumPy 1.x and 2.x module paths)."""
    allowed = {('numpy', 'ndarray'): _NdarrayName(), ('numpy', 'dtype'): _Dtype(),
               ('_codecs', 'encode'): _LatinOneEncode(),
               ('builtins', 'bytes'): _EmptyBytes(), ('__builtin__', 'bytes'): _EmptyBytes(),
               ('builtins', 'object'): _OBJECT, ('__builtin__', 'object'): _OBJECT,
               ('copy_reg', '_reconstructor'): _NewNetwork(), ('copyreg', '_reconstructor'): _NewNetwork()}
    for network_class in NETWORK_CLASSES:
        allowed[network_class] = NetworkState
    for package in ('numpy.core', 'numpy._core'):
        allowed[(package + '.multiarray', '_reconstruct')] = _Reconstruct()
        allowed[(package + '.multiarray', 'scalar')] = _numpy_function('multiarray', 'scalar')
        allowed[(package + '.numeric', '_frombuffer')] = _Frombuffer()
    return allowed


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, naming only _allowed_globals(), with checked dictionaries and array states."""

    def __init__(self, file):
        pickle._Unpickler.__init__(self, file)
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise _Refused('refers to %s.%s, which a network pickle never needs' % (_clip(module), _clip(name)))

    # The loaders of a few opcodes, with checks first.  Since MARK, self.stack holds just the marked items.
    def _load_setitem(self):
        _check_keys([self.stack[-2]])
        pickle._Unpickler.load_setitem(self)

    def _load_setitems(self):
        _check_keys(self.stack[0::2])
        pickle._Unpickler.load_setitems(self)

    def _load_dict(self):
        _check_keys(self.stack[0::2])
        pickle._Unpickler.load_dict(self)

    def _load_build(self):
        if isinstance(self.stack[-2], np.ndarray):
            _check_array_state(self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.BUILD[0]] = _load_build


# ----------------------------------------------------------------------------------------------------------------
# Checking the states


def _check_state(path, role, state, kind=KINDS['pggan']):
    where = '%s: network %s' % (path, role)
    if not isinstance(state, dict):
        raise UserError('%s has a state of type %s, not the dict of a network' % (where, type(state).__name__))
    missing = sorted(STATE_KEYS - set(state))
    if missing:
        raise UserError('%s lacks %s' % (where, ', '.join(missing)))
    version = state['version']
    if type(version) is not int or version != 2:
        raise UserError('%s has state version %s; only version 2 is known' % (where, _short(version)))
    name = state['name']
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise UserError('%s has the name %s; expected a short name such as G, D or Gs' % (where, _short(name)))
    build_func_name = state['build_func_name']
    other_roles = [other for other in kind.roles if other != role and build_func_name in kind.build_funcs[other]]
    if isinstance(build_func_name, str) and build_func_name not in kind.build_funcs[role] and other_roles:
        raise UserError('%s is built by %s, as the %s of %s is; its %s is built by %s (networks in the wrong '
                        'order?)' % (where, build_func_name, other_roles[0], kind.description, role,
                                     ', '.join(kind.build_funcs[role])))
    if not isinstance(build_func_name, str) or build_func_name not in kind.build_funcs[role]:
        raise UserError('%s is built by %s, which is not a %s network (%s)'
                        % (where, _short(build_func_name), {'pggan': 'PGGAN'}.get(kind.name, kind.name),
                           ', '.join(kind.build_funcs[role])))
    kwargs = state['static_kwargs']
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and _is_setting(v) for k, v in kwargs.items()):
        raise UserError('%s has malformed static_kwargs (expected names with numbers, strings, booleans, None or short lists of those)'
                        % where)
    if build_func_name in tfutil.BUILD_FUNCS:
        _check_builder_settings(where, build_func_name, kwargs)
    variables = state['variables']
    if not isinstance(variables, (list, tuple)) or not all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
            and isinstance(v[1], (np.ndarray, np.generic))  # the original stored `lod` as a NumPy scalar
            for v in variables):
        raise UserError('%s has malformed variables (expected (name, array) pairs)' % where)
    names = [name for name, _ in variables]
    repeated = sorted(set(name for name in names if names.count(name) > 1))
    if repeated:
        raise UserError('%s lists variable(s) %s more than once' % (where, _short(', '.join(repeated))))
    for name, value in variables:
        if value.dtype.kind not in 'fiu':  # weights are real numbers; refuse strings, objects, complex, bool
            raise UserError('%s variable %s holds %s values, not real numbers' % (where, _short(name), value.dtype))
        if value.dtype.kind == 'f' and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise UserError('%s variable %s holds %d NaN or infinite value(s) of %d: the weights are broken'
                            % (where, _short(name), bad, np.size(value)))
    checksum = state.get(tfutil.CHECKSUM_KEY)
    if checksum is not None and type(checksum) is not int:
        raise UserError('%s has a weights checksum of type %s, not a number: the file is damaged'
                        % (where, type(checksum).__name__))
    if checksum is not None and checksum != tfutil.variables_checksum(variables):
        raise UserError('%s: its weights do not match the checksum stored with them: the file is damaged'
                        % where)


MAX_SETTING_ITEMS = 1024  # longest list in static_kwargs (class names of a conditional network)
MAX_FEATURE_MAPS = 2 ** 16  # most feature maps (fmap_base, fmap_max, latent_size) a network pickle may ask for


def _whole(low, high):
    return lambda value: is_whole(value) and low <= value <= high


def _real(low, high):
    return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _one_of(*choices):
    return lambda value: any(type(value) is type(choice) and value == choice for choice in choices)


def _optional(test):
    return lambda value: value is None or test(value)


_BOOLEAN = (lambda value: isinstance(value, bool), 'True or False')
# What G_paper and D_paper take, keyword by keyword: (test, what a value must be).  Also the keywords of the
# original's other code paths (`structure`, `is_template_graph`) and what this project stores beside the
# settings (the class names of a conditional network, D's augmentation strength).
BUILDER_SETTINGS = {
    'num_channels': (_one_of(1, 3), '1 (grayscale) or 3 (RGB)'),
    'resolution': (lambda v: is_power_of_two(v, 4, 1024), 'a power of two from 4 to 1024'),
    'graph_resolution': (_optional(lambda v: is_power_of_two(v, 4, 1024)),
                         'None or a power of two from 4 to 1024'),
    'label_size': (_whole(0, MAX_SETTING_ITEMS), 'a whole number from 0 to %d' % MAX_SETTING_ITEMS),
    'fmap_base': (_whole(1, MAX_FEATURE_MAPS), 'a whole number from 1 to %d' % MAX_FEATURE_MAPS),
    'fmap_max': (_whole(1, MAX_FEATURE_MAPS), 'a whole number from 1 to %d' % MAX_FEATURE_MAPS),
    'fmap_decay': (_real(0, 16), 'a number from 0 to 16'),
    'latent_size': (_optional(_whole(1, MAX_FEATURE_MAPS)), 'None or a whole number from 1 to %d' % MAX_FEATURE_MAPS),
    'normalize_latents': _BOOLEAN, 'use_wscale': _BOOLEAN, 'use_pixelnorm': _BOOLEAN, 'use_leakyrelu': _BOOLEAN,
    'fused_scale': _BOOLEAN, 'blur_resampling': _BOOLEAN, 'edge_padding': _BOOLEAN, 'is_template_graph': _BOOLEAN,
    'pixelnorm_epsilon': (lambda v: _real(0, 1)(v) and v > 0, 'a number above 0, at most 1'),
    'dtype': (_one_of('float32', 'bfloat16', 'float16'), "'float32', 'bfloat16' or 'float16'"),
    'mbstd_group_size': (_whole(0, MAX_SETTING_ITEMS), 'a whole number from 0 to %d' % MAX_SETTING_ITEMS),
    'structure': (_optional(_one_of('fixed', 'linear', 'recursive')), "None, 'fixed', 'linear' or 'recursive'"),
    'label_names': (_optional(lambda v: isinstance(v, (list, tuple)) and len(set(v)) == len(v)
                              and all(isinstance(name, str) and name for name in v)),
                    'None or a list of different class names'),
    'augment_p': (_real(0, 1), 'a number from 0 to 1'),
}


def _check_builder_settings(where, build_func_name, kwargs):
    """Every static keyword a network of ours is built with: known to its builder, of the type and range the
    builder takes (an unknown or absurd one would be ignored or fail deep inside TensorFlow)."""
    parameters = inspect.signature(tfutil.BUILD_FUNCS[build_func_name]).parameters.values()
    known = set(p.name for p in parameters if p.default is not inspect.Parameter.empty) | set(BUILDER_SETTINGS)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise UserError('%s has the setting %s, which %s does not take' % (where, _short(unknown[0]), build_func_name))
    for name in sorted(kwargs):
        test, expected = BUILDER_SETTINGS.get(name, (None, None))
        if test is not None and not test(kwargs[name]):
            raise UserError('%s has %s = %s; it must be %s' % (where, name, _short(kwargs[name]), expected))
    names = kwargs.get('label_names')
    if names is not None and len(names) != kwargs.get('label_size', 0):
        raise UserError('%s stores %d class names for %d label columns' % (where, len(names),
                                                                           kwargs.get('label_size', 0)))


def _is_setting(value, nested=False):
    """A static keyword argument: None, a boolean, a string, a finite number of sane size, or a short list of
    those (the class names a conditional network stores)."""
    if isinstance(value, (list, tuple)) and not nested:
        return len(value) <= MAX_SETTING_ITEMS and all(_is_setting(item, nested=True) for item in value)
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return abs(value) < 2 ** 31
    return isinstance(value, float) and np.isfinite(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _short(value):
    """A repr of a value from a file that stays short and on one line (and never fails: huge ints have no repr
    on 3.11)."""
    try:
        return ' '.join(_REPR.repr(value).split())
    except Exception:
        return 'a %s' % type(value).__name__


def _clip(text, limit=60):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _describe_error(error):
    """One line: the exception type and the first line of its message (never empty)."""
    lines = str(error).strip().splitlines()
    text = _clip(lines[0], 200) if lines else ''
    return '%s: %s' % (type(error).__name__, text) if text else type(error).__name__
