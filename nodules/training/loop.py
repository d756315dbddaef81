"""Progressive-growing WGAN-GP training: the schedule, the per-resolution training graphs, and the loop that runs
them, writing logs, image grids and network snapshots into a new run directory.

The original always pushes full-resolution tensors through both networks.  Here each resolution gets its own
graph (networks built with `graph_resolution`, reals read from that resolution's TFRecords file), so a step costs
only what the resolution being trained needs, while every loss term keeps the original's value (see nodules/gan/losses.py).
A resolution's graph is built when its phase starts (its file is checked then, so a file that changed since the
start is found before TensorFlow reads it); the graphs share variables and optimizer state, and nothing is added
to the TensorFlow graph between those builds.

Names: `res_log2` is log2 of a resolution (2 for 4x4, 6 for 64x64), as the dataset's file names count; `lod` is
the networks' level of detail, log2(full resolution) - res_log2 when no fade-in is under way.

train() reads top to bottom: the dataset, the networks, the run directory, then the tick loop.
"""
import collections
import os
import sys
import time
import types

import numpy as np

from nodules.gan import augment
from nodules.data import dataset
from nodules import generation
from nodules.gan import legacy
from nodules.gan import losses
from nodules.metrics import memorization
from nodules.metrics import spectral
from nodules.metrics import swd as quality_metrics
from nodules.gan import networks
from nodules.util import outputs
from nodules.util import progress as progress_reports
from nodules.util import values
from nodules.gan import tfutil
from nodules.training import settings as training_settings
from nodules.util.errors import UserError
from nodules.util.tfcompat import tf

# kimg per tick at each resolution (the original's defaults): logs and grids come more often at low resolution.
TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 30, 1024: 20}
MINIBATCH_REPEATS = 4           # minibatches run with one schedule evaluation (and between updates of ADA's p)
MAX_NONFINITE_MINIBATCHES = 50  # consecutive non-finite losses before the run is declared diverged
METRIC_IMAGES = 1000            # images per set for --metrics unless metric_images says otherwise

Phase = collections.namedtuple('Phase', 'kimg lod resolution minibatch lr tick_kimg')


# ----------------------------------------------------------------------------------------------------------------
# The schedule


class Schedule(object):
    """Where training is after `kimg` thousand real images: level of detail, resolution, minibatch, rate."""

    def __init__(self, resolution, lod_training_kimg=600, lod_transition_kimg=600, initial_resolution=4,
                 minibatch=16, minibatch_dict=None, lr=0.001, lr_dict=None, tick_kimg=None):
        self.resolution_log2 = int(np.log2(resolution))
        self.initial_log2 = int(np.log2(initial_resolution))
        self.lod_training_kimg = lod_training_kimg
        self.lod_transition_kimg = lod_transition_kimg
        self.minibatch, self.minibatch_dict = minibatch, dict(minibatch_dict or {})
        self.lr, self.lr_dict = lr, dict(lr_dict or {})
        self.tick_kimg = tick_kimg

    def minibatch_for(self, resolution):
        return self.minibatch_dict.get(resolution, self.minibatch)

    def full_resolution_kimg(self):
        """kimg at which lod reaches 0: the full resolution, faded in."""
        return (self.resolution_log2 - self.initial_log2) * (self.lod_training_kimg + self.lod_transition_kimg)

    def at(self, kimg):
        phase_kimg = self.lod_training_kimg + self.lod_transition_kimg
        phase_index = int(np.floor(kimg / phase_kimg)) if phase_kimg > 0 else 0
        kimg_in_phase = kimg - phase_index * phase_kimg
        lod = float(self.resolution_log2 - self.initial_log2 - phase_index)
        if self.lod_transition_kimg > 0:
            lod -= max(kimg_in_phase - self.lod_training_kimg, 0.0) / self.lod_transition_kimg
        lod = max(lod, 0.0)
        resolution = 2 ** (self.resolution_log2 - int(np.floor(lod)))
        return Phase(kimg=kimg, lod=lod, resolution=resolution, minibatch=self.minibatch_for(resolution),
                     lr=self.lr_dict.get(resolution, self.lr),
                     tick_kimg=self.tick_kimg or TICK_KIMG.get(resolution, 20))


# ----------------------------------------------------------------------------------------------------------------
# The training graphs


def fade_reals(reals, lod, graph_lod):
    """During a fade-in (fractional lod) the reals are blended with their own 2x2-averaged, re-upscaled version by
    lod - floor(lod), as the original does before upscaling them to full resolution.  `graph_lod` is the lod at
    which the reals' resolution is shown as it is (log2(full resolution / theirs))."""
    alpha = tf.clip_by_value(lod - graph_lod, 0.0, 1.0)
    return reals + (networks.upscale2d(networks.downscale2d(reals)) - reals) * alpha


def _apply_if_finite(optimizer, grads_and_vars):
    """Adam step, skipped entirely (state untouched) when any gradient is NaN or infinite."""
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.is_finite(g)) for g, _ in grads_and_vars]))
    return tf.cond(finite, lambda: optimizer.apply_gradients(grads_and_vars), tf.no_op)


def _average_gradients(losses_per_device, variables):
    """Mean over devices of d(mean loss)/d(var); each device's loss is the mean over its equal share."""
    per_device = [tf.gradients(loss, variables) for loss in losses_per_device]
    grads = []
    for index, var in enumerate(variables):
        device_grads = [g[index] for g in per_device if g[index] is not None]
        if device_grads:
            grads.append((tf.add_n(device_grads) / float(len(device_grads)), var))
    return grads


AUGMENT_ROLES = ('reals', 'fakes', 'mixed', 'G')  # the images nodules/gan/losses.py sends through augment(images, role)


