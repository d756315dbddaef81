"""pix2pix training as the original script runs it: mask -> CT patch, one G step then one D step per minibatch.

The caller owns the data and the run directory: it passes uint8 [N, H, W] patches and binary masks (0/255) as
NumPy arrays, reads `Trainer.config` into the run's config (it holds the once-per-run real label and the seed),
and saves what it wants from the `on_epoch` callback (network states for the snapshot, triplets for the PNG,
losses for TensorBoard).  Nothing here writes files.

Faithful by default (see DEFAULTS): Adam lr 1e-4, beta1 0.5, beta2 0.999, epsilon 1e-7 (Keras' defaults) for
both networks; minibatch 32; 500 epochs; every pair flipped left-right at random, mask and patch together.  An
epoch is a fresh shuffle cut into full minibatches, N // minibatch of them, as the original's batch generator
does (the pairs left over wait for a later shuffle); with fewer pairs than a minibatch, the minibatch is all
of them.  Per minibatch the G step runs first; the D step then generates the fakes again, with the updated G and
new dropout, as the original's two Keras functions do.
"""
import collections
import inspect

import numpy as np

from nodules.data import dataset
from nodules.gan import tfutil
from nodules.pix2pix import losses, networks
from nodules.pix2pix import settings as pix2pix_settings
from nodules.util import outputs
from nodules.util import progress as progress_reports
from nodules.util.errors import UserError
from nodules.util.tfcompat import native_stderr_captured, tf

# The Trainer's settings and their defaults (the original's): see nodules/pix2pix/settings.py, one row each.
DEFAULTS = pix2pix_settings.TRAINER_DEFAULTS


# ----------------------------------------------------------------------------------------------------------------
# Data


def check_pairs(patches, masks, what='training pairs'):
    """One UserError line unless patches and masks are uint8 [N, H, W] of one square size, as many masks as
    patches, and every mask binary (0 and 255) with at least one nodule pixel (dataset.check_masks)."""
    patches = np.asarray(patches)
    if patches.dtype != np.uint8 or patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise UserError('%s: patches must be uint8 [N, H, W] square images, got %s %s'
                        % (what, patches.dtype, list(patches.shape)))
    masks = dataset.check_masks(masks, None, None, what, allow_empty=False)
    if patches.shape != masks.shape:
        raise UserError('%s: %d patches of %dx%d but %d masks of %dx%d'
                        % ((what,) + patches.shape + masks.shape))
    if len(patches) == 0:
        raise UserError('%s: no pairs' % what)


def to_network_range(images):
    """uint8 [N, H, W] -> float32 [N, H, W, 1] in [-1, 1], as x / 255 * 2 - 1 (the original's scaling)."""
    return (np.asarray(images, np.float32) / 255.0 * 2.0 - 1.0)[..., np.newaxis]


def flip_pairs(masks, patches, random_state):
    """Each pair mirrored left-right with probability 1/2, mask and patch alike (copies; inputs untouched)."""
    flips = random_state.rand(len(masks)) < 0.5
    masks, patches = masks.copy(), patches.copy()
    masks[flips] = masks[flips, :, ::-1]
    patches[flips] = patches[flips, :, ::-1]
    return masks, patches


def epoch_minibatches(count, minibatch, random_state):
    """Index arrays of one epoch: a fresh permutation cut into count // minibatch full minibatches."""
    order = random_state.permutation(count)
    return [order[start:start + minibatch] for start in range(0, count - minibatch + 1, minibatch)]


# ----------------------------------------------------------------------------------------------------------------
# The graph


def session_config(num_threads=0):
    """The project's session settings (tfutil.session_config) with Grappler's remapper off.

    TensorFlow 2.x's remapper fuses a convolution, its bias and a LeakyReLU even when the biased output has
    another consumer, as the U-Net's outermost down step has (its skip); the rewrite then fails and logs an
    error on every run ("remapper failed: ... fanout ... exist for missing node").  TensorFlow drops the failed
    rewrite, so results are the same either way; turning it off only keeps the error off the user's screen.
    """
    config = tfutil.session_config(num_threads)
    rewrite_options = config.graph_options.rewrite_options
    rewrite_options.remapping = rewrite_options.OFF
    return config


