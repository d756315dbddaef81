"""TensorFlow plumbing: the session, and `Network`, a network built from nodules/gan/networks.py with its variables.

A Network owns a variable scope, builds its function from `nodules/gan/networks.py` by name with fixed `static_kwargs`, and
can be evaluated on NumPy arrays (`run`), re-built on other tensors sharing the same variables
(`get_output_for`), copied (`clone`), and pickled in the layout of the original PGGAN `tfutil.Network`
(loading goes through nodules/gan/legacy.py, never through plain unpickling).
"""
import collections
import contextlib
import inspect
import os
import zlib

import numpy as np

from nodules.gan import networks
from nodules.util.tfcompat import native_stderr_captured, tf

BUILD_FUNCS = {'G_paper': networks.G_paper, 'D_paper': networks.D_paper}
# The state key of the checksum this project's pickles carry of their variables (the original loader, which reads
# the keys it knows, ignores it); legacy.py verifies it on loading.
CHECKSUM_KEY = 'variables_crc32'


def variables_checksum(variables):
    """CRC-32 of [(name, array)] pairs: every name, dtype, shape and byte of the values, in order."""
    checksum = 0
    for name, value in variables:
        value = np.ascontiguousarray(value)
        checksum = zlib.crc32(('%s|%s|%s|' % (name, value.dtype.str, list(value.shape))).encode('utf-8'), checksum)
        checksum = zlib.crc32(value.tobytes(), checksum)
    return checksum


def session_config(num_threads=0):
    """The settings of every session this project makes: the same inputs give the same bits on every run.

    Grappler's memory optimizer (on by default) rewrites an add_n whose inputs it expects to be live at the
    memory peak into in-place adds applied in whatever order the inputs arrive, so the sum rounds differently
    from run to run.  It does so on networks with 512 feature maps (the fused up/down-scaling kernels, and
    gradient sums in training); smaller ones escape it only because their estimated peak is lower.  Turning it
    off keeps every add_n in its written order, as in the original.
    """
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True  # share the GPU politely with other work
    config.intra_op_parallelism_threads = num_threads
    config.inter_op_parallelism_threads = num_threads
    rewrite_options = config.graph_options.rewrite_options
    rewrite_options.memory_optimization = rewrite_options.NO_MEM_OPT
    return config


def init_tf(seed=None, num_threads=0, cpu_devices=1):
    """Make a default session on the default graph (the TF1 idiom the rest of the code relies on) and return it;
    an existing default session is returned instead if it is on that graph.

    `cpu_devices` > 1 splits the CPU into that many logical devices (to run multi-device training without GPUs).
    """
    session = tf.get_default_session()
    if session is not None and session.graph is tf.get_default_graph():
        return session
    if seed is not None:
        tf.set_random_seed(seed)
    config = session_config(num_threads)
    if cpu_devices > 1:
        config.device_count['CPU'] = cpu_devices
    with native_stderr_captured():  # CUDA probing on GPU-less machines logs errors that are not ours
        session = tf.Session(config=config)
    session._default_session_context = session.as_default()  # keep it the default for the process' lifetime
    session._default_session_context.__enter__()
    return session


@contextlib.contextmanager
def separate_graph():
    """A new default graph for a block that calls init_tf (a training run), and the session init_tf opens on it
    closed when the block ends: several runs one after another in one process (4-classify.py --gan-train), each
    as if it had the process to itself."""
    graph = tf.Graph()
    try:
        with graph.as_default():
            yield graph
    finally:
        session = tf.get_default_session()
        if session is not None and session.graph is graph:
            session._default_session_context.__exit__(None, None, None)
            session.close()


def run_session():
    return tf.get_default_session()


def run(*args, **kwargs):
    return tf.get_default_session().run(*args, **kwargs)


def initialize_uninitialized_vars():
    """Initialise exactly the variables that have no value yet (new optimizer slots, say), leaving loaded ones."""
    variables = tf.global_variables()
    flags = run([tf.is_variable_initialized(v) for v in variables])
    run([v.initializer for v, ready in zip(variables, flags) if not ready])


def unique_scope(name):
    return tf.get_default_graph().unique_name(name.replace('/', '_'), mark_as_used=True)