class TrainingGraphs(object):
    """One D step (with the Gs update) and one G step per resolution, over `devices`, sharing G, D, Gs and two
    Adam optimizers.

    A resolution's step is built by build(res_log2), which training calls when that resolution's phase starts:
    only the resolutions a run reaches are built, and the first is ready in seconds.  step() builds what it needs.

    `augment_pipe` (an augment.AugmentPipe) augments every image on its way into D, reals and fakes alike; each D
    step adds the signs of D's real scores, measured from the midpoint of the mean real and mean fake score (a
    critic's scores have no fixed zero), to the pipe's overfitting statistic, and update_augment() (every
    MINIBATCH_REPEATS minibatches) turns them into r_t and, for ada, a new p.

    With `full_resolution` every resolution's graph is built the original's way instead: networks at full
    resolution, reals nearest-upscaled to it.  Same losses, more work; benchmarks/bench_training.py compares the two.
    """

    def __init__(self, G, D, Gs, data_dir, schedule, devices, labels=None, mirror=False, seed=None,
                 G_smoothing=0.999, loss_kwargs=None, full_resolution=False, augment_pipe=None):
        self.G, self.D, self.Gs = G, D, Gs
        self.augment_pipe = augment_pipe
        self._inputs = dict(data_dir=data_dir, schedule=schedule, devices=devices, labels=labels, mirror=mirror,
                            seed=seed, loss_kwargs=loss_kwargs or {}, full_resolution=full_resolution)
        self.lr_in = tf.placeholder(tf.float32, [], name='lr_in')
        self.lod_in = tf.placeholder(tf.float32, [], name='lod_in')
        self.set_lod_op = tf.group(tf.assign(G.lod, self.lod_in), tf.assign(D.lod, self.lod_in))
        optimizer = lambda name: tf.train.AdamOptimizer(self.lr_in, beta1=0.0, beta2=0.99, epsilon=1e-8, name=name)
        self.G_opt, self.D_opt = optimizer('G_Adam'), optimizer('D_Adam')
        # Gs follows G with every D step, before the G step, as in the original.
        self.Gs_update = Gs.setup_as_moving_average_of(G, beta=G_smoothing)
        self.finite_op = tf.stack([tf.reduce_all([tf.reduce_all(tf.is_finite(v)) for v in net.trainables.values()])
                                   for net in (G, D, Gs)])
        self.per_resolution = {}
        self.reset_optimizers_op = tf.no_op()

    def build(self, res_log2):
        """Build the step of resolution 2**res_log2 (once), with its optimizer state initialised; its ops."""
        if res_log2 not in self.per_resolution:
            graph = tf.get_default_graph()
            finalized = graph.finalized
            if finalized:  # finalize() guards the steps against adding ops; this is the one place that may
                graph._unsafe_unfinalize()
            try:
                with tf.name_scope('train%dx%d' % (2 ** res_log2, 2 ** res_log2)):
                    self.per_resolution[res_log2] = self._build_resolution(res_log2, **self._inputs)
                # This resolution's Adam slots are new: initialise them, and reset them with the others from now on.
                tfutil.initialize_uninitialized_vars()
                self.reset_optimizers_op = tf.variables_initializer(self.G_opt.variables() + self.D_opt.variables())
            finally:
                if finalized:
                    graph.finalize()
        return self.per_resolution[res_log2]

    def _build_resolution(self, res_log2, schedule, data_dir, devices, labels, mirror, seed, loss_kwargs,
                          full_resolution):
        G, D = self.G, self.D
        resolution = 2 ** res_log2
        minibatch = schedule.minibatch_for(resolution)
        graph_resolution = None if full_resolution else resolution
        latent_size, label_size = G.input_shapes[0][1], G.input_shapes[1][1]
        pipe = self.augment_pipe
        augmenting = pipe is not None and bool(pipe.enabled)
        with tf.device('/cpu:0'):
            reals, real_labels = dataset.training_batches(data_dir, res_log2, minibatch, labels, mirror, seed)
            reals = fade_reals(reals, D.lod, schedule.resolution_log2 - res_log2)
            if full_resolution:
                reals = networks.upscale2d(reals, 2 ** (schedule.resolution_log2 - res_log2))
            latents_D = tf.random_normal([minibatch, latent_size])
            latents_G = tf.random_normal([minibatch, latent_size])
            mixing = tf.random_uniform([minibatch, 1, 1, 1], 0.0, 1.0)
            if label_size:  # the generator is asked for classes in the proportions of the dataset
                rows = tf.random_uniform([minibatch], 0, len(labels), dtype=tf.int32)
                fake_labels = tf.gather(tf.constant(np.asarray(labels, np.float32)), rows)
            else:
                fake_labels = tf.zeros([minibatch, 0])
            if augmenting:  # drawn for the whole minibatch, shared out like the images
                augment_params = {role: pipe.draw(minibatch, D.input_shapes[0][1] if full_resolution else resolution)
                                  for role in AUGMENT_ROLES}
        # Device t takes samples t, t+T, t+2T, ...: with equal group sizes the discriminator's minibatch-stddev
        # groups (sample n in group n mod N/G) are then the same as on one device.
        count = len(devices)
        share = lambda x, t: x[t::count]
        D_losses, G_losses, penalties, real_scores, fake_scores = [], [], [], [], []
        for t, device in enumerate(devices):
            augment_share = losses.no_augmentation
            if augmenting:
                augment_share = lambda images, role, t=t: pipe.apply(images, share(augment_params[role], t))
            with tf.device(device), tf.name_scope('device%d' % t):
                D_loss, terms = losses.D_wgangp(G, D, share(latents_D, t), share(reals, t), share(real_labels, t),
                                                share(mixing, t), graph_resolution=graph_resolution,
                                                augment=augment_share, **loss_kwargs)
                G_loss = losses.G_wgan(G, D, share(latents_G, t), share(fake_labels, t),
                                       graph_resolution=graph_resolution,
                                       cond_weight=loss_kwargs.get('cond_weight', 1.0), augment=augment_share)
                D_losses.append(tf.reduce_mean(D_loss))
                G_losses.append(tf.reduce_mean(G_loss))
                penalties.append(tf.reduce_mean(terms['gradient_penalty']))
                real_scores.append(terms['real_scores'])
                fake_scores.append(terms['fake_scores'])
        D_step = _apply_if_finite(self.D_opt, _average_gradients(D_losses, list(D.trainables.values())))
        G_step = _apply_if_finite(self.G_opt, _average_gradients(G_losses, list(G.trainables.values())))
        if pipe is not None:  # one op for all devices' scores: separate ones could race on the running sums
            with tf.device('/cpu:0'):
                D_step = tf.group(D_step, pipe.accumulate(real_scores, fake_scores))
        mean = lambda values: tf.add_n(values) / float(len(values))
        return {'D_step': tf.group(D_step, self.Gs_update), 'G_step': G_step, 'minibatch': minibatch,
                'D_loss': mean(D_losses), 'G_loss': mean(G_losses), 'gradient_penalty': mean(penalties)}

    def set_lod(self, lod):
        tfutil.run(self.set_lod_op, {self.lod_in: lod})

    def reset_optimizers(self):
        tfutil.run(self.reset_optimizers_op)

    def nonfinite_networks(self):
        """Names of the networks (G, D, Gs) with a NaN or infinite weight."""
        return [net.name for net, finite in zip((self.G, self.D, self.Gs), tfutil.run(self.finite_op)) if not finite]

    def update_augment(self):
        """r_t from the real scores since the last call and, for ada, p adjusted towards the target; (p, r_t)."""
        if self.augment_pipe is None:
            return None, None
        tfutil.run(self.augment_pipe.update_op)  # on its own: the D step's draws read p
        return tuple(float(v) for v in tfutil.run([self.augment_pipe.p, self.augment_pipe.rt]))

    def step(self, res_log2, lr):
        """One D step with the Gs update, then one G step; returns (G_loss, D_loss, gradient_penalty)."""
        ops = self.build(res_log2)
        with np.errstate(over='ignore'):  # a rate beyond float32 is infinite: weights diverge, and training stops
            lr = np.float32(lr)
        D_loss, penalty = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']], {self.lr_in: lr})[1:]
        G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {self.lr_in: lr})[1]
        return G_loss, D_loss, penalty