class Pix2pixGraph(object):
    """G and D (variable scopes 'G' and 'D'), both losses and both Adam steps, in a graph of their own.

    G_kwargs, D_kwargs: the keywords of networks.G_unet and networks.D_patchgan (resolution among them).
    """

    def __init__(self, settings, G_kwargs, D_kwargs):
        resolution = G_kwargs['resolution']
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(settings['seed'])
            self.masks = tf.placeholder(tf.float32, [None, resolution, resolution, 1], name='masks')
            self.reals = tf.placeholder(tf.float32, [None, resolution, resolution, 1], name='reals')
            with tf.variable_scope('G'):
                self.fakes = networks.G_unet(self.masks, **G_kwargs)
            with tf.variable_scope('D'):  # applied twice: batch statistics of reals and of fakes apart
                real_scores = networks.D_patchgan(self.masks, self.reals, **D_kwargs)
            with tf.variable_scope('D', reuse=True):
                fake_scores = networks.D_patchgan(self.masks, self.fakes, **D_kwargs)
            self.G_loss, self.G_terms = losses.G_loss(fake_scores, self.fakes, self.reals, settings['reconstruction'],
                                                      settings['reconstruction_weight'])
            self.D_loss, self.D_terms = losses.D_loss(real_scores, fake_scores, settings['label_smoothing'],
                                                      settings['real_label'], settings['real_label_range'])
            self.G_vars, self.D_vars = scope_variables('G'), scope_variables('D')
            self.G_step = _adam(settings, 'G_lr', 'G_adam').minimize(self.G_loss, var_list=list(self.G_vars.values()))
            self.D_step = _adam(settings, 'D_lr', 'D_adam').minimize(self.D_loss, var_list=list(self.D_vars.values()))
            self._setters = variable_setters(list(self.G_vars.values()) + list(self.D_vars.values()))
            initializer = tf.global_variables_initializer()
            self.graph.finalize()  # every op exists now: nothing grows the graph step by step
        with native_stderr_captured():  # CUDA probing on GPU-less machines logs errors that are not ours
            self.session = tf.Session(graph=self.graph, config=session_config())
        self.session.run(initializer)

    def assign(self, values):
        """Set {variable: array}."""
        feed = dict((self._setters[var][1], value) for var, value in values.items())
        self.session.run([self._setters[var][0] for var in values], feed)

    def close(self):
        self.session.close()


def _adam(settings, rate, name):
    return tf.train.AdamOptimizer(settings[rate], beta1=settings['beta1'], beta2=settings['beta2'],
                                  epsilon=settings['adam_epsilon'], name=name)


def scope_variables(scope):
    """{name inside the scope: variable} of the scope's trainable variables, in creation order."""
    prefix = scope + '/'
    return collections.OrderedDict((v.name[len(prefix):].split(':')[0], v)
                                   for v in tf.trainable_variables() if v.name.startswith(prefix))


def variable_setters(variables):
    """{variable: (assign op, placeholder)}: made once, so loading weights never adds to the graph."""
    setters = {}
    with tf.name_scope('setters'):
        for var in variables:
            value = tf.placeholder(var.dtype.base_dtype, var.shape)
            setters[var] = (tf.assign(var, value), value)
    return setters


# ----------------------------------------------------------------------------------------------------------------
# Training


