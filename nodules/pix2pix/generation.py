"""Patches from masks with a trained pix2pix generator: the one path from a pix2pix pickle to 8-bit patches.

The generator runs as in training, as the original does: batch norm normalises with the statistics of the
minibatch it is given and dropout (the only noise) draws anew.  So a patch depends on the other masks of its
minibatch and on the draw.  To make results repeatable, masks are generated in minibatches of a fixed size
(the last one filled up with the first masks of the request, generated and dropped), and the dropout draws
follow a seed: the same masks, minibatch size and seed give the same patches.  `generate_per_seed` goes
further for 5-pix2pix.py --seeds: each seed's patch comes from a minibatch of that seed's own masks and
its own dropout draws, so it does not depend on the other seeds asked for.
"""
import inspect

import numpy as np

from nodules.data import dataset
from nodules.gan import legacy
from nodules.pix2pix import networks, training
from nodules.util import outputs
from nodules.util.errors import UserError
from nodules.util.tfcompat import native_stderr_captured, tf

DEFAULT_BATCH_SIZE = 32   # the original's training minibatch: batch statistics like those G was trained with
# What a pickle's static_kwargs may set: the keywords of G_unet but its inputs and inspection hook.
G_KEYWORDS = tuple(name for name in inspect.signature(networks.G_unet).parameters
                   if name not in ('masks', 'layer_outputs'))


def load_generator(path):
    """The generator of a pix2pix pickle (safely read: see nodules/gan/legacy.py), checked, not yet built."""
    G_state, _ = legacy.read_network_states(path, 'pix2pix')
    return Pix2pixGenerator(G_state, path)


class Pix2pixGenerator(object):
    """G of a pix2pix model: its keywords and weights, built into a graph of its own for every seed."""

    def __init__(self, state, path='<state>'):
        self.path = path
        self.kwargs = dict(state['static_kwargs'])
        unknown = sorted(set(self.kwargs) - set(G_KEYWORDS))
        if unknown:
            raise UserError('%s: network G has settings the U-Net does not take: %s' % (path, ', '.join(unknown)))
        self.values = dict((name, np.asarray(value)) for name, value in state['variables'])
        self.resolution = self.kwargs.get('resolution', 64)
        self._build(0)  # every problem of the file shows now, before any output is planned

    def _build(self, seed):
        """(graph, session, masks placeholder, output) with the weights assigned and dropout seeded by `seed`."""
        graph = tf.Graph()
        with graph.as_default():
            tf.set_random_seed(seed)
            masks = tf.placeholder(tf.float32, [None, self.resolution, self.resolution, 1], name='masks')
            try:
                with tf.variable_scope('G'):
                    fakes = networks.G_unet(masks, **self.kwargs)
            except (ValueError, TypeError) as error:
                raise UserError('%s: network G cannot be built with %s: %s' % (self.path, self.kwargs, error))
            variables = training.scope_variables('G')
            self._check_variables(variables)
            setters = training.variable_setters(list(variables.values()))
        with native_stderr_captured():  # CUDA probing on GPU-less machines logs errors that are not ours
            session = tf.Session(graph=graph, config=training.session_config())
        session.run([setters[var][0] for var in variables.values()],
                    dict((setters[var][1], self.values[name]) for name, var in variables.items()))
        return session, masks, fakes

    def _check_variables(self, variables):
        missing = [n for n in variables if n not in self.values]
        unexpected = [n for n in self.values if n not in variables]
        if missing or unexpected:
            raise UserError('%s: network G variables do not match a U-Net of %s%s%s' % (
                self.path, self.kwargs, '; missing: ' + ', '.join(missing[:5]) if missing else '',
                '; unexpected: ' + ', '.join(unexpected[:5]) if unexpected else ''))
        for name, var in variables.items():
            if tuple(self.values[name].shape) != tuple(var.shape.as_list()):
                raise UserError('%s: network G variable %s has shape %s, expected %s'
                                % (self.path, name, list(self.values[name].shape), var.shape.as_list()))

    def check_masks(self, masks, source):
        """Refuse masks that are not uint8 [N, H, W] of this generator's size, binary 0/255, none empty."""
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[1:] != (self.resolution, self.resolution):
            raise UserError('%s: masks of %s, but this generator (%s) takes %dx%d masks'
                            % (source, 'x'.join(str(n) for n in masks.shape[1:][::-1]) or 'no size', self.path,
                               self.resolution, self.resolution))
        return dataset.check_masks(masks, None, None, source, allow_empty=False)  # uint8, binary, none empty

    def generate(self, masks, seed=0, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """uint8 patches [N, H, W] for uint8 masks [N, H, W] (see the module docstring for what they depend on).
        `progress`, if given, is called with the number of patches just made."""
        count = len(masks)
        padded = np.concatenate([masks, np.resize(masks, (-count % batch_size,) + masks.shape[1:])])
        session, placeholder, fakes = self._build(seed)
        try:
            patches = np.empty(masks.shape, np.uint8)
            for start in range(0, count, batch_size):
                output = session.run(fakes, {placeholder: training.to_network_range(padded[start:start + batch_size])})
                if not np.all(np.isfinite(output)):
                    raise UserError('%s: the generator produced NaN or infinite values: its weights are broken'
                                    % self.path)
                made = min(batch_size, count - start)
                patches[start:start + made] = outputs.float_to_uint8(output[:made, ..., 0])
                if progress is not None:
                    progress(made)
        finally:
            session.close()
        return patches

    def generate_per_seed(self, masks_of_seed, seeds, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """One patch per seed: masks_of_seed(seed, count) gives the seed's masks [count, H, W]; the patch of the
        first is kept, generated in a minibatch of `batch_size` of them with the seed's dropout draws."""
        patches = []
        for seed in seeds:
            masks = masks_of_seed(seed, batch_size)
            patches.append(self.generate(masks, seed, batch_size)[0])
            if progress is not None:
                progress(1)
        return np.stack(patches)