def available_devices(num_devices):
    """`num_devices` GPUs when there are that many, else as many logical CPU devices (set up by init_tf)."""
    names = [d.name for d in tfutil.run_session().list_devices()]
    gpus = sorted(n for n in names if ':GPU:' in n)
    cpus = sorted(n for n in names if ':CPU:' in n)
    if len(gpus) >= num_devices:
        return gpus[:num_devices]
    if len(cpus) >= num_devices:
        return cpus[:num_devices]
    raise UserError('asked for %d devices but this machine has %d GPU(s)' % (num_devices, len(gpus)))


def _is_input_error(error):
    """Whether a TensorFlow error came from reading the dataset (the tf.data iterator) rather than the networks."""
    op = getattr(error, 'op', None)
    return isinstance(error, tf.errors.DataLossError) or (op is not None and op.type.startswith('IteratorGetNext'))


# ----------------------------------------------------------------------------------------------------------------
# Setting up: the dataset and the networks


class TrainingData(object):
    """What training needs to know about a dataset whose every file was read and checked before training.

    With `conditional` the dataset's one-hot labels (and its class names, from its metadata) are used; without,
    a labelled dataset trains one model of all its images and `ignored_labels` says so.
    """

    def __init__(self, data_dir, conditional=False):
        summary = dataset.check_dataset(data_dir)
        self.data_dir = data_dir
        self.files = summary.files
        self.resolution_log2 = max(self.files)
        self.resolution = 2 ** self.resolution_log2
        self.top_file = self.files[self.resolution_log2]
        self.count = summary.num_images
        self.num_channels = summary.shape[0]
        self.ignored_labels = summary.labels is not None and not conditional
        self.labels = summary.labels if conditional else None
        if conditional and self.labels is None:
            raise UserError('%s: has no labels (%s), so it cannot train a conditional model; build a labelled '
                            'dataset with dataset_tool.py merge OUT AIS_DIR MIA_DIR IAC_DIR'
                            % (data_dir, os.path.basename(dataset.labels_path(data_dir))))
        if conditional:  # G is given one class per image: mixed or out-of-range rows would teach it nonsense
            dataset.check_one_hot(self.labels, dataset.labels_path(data_dir), '--conditional')
        self.label_size = 0 if self.labels is None else self.labels.shape[1]
        self.class_names = _class_names(data_dir, self.label_size) if conditional else None

    def cycled_labels(self, count):
        """Labels for `count` generated images, cycling through the dataset's rows ([count, 0] without labels)."""
        if not self.label_size:
            return np.zeros((count, 0), np.float32)
        return self.labels[np.arange(count) % len(self.labels)]


def _class_names(data_dir, label_size):
    """The names of the label columns from the dataset's metadata (`classes`, as dataset_tool.py writes it), or
    None when it names none: the networks then know their classes by index only."""
    names = (dataset.read_metadata(data_dir) or {}).get('classes')
    if isinstance(names, list) and len(names) == label_size and all(isinstance(n, str) for n in names):
        return names
    return None


# What the network builders assume for keywords that a pickle may not store (the original's pickles and snapshots
# written before the setting existed).
BUILDER_DEFAULTS = {'num_channels': 1, 'label_size': 0, 'fused_scale': True, 'blur_resampling': False,
                    'edge_padding': False}


