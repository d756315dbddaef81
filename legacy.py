"""Network pickles: the published AIS/MIA/IAC weights, PGGAN snapshots, and the files 3-train.py writes.

A pickle is a tuple (G, D, Gs) of objects of class `tfutil.Network` (older files: `network.Network`), each
carrying a version-2 state dict: name, static_kwargs, build_module_src, build_func_name and the variables as
(name, array) pairs.  The original loader executed `build_module_src`.  This one never runs anything from a
file: a restricted unpickler accepts only the network class and what NumPy needs to rebuild arrays, the networks
are rebuilt from our own networks.py, and every variable is assigned by name and shape.
"""
import io
import os
import pickle

import numpy as np

from errors import UserError
import outputs
import tfutil

# Protocol 4 is the highest that Python 3.6 (the legacy stack, and the published files) can read.
PICKLE_PROTOCOL = 4
NETWORK_CLASSES = {('tfutil', 'Network'), ('network', 'Network')}
STATE_KEYS = {'version', 'name', 'static_kwargs', 'build_module_src', 'build_func_name', 'variables'}


class NetworkState(object):
    """What an unpickled network becomes here: just its state dict, nothing executable."""

    def __setstate__(self, state):
        self.state = state


def _numpy_globals():
    """The NumPy callables array pickles name, under both the NumPy 1.x and 2.x module paths."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float32(0).__reduce__()[0]
    allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed[(module, '_reconstruct')] = reconstruct
        allowed[(module, 'scalar')] = scalar
    frombuffer = getattr(getattr(np, '_core', getattr(np, 'core', None)), 'numeric', None)
    frombuffer = getattr(frombuffer, '_frombuffer', None)
    if frombuffer is not None:  # protocol-5 array pickles (NumPy >= 1.16 on Python >= 3.8)
        for module in ('numpy.core.numeric', 'numpy._core.numeric'):
            allowed[(module, '_frombuffer')] = frombuffer
    import _codecs  # protocol-2 pickles of bytes go through _codecs.encode
    allowed[('_codecs', 'encode')] = _codecs.encode
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module, name):
        if (module, name) in NETWORK_CLASSES:
            return NetworkState
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _numpy_globals()
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError('refers to %s.%s, which a network pickle never needs' % (module, name))


def read_network_states(path):
    """Unpickle `path` safely into the three state dicts of (G, D, Gs); nothing in the file is executed."""
    if not os.path.exists(path):
        raise UserError('%s: no such model file' % path)
    if os.path.isdir(path):
        raise UserError('%s: is a directory, not a model file' % path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        if 'refers to' in str(error):
            raise UserError('%s: refused: it %s' % (path, error))
        raise UserError('%s: not a network pickle (%s)' % (path, error))
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as error:
        kind = 'truncated' if isinstance(error, EOFError) else 'damaged'
        raise UserError('%s: not a valid network pickle (%s: %s)' % (path, kind, error or type(error).__name__))
    if not (isinstance(loaded, tuple) and len(loaded) == 3 and all(isinstance(n, NetworkState) for n in loaded)):
        raise UserError('%s: holds a %s, not the (G, D, Gs) network tuple of a PGGAN pickle'
                        % (path, type(loaded).__name__))
    states = [n.state for n in loaded]
    for role, state in zip(('G', 'D', 'Gs'), states):
        _check_state(path, role, state)
    return states


def _check_state(path, role, state):
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        missing = sorted(STATE_KEYS - set(state)) if isinstance(state, dict) else sorted(STATE_KEYS)
        raise UserError('%s: network %s lacks %s' % (path, role, ', '.join(missing)))
    if state['version'] != 2:
        raise UserError('%s: network %s has state version %r; only version 2 is known'
                        % (path, role, state['version']))
    if state['build_func_name'] not in tfutil.BUILD_FUNCS:
        raise UserError('%s: network %s is built by %r, which is not a PGGAN network (%s)'
                        % (path, role, state['build_func_name'], ', '.join(sorted(tfutil.BUILD_FUNCS))))
    kwargs = state['static_kwargs']
    if not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str))) for k, v in kwargs.items()):
        raise UserError('%s: network %s has malformed static_kwargs' % (path, role))
    variables = state['variables']
    if not isinstance(variables, (list, tuple)) or not all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
            and isinstance(v[1], (np.ndarray, np.generic))  # the original stored `lod` as a NumPy scalar
            for v in variables):
        raise UserError('%s: network %s has malformed variables' % (path, role))
    names = [name for name, _ in variables]
    repeated = sorted(set(name for name in names if names.count(name) > 1))
    if repeated:
        raise UserError('%s: network %s lists variable(s) %s more than once' % (path, role, ', '.join(repeated)))
    for name, value in variables:
        if value.dtype.kind not in 'fiu':  # weights are real numbers; refuse strings, objects, complex, bool
            raise UserError('%s: network %s variable %s holds %s values, not real numbers'
                            % (path, role, name, value.dtype))


def network_from_state(state, path='<state>'):
    """Build a tfutil.Network from our networks.py as the state describes and assign its variables."""
    try:
        net = tfutil.Network(state['name'], state['build_func_name'], **state['static_kwargs'])
    except (ValueError, TypeError) as error:
        raise UserError('%s: network %s cannot be built with %s: %s'
                        % (path, state['name'], state['static_kwargs'], error))
    values = {name: np.asarray(value) for name, value in state['variables']}
    missing = [n for n in net.vars if n not in values]
    unexpected = [n for n in values if n not in net.vars]
    if missing or unexpected:
        raise UserError('%s: network %s variables do not match %s%s%s' % (
            path, state['name'], state['build_func_name'],
            '; missing: ' + ', '.join(missing[:5]) if missing else '',
            '; unexpected: ' + ', '.join(unexpected[:5]) if unexpected else ''))
    for name, var in net.vars.items():
        expected = tuple(var.shape.as_list())
        if tuple(values[name].shape) != expected:
            raise UserError('%s: network %s variable %s has shape %s, expected %s'
                            % (path, state['name'], name, list(values[name].shape), list(expected)))
    net.set_vars(values)
    return net


def load_network_pkl(path, which=('G', 'D', 'Gs')):
    """Load a network pickle; returns the networks named in `which` (in that order), built and assigned.

    Inference asks for ('Gs',) only, which skips building the training networks.
    """
    states = dict(zip(('G', 'D', 'Gs'), read_network_states(path)))
    nets = [network_from_state(states[role], path) for role in which]
    return nets[0] if len(nets) == 1 else tuple(nets)


def save_network_pkl(path, networks):
    """Write (G, D, Gs) in the published layout, atomically (a temporary file renamed into place)."""
    outputs.write_file_atomic(path, pickle.dumps(tuple(networks), protocol=PICKLE_PROTOCOL))