class Network(object):
    """One generator or discriminator: a scope, its variables, and cached graphs to evaluate it."""

    def __init__(self, name, build_func_name, **static_kwargs):
        if build_func_name not in BUILD_FUNCS:
            raise ValueError('unknown network function %r (known: %s)' % (build_func_name, sorted(BUILD_FUNCS)))
        self.name = name
        self.build_func_name = build_func_name
        self.static_kwargs = dict(static_kwargs)
        self._build_func = BUILD_FUNCS[build_func_name]
        signature = inspect.signature(self._build_func)
        self.input_names = [p.name for p in signature.parameters.values()
                            if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
        self.scope = unique_scope(name)
        self._run_cache = {}
        with tf.name_scope(self.scope + '/'):
            self.input_templates = [tf.placeholder(tf.float32, name=n) for n in self.input_names]
        # The template graph creates the variables, in the original's order.
        with tf.variable_scope(self.scope, reuse=False), tf.name_scope(self.scope + '/_template/'):
            outputs = self._build_func(*self.input_templates, **self.static_kwargs)
        self.output_templates = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        self.input_shapes = [t.shape.as_list() for t in self.input_templates]
        self.output_shapes = [t.shape.as_list() for t in self.output_templates]
        prefix = self.scope + '/'
        self.vars = collections.OrderedDict(
            (v.name[len(prefix):].split(':')[0], v) for v in tf.global_variables() if v.name.startswith(prefix))
        self.trainables = collections.OrderedDict(
            (n, v) for n, v in self.vars.items() if v in tf.trainable_variables())
        self._setter_ops = None

    # -- graph building ------------------------------------------------------------------------------------------

    def get_output_for(self, *inputs, **dynamic_kwargs):
        """Build the network on new input tensors, sharing this network's variables."""
        kwargs = dict(self.static_kwargs)
        kwargs.update(dynamic_kwargs)
        with tf.variable_scope(self.scope, reuse=True), tf.name_scope(unique_scope(self.scope + '_out') + '/'):
            return self._build_func(*inputs, **kwargs)

    @property
    def lod(self):
        return self.vars['lod']

    def num_params(self):
        return int(sum(np.prod(v.shape.as_list()) for v in self.trainables.values()))

    # -- variables -----------------------------------------------------------------------------------------------

    def get_vars(self):
        """{local name: NumPy array} of every variable, in creation order."""
        values = run(list(self.vars.values()))
        return collections.OrderedDict((n, np.asarray(v)) for n, v in zip(self.vars.keys(), values))

    def set_vars(self, values):
        """Assign {local name: array}; also initialises variables that have never been initialised."""
        if self._setter_ops is None:
            self._setter_ops = {}
            with tf.name_scope(self.scope + '/_setters/'):
                for name, var in self.vars.items():
                    value = tf.placeholder(var.dtype.base_dtype, var.shape, name=name.replace('/', '_'))
                    self._setter_ops[name] = (tf.assign(var, value), value)
        ops, feed = [], {}
        for name, value in values.items():
            op, placeholder = self._setter_ops[name]
            ops.append(op)
            feed[placeholder] = value
        if ops:
            run(ops, feed)

    def init_vars(self):
        run([v.initializer for v in self.vars.values()])

    def copy_vars_from(self, other):
        self.set_vars(other.get_vars())

    def setup_as_moving_average_of(self, src, beta=0.999, beta_nontrainable=0.0):
        """An op that moves this network's weights towards `src`'s: w <- src + (w - src) * beta.  With
        beta_nontrainable 0 the non-trainables (lod) are copied.  This is how Gs follows G."""
        updates = []
        with tf.name_scope(self.scope + '/_moving_average/'):
            for name, var in self.vars.items():
                if name in src.vars:
                    rate = beta if name in self.trainables else beta_nontrainable
                    updates.append(tf.assign(var, src.vars[name] + (var - src.vars[name]) * rate))
        return tf.group(*updates)

    def clone(self, name=None):
        copy = Network(name or self.name, self.build_func_name, **self.static_kwargs)
        copy.copy_vars_from(self)
        return copy

    # -- evaluation ----------------------------------------------------------------------------------------------

    def run(self, *arrays, **kwargs):
        """Evaluate on NumPy inputs in minibatches; returns NumPy outputs (one array or a list for several).

        Keyword arguments: minibatch_size (default: everything at once), progress (callable told how many
        samples were done), and any dynamic keyword of the build function (e.g. dtype='bfloat16').
        """
        minibatch_size = kwargs.pop('minibatch_size', None)
        progress = kwargs.pop('progress', None)
        key = tuple(sorted(kwargs.items()))
        if key not in self._run_cache:
            with tf.name_scope(self.scope + '/_run/'):
                placeholders = [tf.placeholder(tf.float32, shape, name=n)
                                for n, shape in zip(self.input_names, self.input_shapes)]
            outputs = self.get_output_for(*placeholders, **kwargs)
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            self._run_cache[key] = (placeholders, outputs)
        placeholders, outputs = self._run_cache[key]
        count = len(arrays[0])
        minibatch_size = minibatch_size or max(count, 1)
        results = [[] for _ in outputs]
        for start in range(0, count, minibatch_size):
            feed = {p: a[start:start + minibatch_size] for p, a in zip(placeholders, arrays)}
            for result, value in zip(results, run(outputs, feed)):
                result.append(value)
            if progress is not None:
                progress(min(minibatch_size, count - start))
        results = [np.concatenate(r) for r in results]
        return results[0] if len(results) == 1 else results

    # -- pickling in the original layout -------------------------------------------------------------------------

    def __getstate__(self):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'networks.py'), encoding='utf-8') as f:
            source = f.read()
        variables = list(self.get_vars().items())
        return {'version': 2, 'name': self.name, 'static_kwargs': dict(self.static_kwargs),
                'build_module_src': source, 'build_func_name': self.build_func_name,
                'variables': variables, CHECKSUM_KEY: variables_checksum(variables)}

    def __setstate__(self, state):
        raise TypeError('network pickles are loaded with legacy.load_network_pkl, which never runs their code')