def _networks(data, settings, resume, G_kwargs, D_kwargs):
    """(G, D, Gs): loaded from the snapshot `resume`, or new ones for the dataset, with the network settings
    G_kwargs and D_kwargs (for new networks the others at the defaults of training_settings), started from the
    weights of settings['transfer'] when it names a pickle.  Networks that could not be trained in this machine's
    memory are refused before they are built.

    Class names go into every network's static keywords (`label_names`), which the networks' builders, and the
    original code's, ignore; 2-inference.py --label reads them.
    """
    common = dict(num_channels=data.num_channels, resolution=data.resolution, label_size=data.label_size)
    if settings.get('transfer') and not resume:
        return _transferred_networks(data, settings, settings['transfer'], G_kwargs, D_kwargs)
    if not resume:
        G_kwargs, D_kwargs = training_settings.network_kwargs(dict(D_kwargs or {}, **(G_kwargs or {})),
                                                              defaults=True)
        _check_memory(settings, data, G_kwargs, D_kwargs,
                      ', '.join('%s=%s' % item for item in sorted(G_kwargs.items())))
        names = {'label_names': data.class_names} if data.class_names else {}
        G = tfutil.Network('G', 'G_paper', **dict(G_kwargs, **dict(common, **names)))
        D = tfutil.Network('D', 'D_paper', **dict(D_kwargs, **dict(common, **names)))
        G.init_vars()
        D.init_vars()
        return G, D, G.clone('Gs')
    states = legacy.read_network_states(resume)
    stored = [state['static_kwargs'] for state in states]
    stored_names = stored[0].get('label_names')
    if stored_names is not None and data.class_names is not None and list(stored_names) != data.class_names:
        raise UserError('%s: networks know the classes %s but %s has %s' % (
            resume, ', '.join(stored_names), data.data_dir, ', '.join(data.class_names)))
    _refuse_other_networks(resume, stored, G_kwargs, D_kwargs, common, data.data_dir)
    _check_memory(settings, data, stored[0], stored[1], resume)
    return tuple(legacy.network_from_state(state, resume) for state in states)


def _transferred_networks(data, settings, source, G_kwargs, D_kwargs):
    """(G, D, Gs) for the dataset, sized as the networks of the pickle `source` and holding its weights.

    An unconditional source may go to a labelled dataset (--conditional): G's label inputs (the rows of its first
    dense layer after the latent's) and D's label outputs (the columns of its last layer after the score) are new,
    at their fresh initialisation, the same in G and Gs; every other weight is the source's.
    """
    states = legacy.read_network_states(source)
    stored = [dict(state['static_kwargs']) for state in states]
    source_labels = stored[0].get('label_size', BUILDER_DEFAULTS['label_size'])
    if source_labels not in (0, data.label_size):
        raise UserError('%s: networks are conditional on %d classes, but %s gives %d; transfer a model of as many '
                        'classes, or an unconditional one' % (source, source_labels, data.data_dir, data.label_size))
    _refuse_other_networks(source, stored, G_kwargs, D_kwargs,
                           dict(num_channels=data.num_channels, resolution=data.resolution), data.data_dir)
    names = {'label_names': data.class_names} if data.class_names else {}
    for kwargs in stored:
        kwargs.pop('label_names', None)
        kwargs.update(label_size=data.label_size, **names)
    _check_memory(settings, data, stored[0], stored[1], source)
    G, D = (tfutil.Network(state['name'], state['build_func_name'], **kwargs)
            for state, kwargs in zip(states[:2], stored[:2]))
    G.init_vars()
    D.init_vars()
    fresh_G = G.get_vars()
    Gs = G.clone('Gs')
    for net, fresh, state in ((G, fresh_G, states[0]), (D, D.get_vars(), states[1]), (Gs, fresh_G, states[2])):
        net.set_vars(_started_from(fresh, dict(state['variables']), source, state['name']))
    return G, D, Gs


def _refuse_other_networks(path, stored, G_kwargs, D_kwargs, common, data_dir):
    """A UserError when the networks stored in `path` (their static keywords `stored`) differ from what the command
    line asks (G_kwargs, D_kwargs) or from what the dataset needs (`common`)."""
    for have_kwargs, asked in zip(stored, (G_kwargs, D_kwargs)):
        for key, value in sorted(dict(asked or {}, **common).items()):
            have = have_kwargs.get(key, BUILDER_DEFAULTS.get(key))
            if have != value:
                source = data_dir if key in common else 'the command line'
                raise UserError('%s: networks have %s=%s but %s asks for %s' % (path, key, have, source, value))


def _started_from(fresh, weights, source, role):
    """{name: value}: the source's `weights` over the `fresh` values, each in the leading block of its variable
    (the label rows and columns an unconditional source lacks keep their fresh values)."""
    values = {}
    for name, value in fresh.items():
        weight = np.asarray(weights.get(name)) if name in weights else None
        if weight is None or weight.ndim != value.ndim or any(w > v for w, v in zip(weight.shape, value.shape)):
            raise UserError('%s: network %s has no variable %s of shape %s or smaller to start from'
                            % (source, role, name, list(value.shape)))
        values[name] = value.copy()
        values[name][tuple(slice(0, w) for w in weight.shape)] = weight
    return values


def _check_memory(settings, data, G_kwargs, D_kwargs, source):
    """Refuse networks of these keywords whose training steps up to the dataset's resolution cannot fit."""
    sizes = dict(training_settings.NETWORK_DEFAULTS, **{k: v for k, v in G_kwargs.items()
                                                       if k in training_settings.NETWORK_DEFAULTS})
    sizes['mbstd_group_size'] = D_kwargs.get('mbstd_group_size', training_settings.MBSTD_GROUP_SIZE)
    training_settings.check_memory(settings, sizes, [2 ** r for r in range(2, data.resolution_log2 + 1)], source,
                                   data.num_channels, data.label_size)


# ----------------------------------------------------------------------------------------------------------------
# The run directory: log, config, image grids, snapshots


def log_line(path, line, console=None):
    """Append `line`, time-stamped, to the run's log at `path`, and show it on `console` (a callable) if given."""
    line = '%s %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), line)
    if console is not None:
        console(line)
    try:
        with open(path, 'a', encoding='utf-8') as f:
            f.write(line + '\n')
    except OSError:
        pass  # a full disk: the line was still shown, and what then fails stops the run with its own message


def save_final(run_dir, snapshot):
    """run_dir/network-final.pkl: the last snapshot, hard-linked (the same bytes, no second copy on disk), or copied
    where the file system has no hard links."""
    path = os.path.join(run_dir, training_settings.FINAL_NAME)
    try:
        os.link(snapshot, path)
    except OSError:
        with open(snapshot, 'rb') as f:
            outputs.write_file_atomic(path, f.read())
    return path