class Trainer(object):
    """A pix2pix model being trained: build it, read `config`, call train(), take network_states() to save.

    settings: any of DEFAULTS (the rest are the defaults).  G_kwargs, D_kwargs: other keywords of G_unet and
    D_patchgan (recorded in the network states).
    """

    def __init__(self, settings=None, resolution=64, G_kwargs=None, D_kwargs=None):
        unknown = sorted(set(settings or {}) - set(DEFAULTS))
        if unknown:
            raise ValueError('unknown pix2pix settings: %s' % ', '.join(unknown))
        self.settings = resolve_settings(settings)
        self.resolution = resolution
        self.G_kwargs = dict(G_kwargs or {}, resolution=resolution, ngf=self.settings['ngf'],
                             dropout_rate=self.settings['dropout_rate'])
        self.D_kwargs = dict(D_kwargs or {}, resolution=resolution, ndf=self.settings['ndf'])
        self.nets = Pix2pixGraph(self.settings, self.G_kwargs, self.D_kwargs)
        self.epoch = 0  # epochs trained so far: a caller resuming a run sets it (and set_network_states)

    @property
    def config(self):
        """What the run records: every setting as used (the drawn seed and real label included) and the sizes."""
        return dict(self.settings, resolution=self.resolution, G_kwargs=self.G_kwargs, D_kwargs=self.D_kwargs,
                    G_params=_parameters(self.nets.G_vars), D_params=_parameters(self.nets.D_vars))

    def train(self, patches, masks, epochs=None, on_epoch=None, progress=progress_reports.quiet):
        """Train until `epochs` epochs in all (default: the settings'), on uint8 [N, H, W] patches and masks.

        on_epoch(epoch, mean_losses) runs after every epoch (epoch counted from 1; the losses are the epoch's
        means by name: G, G_adversarial, G_reconstruction, D, D_real, D_fake, real_label).  progress: a factory
        progress(total, desc, unit=...) -> context manager with update(n), told of every minibatch.
        Raises UserError on bad pairs (before any step) and when a loss stops being finite (the epoch's
        networks are then not handed to on_epoch).
        """
        check_pairs(patches, masks)
        masks, patches = to_network_range(masks), to_network_range(patches)
        epochs = self.settings['epochs'] if epochs is None else epochs
        minibatch = min(self.settings['minibatch'], len(patches))
        steps = len(patches) // minibatch
        with progress((epochs - self.epoch) * steps, 'training', unit='minibatch') as bar:
            self._train_epochs(masks, patches, epochs, minibatch, on_epoch, bar.update)

    def _train_epochs(self, masks, patches, epochs, minibatch, on_epoch, minibatches_done):
        while self.epoch < epochs:
            mean_losses = self._train_epoch(masks, patches, minibatch, minibatches_done)
            if not all(np.isfinite(v) for v in mean_losses.values()):
                raise UserError('training diverged in epoch %d: a loss is no longer finite (%s)'
                                % (self.epoch + 1, ', '.join('%s %.4g' % item for item in mean_losses.items())))
            self.epoch += 1
            if on_epoch is not None:
                on_epoch(self.epoch, mean_losses)

    def _train_epoch(self, masks, patches, minibatch, minibatches_done):
        sums = collections.OrderedDict()
        # The shuffle and flips of an epoch depend on (seed, epoch) only: a resumed run repeats them.
        random_state = np.random.RandomState([self.settings['seed'], self.epoch])
        batches = epoch_minibatches(len(patches), minibatch, random_state)
        for indices in batches:
            batch_masks, batch_patches = masks[indices], patches[indices]
            if self.settings['flip']:
                batch_masks, batch_patches = flip_pairs(batch_masks, batch_patches, random_state)
            for name, value in self._step(batch_masks, batch_patches).items():
                sums[name] = sums.get(name, 0.0) + value
            minibatches_done(1)
        return collections.OrderedDict((name, total / len(batches)) for name, total in sums.items())

    def _step(self, masks, patches):
        """One G step, then one D step on the same pairs; returns the losses each step saw, by name."""
        nets = self.nets
        feed = {nets.masks: masks, nets.reals: patches}
        G_fetches = dict(nets.G_terms, G=nets.G_loss)
        D_fetches = dict(nets.D_terms, D=nets.D_loss)
        G_values = nets.session.run([nets.G_step, G_fetches], feed)[1]
        D_values = nets.session.run([nets.D_step, D_fetches], feed)[1]
        return collections.OrderedDict((name, float(value)) for name, value in
                                       sorted(list(G_values.items()) + list(D_values.items())))

    # -- using the networks --------------------------------------------------------------------------------------

    def generate(self, masks, minibatch=None):
        """Patches in [-1, 1], float32 [N, H, W], for uint8 masks [N, H, W], in minibatches (default: the
        training minibatch).  Batch norm normalises with each minibatch's statistics and dropout draws anew, so
        a patch depends on the masks it is generated with and on the draw, as in the original."""
        masks = to_network_range(masks)
        minibatch = minibatch or self.settings['minibatch']
        parts = [self.nets.session.run(self.nets.fakes, {self.nets.masks: masks[start:start + minibatch]})
                 for start in range(0, len(masks), minibatch)]
        return np.concatenate(parts)[..., 0]

    def triplets(self, patches, masks, minibatch=None):
        """uint8 [N, H, 3W]: mask | real patch | generated patch side by side, the original's per-epoch picture."""
        generated = outputs.float_to_uint8(self.generate(masks, minibatch))
        return np.concatenate([masks, patches, generated], axis=2)

    # -- saving and loading --------------------------------------------------------------------------------------

    def network_states(self):
        """(G, D) as state dicts in the layout of network pickles: version 2, built by 'pix2pix_G' and 'pix2pix_D'."""
        return (network_state('G', 'pix2pix_G', self.G_kwargs, self._values(self.nets.G_vars)),
                network_state('D', 'pix2pix_D', self.D_kwargs, self._values(self.nets.D_vars)))

    def _values(self, variables):
        arrays = self.nets.session.run(list(variables.values()))
        return collections.OrderedDict(zip(variables.keys(), arrays))

    def set_network_states(self, states):
        """Assign the variables of (G, D) states; names and shapes must match this model's exactly."""
        values = {}
        for state, variables in zip(states, (self.nets.G_vars, self.nets.D_vars)):
            given = collections.OrderedDict(state['variables'])
            if list(given) != list(variables):
                raise UserError('network %s: variables %s do not match this model\'s %s'
                                % (state['name'], ', '.join(list(given)[:4]), ', '.join(list(variables)[:4])))
            for name, var in variables.items():
                if tuple(np.shape(given[name])) != tuple(var.shape.as_list()):
                    raise UserError('network %s: variable %s has shape %s, this model\'s has %s'
                                    % (state['name'], name, list(np.shape(given[name])), var.shape.as_list()))
                values[var] = given[name]
        self.nets.assign(values)

    def close(self):
        self.nets.close()


def network_state(name, build_func_name, static_kwargs, variables):
    """The state dict of one network, as network pickles store it; variables is {name: array} in creation order."""
    return {'version': 2, 'name': name, 'static_kwargs': dict(static_kwargs),
            'build_module_src': inspect.getsource(networks),  # for the record: loaders never run it
            'build_func_name': build_func_name,
            'variables': [(n, np.asarray(v)) for n, v in variables.items()]}


def _parameters(variables):
    return int(sum(np.prod(v.shape.as_list()) for v in variables.values()))


def resolve_settings(settings=None):
    """DEFAULTS overridden by `settings`, with the seed and (for 'once') the real label drawn when not given.

    The real label is the first draw of RandomState(seed), so a seed always gives the same label."""
    resolved = dict(DEFAULTS, **(settings or {}))
    if resolved['seed'] is None:
        resolved['seed'] = int(np.random.randint(0, 2 ** 31 - 1))
    if resolved['label_smoothing'] == 'once' and resolved['real_label'] is None:
        resolved['real_label'] = losses.draw_real_label(np.random.RandomState(resolved['seed']),
                                                        resolved['real_label_range'])
    return resolved