def new_run_dir(outdir, description):
    """outdir/NNNNN-description, numbered one past the highest existing run; never an existing directory.

    Temporary files that killed runs left in the other run directories are removed first.
    """
    outputs.prepare_outdir(outdir)
    for name in os.listdir(outdir):
        if training_settings.RUN_DIR_NAME.match(name) and os.path.isdir(os.path.join(outdir, name)):
            outputs.remove_stale_temporaries(os.path.join(outdir, name))
    while True:
        numbers = [int(name[:5]) for name in os.listdir(outdir) if training_settings.RUN_DIR_NAME.match(name)]
        path = os.path.join(outdir, '%05d-%s' % (max(numbers + [-1]) + 1, description))
        try:
            os.makedirs(path)
            return path
        except OSError:
            if not os.path.exists(path):
                raise


class RunOutputs(object):
    """Everything a run writes: log.txt (and the console), config.json, TensorBoard summaries, reals.png, the
    fakes grids of Gs for fixed latents, snapshots and metrics."""

    def __init__(self, run_dir, data, Gs, seed, metrics=(), metric_images=None, grid_size=(8, 4),
                 console=None, heldout=None):
        self.run_dir, self.data, self.Gs = run_dir, data, Gs
        self.console = console
        self.grid_columns = grid_size[0]
        grid_count = grid_size[0] * grid_size[1]
        self.grid_latents = generation.random_latents(grid_count, Gs.input_shapes[0][1], seed)
        self.grid_labels = data.cycled_labels(grid_count)
        self.summaries = tf.summary.FileWriter(run_dir)
        self.metrics = list(metrics)
        # memorization needs real patches the generator never saw (uint8 [N, C, H, W]); without them it is skipped
        self.heldout = heldout
        if self.metrics:
            self.metric_reals = dataset.read_images(data.top_file, min(metric_images or METRIC_IMAGES, data.count))
            self.metric_latents = generation.random_latents(len(self.metric_reals), Gs.input_shapes[0][1],
                                                            (seed + 1) % values.SEED_LIMIT)
        if 'memorization' in self.metrics and heldout is not None:
            self.training_images = dataset.read_images(data.top_file)  # the audit compares with every one

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def log(self, line):
        log_line(self.path('log.txt'), line, self.console)

    def write_config(self, settings, **details):
        outputs.write_file_atomic(training_settings.config_path(self.run_dir),
                                  training_settings.config_bytes(settings, **details))

    def save_reals(self):
        count = min(len(self.grid_latents), self.data.count)
        reals = dataset.read_images(self.data.top_file, count)
        outputs.write_mosaic(self.path('reals.png'), reals.transpose(0, 2, 3, 1), columns=self.grid_columns)

    def _generate(self, latents, labels):
        return generation.generate_images(self.Gs, latents, labels=labels, batch_size=16, check_finite=False)

    def save_fakes(self, nimg):
        fakes = self._generate(self.grid_latents, self.grid_labels)
        outputs.write_mosaic(self.path(training_settings.fakes_name(nimg)), fakes, columns=self.grid_columns)

    def save_snapshot(self, nimg, networks):
        path = self.path(training_settings.snapshot_name(nimg))
        legacy.save_network_pkl(path, networks)
        return path

    def save_final(self, snapshot):
        return save_final(self.run_dir, snapshot)

    def summarize(self, nimg, values):
        """TensorBoard scalars {tag: value} at kimg nimg / 1000 (TensorBoard steps are whole kimg)."""
        self.summaries.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))
                                                     for tag, value in values]), nimg // 1000)
        self.summaries.flush()

    def log_metric_settings(self, heldout_dir):
        """Lines that say, once, what the metrics compare with: the reals' own spectral peak (the level a
        generator without a lattice reaches) and whether memorization can run."""
        if 'spectral' in self.metrics:
            self.log('spectral peak of the reals (%d images): %s'
                     % (len(self.metric_reals), spectral.describe_peak(spectral.spectral_peaks(self.metric_reals))))
        if 'memorization' in self.metrics and self.heldout is None:
            self.log('memorization: skipped, no --heldout dataset of real patches the generator never sees to '
                     'compare with')
        if heldout_dir and 'memorization' not in self.metrics:
            self.log('--heldout %s: not used, --metrics has no memorization' % heldout_dir)

    def log_metrics(self, nimg, lod=0.0):
        """The metrics of Gs at a snapshot, each by the function compute_metrics.py calls, on one set of fakes;
        `lod` is where the schedule is (the spectral line warns before full resolution)."""
        computed = [name for name in self.metrics if name != 'memorization' or self.heldout is not None]
        if not computed:
            return
        fakes = generation.channels_first(
            self._generate(self.metric_latents, self.data.cycled_labels(len(self.metric_latents))))
        kimg = nimg / 1000.0
        scalars = []
        if 'swd' in computed:
            per_size, average = quality_metrics.sliced_wasserstein_distance(self.metric_reals, fakes)
            sizes = quality_metrics.swd_resolutions(self.data.resolution)
            self.log('swd x1e3 at kimg %.3f: %s, average %.3f' % (
                kimg, ', '.join('%dx%d %.3f' % (r, r, v) for r, v in zip(sizes, per_size)), average))
            scalars += [('Metrics/swd_%dx%d' % (r, r), v) for r, v in zip(sizes, per_size)]
            scalars.append(('Metrics/swd_average', average))
        if 'spectral' in computed:
            peaks = spectral.spectral_peaks(fakes)
            # Below full resolution the fakes are nearest-neighbour up-sampled, and that spectrum is zero at the
            # lattice periods: the ratios there are of near-zero powers and mean nothing yet.
            self.log('spectral peak at kimg %.3f: %s%s' % (
                kimg, spectral.describe_peak(peaks),
                '' if lod == 0 else ' (lod %.3f: not meaningful before full resolution, the images are still '
                                    'up-sampled by nearest neighbours)' % lod))
            scalars.append(('Metrics/spectral_peak', peaks['peak']))
            scalars += [('Metrics/spectral_peak_period%s' % period, ratio)
                        for period, ratio in sorted(peaks['by_period'].items(), key=lambda item: int(item[0]))]
        if 'memorization' in computed:
            audit = memorization.audit(fakes, self.heldout, self.training_images)
            self.log('memorization at kimg %.3f: median ratio %.3f, near-copy share %.3f (%d generated, %d '
                     'held-out, %d training patches)' % (kimg, audit['median_ratio'], audit['near_copy_share'],
                                                         audit['generated_count'], audit['heldout_count'],
                                                         audit['training_count']))
            scalars += [('Metrics/memorization_median_ratio', audit['median_ratio']),
                        ('Metrics/memorization_near_copy_share', audit['near_copy_share'])]
        self.summarize(nimg, scalars)

    def close(self):
        self.summaries.close()


def augment_pipe_for(settings):
    """The augment.AugmentPipe that a run's settings ask for.  Every run has one: with policy none it augments
    nothing and only measures the overfitting heuristic r_t, which is worth logging for any run."""
    adaptive = settings['augment'] == 'ada' and settings['augment_p'] is None
    return augment.AugmentPipe(settings['augment'], initial_p=settings['augment_p'] or 0.0,
                               ada_target=settings['ada_target'] if adaptive else None, ada_kimg=settings['ada_kimg'],
                               **augment.switches(settings['augment_enable'], settings['augment_disable']))


def restore_augment_p(pipe, D, resume):
    """On resume, ada's adapted p continues from the value stored with the snapshot's D; a log line, or None."""
    if not (resume and pipe.adaptive):
        return None
    stored = D.static_kwargs.get('augment_p')
    if stored is None:
        return 'augment: %s stores no ada p; p starts from 0' % resume
    pipe.set_p(stored)
    return 'augment: p = %.4f restored from %s' % (stored, resume)


def store_augment_p(pipe, D):
    """Put ada's current p into D's static keywords, so that snapshots carry it (the networks' builders ignore
    it); other policies' p is fixed by the settings and a stale one from a resumed snapshot is dropped."""
    if pipe.policy == 'ada':
        D.static_kwargs['augment_p'] = float(tfutil.run(pipe.p))
    else:
        D.static_kwargs.pop('augment_p', None)


def _describe_settings(settings, origins):
    """Log lines saying which settings the run uses and where each came from."""
    groups = collections.OrderedDict()
    for name, value in settings.items():
        groups.setdefault(origins.get(name, 'default'), []).append('%s=%s' % (name, value))
    lines = []
    for origin, items in groups.items():
        where = {'default': 'default settings', 'command line': 'settings from the command line'}.get(
            origin, 'settings restored from %s' % origin)
        lines.append('%s: %s' % (where, ', '.join(items)))
    return lines


def schedule_warnings(cfg, schedule, start_nimg):
    """Warnings for runs that will not show what their length suggests: one that ends before the full resolution
    is faded in, and one shorter than the moving average that makes Gs (the generator that is saved) needs to
    follow G."""
    lines = []
    end = schedule.at(cfg.total_kimg)
    full_kimg = schedule.full_resolution_kimg()
    if end.lod > 0:
        full = 2 ** schedule.resolution_log2
        where = ('%dx%d' if end.lod == np.floor(end.lod) else 'the fade-in of %dx%d') % (end.resolution,
                                                                                          end.resolution)
        lines.append('warning: --total-kimg %g ends at %s (lod %.2f); the full %dx%d (lod 0) needs %g kimg with '
                     '--lod-training-kimg %g and --lod-transition-kimg %g' % (
                         cfg.total_kimg, where, end.lod, full, full, full_kimg, cfg.lod_training_kimg,
                         cfg.lod_transition_kimg))
    horizon_kimg = end.minibatch / (1.0 - cfg.G_smoothing) / 1000.0  # 1 / (1 - beta) minibatches
    length_kimg = cfg.total_kimg - start_nimg / 1000.0
    if length_kimg < horizon_kimg:
        lines.append('warning: this run trains %g kimg, but Gs (the saved generator, shown in the fakes grids) '
                     'trails G by about %g kimg (--g-smoothing %g at minibatch %d), so it shows little of this '
                     'training; lower --g-smoothing (e.g. 0.99) for short runs'
                     % (length_kimg, horizon_kimg, cfg.G_smoothing, end.minibatch))
    return lines


def _print_line(line):
    print(line)
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------------------
# The loop


def train(settings=None, outdir='results', resume=None, resume_kimg=None, G_kwargs=None, D_kwargs=None,
          origins=None, grid_size=(8, 4), progress=progress_reports.quiet, console=_print_line):
    """Train G and D as `settings` say (see training_settings.DEFAULTS) in a new run directory under `outdir`.

    resume: a snapshot to continue from, at `resume_kimg` (default: from its file name).
    G_kwargs, D_kwargs: network settings (fmap_base, ...) given for the networks: new networks take the others
      from the defaults of training_settings; a resumed run's networks must agree with them.
    origins: {setting: where it came from}, for the log.
    progress: progress(total, desc, unit=...) -> a context manager with update(n), for the images trained
      (cli.progress draws a bar); console: called with every line the run logs, and with what it is doing
      before the log exists.  Returns the run directory.

    The run has a TensorFlow graph and session of its own, closed at the end: several runs in one process do not
    see each other.
    """
    with tfutil.separate_graph():
        return _train(settings, outdir, resume, resume_kimg, G_kwargs, D_kwargs, origins, grid_size, progress,
                      console)


def _check_metrics(cfg, data):
    """Refuse metrics that cannot be computed on this dataset, before the run directory exists; returns the
    held-out images for memorization (uint8 [N, C, H, W], every file of their dataset checked), or None."""
    if 'swd' in cfg.metrics and data.resolution < 16:
        raise UserError('%s: --metrics swd needs images of at least 16x16, these are %dx%d'
                        % (cfg.data_dir, data.resolution, data.resolution))
    if 'spectral' in cfg.metrics and (data.resolution < spectral.BASE_PERIOD or data.num_channels != 1):
        raise UserError('%s: --metrics spectral needs grayscale images of at least %dx%d, these are %dx%d with %d '
                        'channels' % (cfg.data_dir, spectral.BASE_PERIOD, spectral.BASE_PERIOD, data.resolution,
                                      data.resolution, data.num_channels))
    if 'memorization' not in cfg.metrics or not cfg.heldout_dir:
        return None
    summary = dataset.check_dataset(cfg.heldout_dir)
    if max(summary.files) != data.resolution_log2 or summary.shape[0] != data.num_channels:
        raise UserError('%s: --heldout images are %dx%d with %d channel(s), but %s has %dx%d with %d; the '
                        'memorization audit compares one size' % (
                            cfg.heldout_dir, 2 ** max(summary.files), 2 ** max(summary.files), summary.shape[0],
                            cfg.data_dir, data.resolution, data.resolution, data.num_channels))
    return dataset.read_images(summary.files[max(summary.files)])


def _train(settings, outdir, resume, resume_kimg, G_kwargs, D_kwargs, origins, grid_size, progress, console):
    settings = training_settings.check_settings(dict(settings or {}))
    cfg = types.SimpleNamespace(**settings)
    if resume and resume_kimg is None:
        resume_kimg = training_settings.resume_kimg_of(resume, 'resume_kimg')
    start_nimg = training_settings.nimg_of_kimg(resume_kimg or 0.0)

    # Everything that can be wrong with the input is found before the run directory exists.
    console('reading and checking every file of %s ...' % cfg.data_dir)
    try:
        data = TrainingData(cfg.data_dir, cfg.conditional)
    except UserError as error:
        recorded_in = (origins or {}).get('data_dir')
        if recorded_in and recorded_in != 'command line':  # the resumed run's config.json named this folder
            raise UserError('%s (the data_dir recorded in %s; give --data DIR to resume on a dataset elsewhere)'
                            % (error, recorded_in))
        raise
    heldout = _check_metrics(cfg, data)
    # Transferred networks are trained at full resolution only: the schedule starts at it.
    schedule = Schedule(data.resolution, cfg.lod_training_kimg, cfg.lod_transition_kimg,
                        initial_resolution=data.resolution if cfg.transfer else 4, minibatch=cfg.minibatch,
                        minibatch_dict=cfg.minibatch_dict, lr=cfg.lr, tick_kimg=cfg.tick_kimg)
    np.random.seed(cfg.seed)
    tfutil.init_tf(seed=cfg.seed, cpu_devices=cfg.num_devices)
    devices = available_devices(cfg.num_devices)
    console('loading the networks of %s ...' % (resume or cfg.transfer) if resume or cfg.transfer
            else 'creating the networks ...')
    G, D, Gs = _networks(data, settings, resume, G_kwargs, D_kwargs)
    training_settings.check_settings(settings, 'settings',
                                     mbstd_group_size=D.static_kwargs.get('mbstd_group_size',
                                                                          training_settings.MBSTD_GROUP_SIZE))
    pipe = augment_pipe_for(settings)
    graphs = TrainingGraphs(G, D, Gs, cfg.data_dir, schedule, devices, labels=data.labels, mirror=cfg.mirror,
                            seed=cfg.seed, G_smoothing=cfg.G_smoothing, loss_kwargs=cfg.loss_kwargs,
                            augment_pipe=pipe)
    tfutil.initialize_uninitialized_vars()
    restored_p = restore_augment_p(pipe, D, resume)

    run_dir = new_run_dir(outdir, '%s-%dx%d' % (dataset.dataset_name(cfg.data_dir), data.resolution, data.resolution))
    run = RunOutputs(run_dir, data, Gs, cfg.seed, cfg.metrics, cfg.metric_images, grid_size, console, heldout)
    try:
        run.write_config(dict(settings, **{name: os.path.abspath(settings[name])
                                           for name in training_settings.PATH_SETTINGS if settings[name]}),
                         resume=resume and os.path.abspath(resume), resume_kimg=start_nimg / 1000.0,
                         G_kwargs=G.static_kwargs, D_kwargs=D.static_kwargs, G_params=G.num_params(),
                         D_params=D.num_params(), devices=devices, augment_config=pipe.config)
        run.log('run %s: %s, %d images of %dx%d, G %d and D %d parameters, on %s'
                % (run_dir, cfg.data_dir, data.count, data.resolution, data.resolution, G.num_params(),
                   D.num_params(), ', '.join(devices)))
        if resume:
            run.log('resuming %s at kimg %s' % (resume, start_nimg / 1000.0))
        elif cfg.transfer:
            run.log('networks started from %s (transfer), trained at full resolution' % cfg.transfer)
        run.log('networks: G %s; D %s' % tuple(', '.join('%s=%s' % item for item in sorted(net.static_kwargs.items()))
                                               for net in (G, D)))
        for line in _describe_settings(settings, origins or {}) + schedule_warnings(cfg, schedule, start_nimg):
            run.log(line)
        if data.ignored_labels:
            run.log('%s has labels; they are not used (train one model of every class with --conditional)'
                    % cfg.data_dir)
        if data.label_size:
            run.log('conditional on %d classes: %s' % (data.label_size, ', '.join(data.class_names or [])
                                                        or 'unnamed (the dataset\'s metadata has no classes list)'))
        run.log('augment: %s%s' % (pipe.policy, ' (%s)' % ', '.join(pipe.enabled) if pipe.enabled else ''))
        if restored_p:
            run.log(restored_p)
        run.log_metric_settings(cfg.heldout_dir)
        run.save_reals()
        run.save_fakes(start_nimg)
        tf.get_default_graph().finalize()  # any op created from here on would be a bug (per-step graph growth)
        last_snapshot = _run_ticks(graphs, schedule, run, data, start_nimg,
                                   training_settings.nimg_of_kimg(cfg.total_kimg), cfg.snapshot_ticks, resume,
                                   progress)
        final = run.save_final(last_snapshot)
        run.log('done: %s' % final)
    finally:
        run.close()
    return run_dir


def _stop(run, message):
    """End training with `message` in the log and as the one line the user sees."""
    run.log('error: ' + message)
    raise UserError(message)


def _open_phase(graphs, res_log2, run, nimg, last_snapshot):
    """Build the training graph of resolution 2**res_log2, which reads (and so first checks again) its file;
    returns the seconds it took."""
    resolution = 2 ** res_log2
    run.log('kimg %.3f: checking the %dx%d file and building its training graph ...' % (nimg / 1000.0, resolution,
                                                                                      resolution))
    start = time.time()
    try:
        graphs.build(res_log2)
    except UserError as error:
        _stop(run, '%s; training stopped at kimg %.3f, the last good snapshot is %s'
              % (error, nimg / 1000.0, last_snapshot or 'none'))
    seconds = time.time() - start
    run.log('%dx%d training graph built in %.1f s' % (resolution, resolution, seconds))
    return seconds


def _run_ticks(graphs, schedule, run, data, nimg, total_nimg, snapshot_ticks, last_snapshot, progress):
    """Train from `nimg` to `total_nimg` images, logging every tick and taking a snapshot every `snapshot_ticks`
    and at the end; returns the last snapshot.  Stops (UserError) when a file cannot be read or the networks
    diverge, naming the last good snapshot: nothing with non-finite weights is ever saved."""
    networks = (graphs.G, graphs.D, graphs.Gs)
    tick_start_nimg, tick_start_time, ticks = nimg, time.time(), 0
    last_lod, stats, nonfinite = None, [], 0
    augment_p, rts = None, []
    with progress((total_nimg - nimg) / 1000.0, 'training', unit='kimg') as bar:
        while nimg < total_nimg:
            phase = schedule.at(nimg / 1000.0)
            res_log2 = int(np.log2(phase.resolution))
            if res_log2 not in graphs.per_resolution:
                tick_start_time += _open_phase(graphs, res_log2, run, nimg, last_snapshot)  # not training time
            if phase.lod != last_lod:
                graphs.set_lod(phase.lod)
                if last_lod is None or (np.floor(phase.lod) != np.floor(last_lod)
                                        or np.ceil(phase.lod) != np.ceil(last_lod)):
                    graphs.reset_optimizers()  # entering or leaving a fade-in: fresh Adam moments
                last_lod = phase.lod
            for _ in range(MINIBATCH_REPEATS):
                try:
                    values = graphs.step(res_log2, phase.lr)
                except tf.errors.OpError as error:
                    if not _is_input_error(error):
                        raise
                    _stop(run, '%s: reading it failed at kimg %.3f (%s); training stopped, the last good snapshot '
                               'is %s' % (data.files[res_log2], nimg / 1000.0, error.message.strip().splitlines()[0],
                                          last_snapshot or 'none'))
                nimg += phase.minibatch
                bar.update(phase.minibatch / 1000.0)
                if np.all(np.isfinite(values)):
                    stats.append(values)
                    nonfinite = 0
                else:
                    nonfinite += 1
                    if nonfinite >= MAX_NONFINITE_MINIBATCHES:
                        _stop(run, 'training diverged: losses were not finite for %d minibatches at kimg %.3f; the '
                                   'last good snapshot is %s' % (nonfinite, nimg / 1000.0, last_snapshot or 'none'))
            augment_p, rt = graphs.update_augment()
            rts.append(rt)
            done = nimg >= total_nimg
            if nimg < tick_start_nimg + phase.tick_kimg * 1000 and not done:
                continue

            ticks += 1
            seconds = time.time() - tick_start_time
            G_loss, D_loss, penalty = np.mean(stats, axis=0) if stats else (np.nan,) * 3
            sec_per_kimg = seconds / max((nimg - tick_start_nimg) / 1000.0, 1e-9)
            # r_t, the mean sign of D's real scores from its threshold, here over the tick: near 1, D overfits.
            augment_rt = np.mean(rts)
            run.log('tick %-4d kimg %-8.3f lod %-6.3f resolution %-4d minibatch %-3d sec/kimg %-8.2f '
                    'G_loss %-9.4f D_loss %-9.4f gradient_penalty %-8.4f augment_p %-7.4f r_t %.3f'
                    % (ticks, nimg / 1000.0, phase.lod, phase.resolution, phase.minibatch, sec_per_kimg, G_loss,
                       D_loss, penalty, augment_p, augment_rt))
            run.summarize(nimg, [('Progress/lod', phase.lod), ('Progress/resolution', phase.resolution),
                                 ('Progress/minibatch', phase.minibatch), ('Timing/sec_per_kimg', sec_per_kimg),
                                 ('Loss/G', G_loss), ('Loss/D', D_loss), ('Loss/gradient_penalty', penalty),
                                 ('Progress/augment_p', augment_p), ('Loss/signs_real', augment_rt)])
            diverged = graphs.nonfinite_networks()
            if diverged:
                _stop(run, 'training diverged: %s ha%s non-finite weights at kimg %.3f (not saved); the last good '
                           'snapshot is %s' % (' and '.join(diverged), 've' if len(diverged) > 1 else 's',
                                               nimg / 1000.0, last_snapshot or 'none'))
            try:
                run.save_fakes(nimg)
                if ticks % snapshot_ticks == 0 or done:
                    store_augment_p(graphs.augment_pipe, graphs.D)
                    last_snapshot = run.save_snapshot(nimg, networks)
                    run.log_metrics(nimg, phase.lod)
            except UserError as error:  # a full disk, say: the file that could not be written is left as it was
                _stop(run, '%s; training stopped at kimg %.3f, the last good snapshot is %s'
                      % (error, nimg / 1000.0, last_snapshot or 'none'))
            tick_start_nimg, tick_start_time, stats, rts = nimg, time.time(), [], []
    return last_snapshot
