"""Progressive-growing WGAN-GP training (SPEC section 5): the schedule, the per-resolution training graphs and
the loop that runs them, writing logs, image grids and network snapshots into a new run directory.

Unlike the original, which always pushed full-resolution tensors through both networks, each resolution gets
its own graph (networks built with `graph_resolution`, reals read from that resolution's TFRecords file), so a
step costs only what the resolution being trained needs.  All graphs are built up front and share variables and
optimizer state; nothing is added to the graph while training runs.
"""
import collections
import json
import os
import re
import sys
import time

import numpy as np

import cli
from errors import UserError
import dataset
import legacy
import losses
import metrics as quality_metrics
import networks
import outputs
import tfutil
from tfcompat import tf

# kimg per tick at each resolution (the original's defaults): logs and grids come more often at low resolution.
TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 30, 1024: 20}
MINIBATCH_REPEATS = 4          # minibatches run with one schedule evaluation
MAX_NONFINITE_MINIBATCHES = 50  # consecutive non-finite losses before the run is declared diverged
SNAPSHOT_NAME = re.compile(r'^network-snapshot-(\d+)\.pkl$')

Phase = collections.namedtuple('Phase', 'kimg lod resolution minibatch lr tick_kimg')


class Schedule(object):
    """Where training is after `kimg` thousand real images: level of detail, resolution, minibatch, rate."""

    def __init__(self, resolution, lod_training_kimg=600, lod_transition_kimg=600, initial_resolution=4,
                 minibatch=16, minibatch_dict=None, lr=0.001, lr_dict=None, tick_kimg=None, num_devices=1):
        self.resolution_log2 = int(np.log2(resolution))
        self.initial_log2 = int(np.log2(initial_resolution))
        self.lod_training_kimg = lod_training_kimg
        self.lod_transition_kimg = lod_transition_kimg
        self.minibatch, self.minibatch_dict = minibatch, dict(minibatch_dict or {})
        self.lr, self.lr_dict = lr, dict(lr_dict or {})
        self.tick_kimg = tick_kimg
        self.num_devices = num_devices

    def minibatch_for(self, resolution):
        size = self.minibatch_dict.get(resolution, self.minibatch)
        return max(size - size % self.num_devices, self.num_devices)  # equal shares for every device

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


def _fade_reals(reals, lod, levels_below_full):
    """Reals at a fractional lod are blended with their own 2x2-averaged, re-upscaled version, as fakes are."""
    alpha = tf.clip_by_value(lod - levels_below_full, 0.0, 1.0)
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


class TrainingGraphs(object):
    """One D step and one G step per resolution, over `devices`, sharing G, D, Gs and two Adam optimizers."""

    def __init__(self, G, D, Gs, data_dir, schedule, devices, labels=None, mirror=False, seed=None,
                 G_smoothing=0.999, loss_kwargs=None):
        self.G, self.D, self.Gs = G, D, Gs
        self.lr_in = tf.placeholder(tf.float32, [], name='lr_in')
        self.lod_in = tf.placeholder(tf.float32, [], name='lod_in')
        self.set_lod_op = tf.group(tf.assign(G.lod, self.lod_in), tf.assign(D.lod, self.lod_in))
        optimizer = lambda name: tf.train.AdamOptimizer(self.lr_in, beta1=0.0, beta2=0.99, epsilon=1e-8, name=name)
        self.G_opt, self.D_opt = optimizer('G_Adam'), optimizer('D_Adam')
        resolution_log2 = schedule.resolution_log2
        self.levels = {}
        for level in range(schedule.initial_log2, resolution_log2 + 1):
            with tf.name_scope('level%d' % level):
                self.levels[level] = self._build_level(level, resolution_log2, data_dir, schedule, devices, labels,
                                                       mirror, seed, G_smoothing, loss_kwargs or {})
        self.reset_optimizers_op = tf.variables_initializer(self.G_opt.variables() + self.D_opt.variables())

    def _build_level(self, level, resolution_log2, data_dir, schedule, devices, labels, mirror, seed,
                     G_smoothing, loss_kwargs):
        G, D = self.G, self.D
        resolution = 2 ** level
        minibatch = schedule.minibatch_for(resolution)
        latent_size, label_size = G.input_shapes[0][1], G.input_shapes[1][1]
        with tf.device('/cpu:0'):
            reals, real_labels = dataset.training_batches(data_dir, level, minibatch, labels, mirror, seed)
            reals = _fade_reals(reals, D.lod, resolution_log2 - level)
            latents_D = tf.random_normal([minibatch, latent_size])
            latents_G = tf.random_normal([minibatch, latent_size])
            mixing = tf.random_uniform([minibatch, 1, 1, 1], 0.0, 1.0)
            if label_size:  # the generator is asked for classes in the proportions of the dataset
                rows = tf.random_uniform([minibatch], 0, len(labels), dtype=tf.int32)
                fake_labels = tf.gather(tf.constant(np.asarray(labels, np.float32)), rows)
            else:
                fake_labels = tf.zeros([minibatch, 0])
        # Device t takes samples t, t+T, t+2T, ...: with equal group sizes the discriminator's minibatch-stddev
        # groups (sample n in group n mod N/G) are then the same as on one device.
        count = len(devices)
        share = lambda x, t: x[t::count]
        D_losses, G_losses, D_terms = [], [], []
        for t, device in enumerate(devices):
            with tf.device(device), tf.name_scope('device%d' % t):
                D_loss, terms = losses.D_wgangp(G, D, share(latents_D, t), share(reals, t), share(real_labels, t),
                                                share(mixing, t), graph_resolution=resolution, **loss_kwargs)
                G_loss = losses.G_wgan(G, D, share(latents_G, t), share(fake_labels, t),
                                       graph_resolution=resolution)
                D_losses.append(tf.reduce_mean(D_loss))
                G_losses.append(tf.reduce_mean(G_loss))
                D_terms.append(tf.reduce_mean(terms['gradient_penalty']))
        D_grads = _average_gradients(D_losses, list(D.trainables.values()))
        G_grads = _average_gradients(G_losses, list(G.trainables.values()))
        D_step = _apply_if_finite(self.D_opt, D_grads)
        G_step = _apply_if_finite(self.G_opt, G_grads)
        with tf.control_dependencies([G_step]):
            G_step_and_average = self.Gs.setup_as_moving_average_of(G, beta=G_smoothing)
        mean = lambda values: tf.add_n(values) / float(len(values))
        return {'D_step': D_step, 'G_step': G_step_and_average, 'minibatch': minibatch,
                'D_loss': mean(D_losses), 'G_loss': mean(G_losses), 'gradient_penalty': mean(D_terms)}

    def set_lod(self, lod):
        tfutil.run(self.set_lod_op, {self.lod_in: lod})

    def reset_optimizers(self):
        tfutil.run(self.reset_optimizers_op)

    def step(self, level, lr):
        """One discriminator step then one generator step (with the Gs update); returns the three losses."""
        ops = self.levels[level]
        D_loss, penalty = tfutil.run([ops['D_step'], ops['D_loss'], ops['gradient_penalty']],
                                     {self.lr_in: lr})[1:]
        G_loss = tfutil.run([ops['G_step'], ops['G_loss']], {self.lr_in: lr})[1]
        return G_loss, D_loss, penalty


# ----------------------------------------------------------------------------------------------------------------
# Run directories and snapshots


def new_run_dir(outdir, description):
    """outdir/NNNNN-description, numbered one past the highest existing run; never an existing directory."""
    outputs.prepare_outdir(outdir)
    while True:
        numbers = [int(name[:5]) for name in os.listdir(outdir) if re.match(r'^\d{5}-', name)]
        path = os.path.join(outdir, '%05d-%s' % (max(numbers + [-1]) + 1, description))
        try:
            os.makedirs(path)
            return path
        except OSError:
            if not os.path.exists(path):
                raise


def find_latest_snapshot(outdir):
    """The complete snapshot with the most kimg in the newest run under outdir that has one."""
    if not os.path.isdir(outdir):
        raise UserError('%s: no such results directory to resume from' % outdir)
    for run in sorted((d for d in os.listdir(outdir) if re.match(r'^\d{5}-', d)), reverse=True):
        snapshots = [(int(m.group(1)), name) for name in os.listdir(os.path.join(outdir, run))
                     for m in [SNAPSHOT_NAME.match(name)] if m]
        if snapshots:
            return os.path.join(outdir, run, max(snapshots)[1])
    raise UserError('%s: no network-snapshot-*.pkl in any run to resume from' % outdir)


def kimg_of_snapshot(path):
    match = SNAPSHOT_NAME.match(os.path.basename(path))
    if not match:
        raise UserError('%s: cannot tell how far training got from this file name; pass --resume-kimg' % path)
    return float(match.group(1))


# ----------------------------------------------------------------------------------------------------------------
# The loop


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


def train(data_dir, outdir='results',
          total_kimg=15000,             # length of training, thousands of real images shown to D
          lod_training_kimg=600,        # kimg at each resolution before fading in the next
          lod_transition_kimg=600,      # kimg of each fade-in
          minibatch=16, minibatch_dict=None,
          lr=0.001,
          G_kwargs=None, D_kwargs=None, loss_kwargs=None,
          G_smoothing=0.999,            # EMA rate of Gs per minibatch
          mirror=False,                 # random horizontal flips of the reals
          seed=1000,
          tick_kimg=None,               # kimg between log lines and image grids (default: by resolution)
          snapshot_ticks=10,            # ticks between network snapshots
          grid_size=(8, 4),
          resume=None, resume_kimg=None,
          num_devices=1,
          metrics=(),                   # 'swd': sliced Wasserstein distance to the reals at every snapshot
          metric_images=None,           # images per set for the metrics (default: all reals, at most 1000)
          log_file=sys.stdout):
    """Train G and D on the dataset in `data_dir`; returns the run directory (see SPEC section 5 for what it holds)."""
    files = dataset.list_tfrecords(data_dir)
    resolution_log2 = max(files)
    resolution = 2 ** resolution_log2
    first = dataset.read_images(files[resolution_log2], 1)[0]
    labels = dataset.read_labels(data_dir)
    num_channels, label_size = first.shape[0], 0 if labels is None else labels.shape[1]
    missing = [2 ** k for k in range(2, resolution_log2) if k not in files]
    if missing:
        raise UserError('%s: lacks the lower resolutions %s that progressive training reads' % (data_dir, missing))

    if 'swd' in metrics and resolution < 16:
        raise UserError('%s: --metrics swd needs images of at least 16x16, these are %dx%d'
                            % (data_dir, resolution, resolution))
    if resume == 'latest':
        resume = find_latest_snapshot(outdir)
    if resume and not os.path.isfile(resume):
        raise UserError('%s: no such snapshot to resume from' % resume)
    if resume and resume_kimg is None:
        resume_kimg = kimg_of_snapshot(resume)
    resume_kimg = resume_kimg or 0.0

    np.random.seed(seed)
    tfutil.init_tf(seed=seed, cpu_devices=num_devices)
    devices = available_devices(num_devices)
    if resume:
        G, D, Gs = legacy.load_network_pkl(resume)
        expected = {'resolution': resolution, 'num_channels': num_channels, 'label_size': label_size}
        for key, value in expected.items():
            if G.static_kwargs.get(key, {'num_channels': 1, 'label_size': 0}.get(key)) != value:
                raise UserError('%s: networks have %s=%s but %s has %s'
                                    % (resume, key, G.static_kwargs.get(key), data_dir, value))
    else:
        common = dict(num_channels=num_channels, resolution=resolution, label_size=label_size)
        G = tfutil.Network('G', 'G_paper', **dict(common, **(G_kwargs or {})))
        D = tfutil.Network('D', 'D_paper', **dict(common, **(D_kwargs or {})))
        G.init_vars()
        D.init_vars()
        Gs = G.clone('Gs')

    schedule = Schedule(resolution, lod_training_kimg, lod_transition_kimg, minibatch=minibatch,
                        minibatch_dict=minibatch_dict, lr=lr, tick_kimg=tick_kimg, num_devices=num_devices)
    graphs = TrainingGraphs(G, D, Gs, data_dir, schedule, devices, labels=labels, mirror=mirror, seed=seed,
                            G_smoothing=G_smoothing, loss_kwargs=loss_kwargs)
    tfutil.initialize_uninitialized_vars()

    run_dir = new_run_dir(outdir, '%s-%dx%d' % (dataset.dataset_name(data_dir), resolution, resolution))
    log = _Log(os.path.join(run_dir, 'log.txt'), log_file)
    config = dict(data_dir=os.path.abspath(data_dir), total_kimg=total_kimg, lod_training_kimg=lod_training_kimg,
                  lod_transition_kimg=lod_transition_kimg, minibatch=minibatch, minibatch_dict=minibatch_dict,
                  lr=lr, G_kwargs=G.static_kwargs, D_kwargs=D.static_kwargs, loss_kwargs=loss_kwargs or {},
                  G_smoothing=G_smoothing, mirror=mirror, seed=seed, tick_kimg=tick_kimg,
                  snapshot_ticks=snapshot_ticks, resume=resume and os.path.abspath(resume), resume_kimg=resume_kimg,
                  num_devices=num_devices, devices=devices, G_params=G.num_params(), D_params=D.num_params(),
                  metrics=list(metrics), metric_images=metric_images)
    outputs.write_file_atomic(os.path.join(run_dir, 'config.json'),
                              (json.dumps(config, indent=2, sort_keys=True) + '\n').encode())
    log('run %s: %s, %d images of %dx%d, G %d and D %d parameters, on %s'
        % (run_dir, data_dir, dataset.count_records(files[resolution_log2]), resolution, resolution,
           G.num_params(), D.num_params(), ', '.join(devices)))

    grid_count = grid_size[0] * grid_size[1]
    grid_reals = dataset.read_images(files[resolution_log2], min(grid_count, dataset.count_records(
        files[resolution_log2])))
    _save_grid(os.path.join(run_dir, 'reals.png'), grid_reals.transpose(0, 2, 3, 1), grid_size[0])
    grid_latents = np.random.RandomState(seed).randn(grid_count, G.input_shapes[0][1]).astype(np.float32)
    grid_labels = (labels[np.arange(grid_count) % len(labels)] if label_size
                   else np.zeros((grid_count, 0), np.float32))
    summaries = tf.summary.FileWriter(run_dir)

    def save_fakes(kimg):
        fakes = outputs.float_to_uint8(Gs.run(grid_latents, grid_labels, minibatch_size=16))
        _save_grid(os.path.join(run_dir, 'fakes%06d.png' % int(kimg)), fakes, grid_size[0])

    save_fakes(resume_kimg)
    if metrics:
        metric_reals = dataset.read_images(files[resolution_log2])[:metric_images or 1000]
        metric_latents = np.random.RandomState(seed + 1).randn(len(metric_reals), G.input_shapes[0][1])
        metric_labels = (labels[np.arange(len(metric_reals)) % len(labels)] if label_size
                         else np.zeros((len(metric_reals), 0), np.float32))

    def log_metrics(kimg):
        fakes = outputs.float_to_uint8(Gs.run(metric_latents.astype(np.float32), metric_labels, minibatch_size=64))
        per_level, average = quality_metrics.sliced_wasserstein_distance(metric_reals, fakes.transpose(0, 3, 1, 2))
        sizes = quality_metrics.swd_resolutions(resolution)
        log('swd x1e3 at kimg %.1f: %s, average %.3f' % (
            kimg, ', '.join('%dx%d %.3f' % (r, r, v) for r, v in zip(sizes, per_level)), average))
        summaries.add_summary(tf.Summary(value=[tf.Summary.Value(tag='Metrics/swd_%dx%d' % (r, r), simple_value=v)
                                                for r, v in zip(sizes, per_level)]
                                         + [tf.Summary.Value(tag='Metrics/swd_average', simple_value=average)]),
                              int(kimg))
        summaries.flush()

    tf.get_default_graph().finalize()  # any op created from here on would be a bug (per-step graph growth)
    cur_nimg = int(resume_kimg * 1000)
    total_nimg = int(total_kimg * 1000)
    tick_start_nimg, tick_start_time, ticks = cur_nimg, time.time(), 0
    last_lod, stats, nonfinite = None, [], 0
    last_snapshot = resume
    with cli.progress(total_kimg - resume_kimg, 'training', unit='kimg', initial=0) as bar:
        while cur_nimg < total_nimg:
            phase = schedule.at(cur_nimg / 1000.0)
            if phase.lod != last_lod:
                graphs.set_lod(phase.lod)
                if last_lod is None or (np.floor(phase.lod) != np.floor(last_lod)
                                        or np.ceil(phase.lod) != np.ceil(last_lod)):
                    graphs.reset_optimizers()  # entering or leaving a fade-in: fresh Adam moments
                last_lod = phase.lod
            level = int(np.log2(phase.resolution))
            for _ in range(MINIBATCH_REPEATS):
                values = graphs.step(level, phase.lr)
                cur_nimg += phase.minibatch
                bar.update(phase.minibatch / 1000.0)
                if np.all(np.isfinite(values)):
                    stats.append(values)
                    nonfinite = 0
                else:
                    nonfinite += 1
                    if nonfinite >= MAX_NONFINITE_MINIBATCHES:
                        raise UserError('training diverged: losses were not finite for %d minibatches at '
                                            'kimg %.1f; the last good snapshot is %s'
                                            % (nonfinite, cur_nimg / 1000.0, last_snapshot or 'none'))
            done = cur_nimg >= total_nimg
            if cur_nimg < tick_start_nimg + phase.tick_kimg * 1000 and not done:
                continue
            ticks += 1
            kimg = cur_nimg / 1000.0
            seconds = time.time() - tick_start_time
            G_loss, D_loss, penalty = np.mean(stats, axis=0) if stats else (np.nan,) * 3
            sec_per_kimg = seconds / max((cur_nimg - tick_start_nimg) / 1000.0, 1e-9)
            log('tick %-4d kimg %-8.1f lod %-6.3f resolution %-4d minibatch %-3d sec/kimg %-8.2f '
                'G_loss %-9.4f D_loss %-9.4f gradient_penalty %.4f'
                % (ticks, kimg, phase.lod, phase.resolution, phase.minibatch, sec_per_kimg, G_loss, D_loss, penalty))
            values = [('Progress/lod', phase.lod), ('Progress/resolution', phase.resolution),
                      ('Progress/minibatch', phase.minibatch), ('Timing/sec_per_kimg', sec_per_kimg),
                      ('Loss/G', G_loss), ('Loss/D', D_loss), ('Loss/gradient_penalty', penalty)]
            summaries.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))
                                                    for tag, value in values]), int(kimg))
            summaries.flush()
            save_fakes(kimg)
            if ticks % snapshot_ticks == 0 or done:
                last_snapshot = os.path.join(run_dir, 'network-snapshot-%06d.pkl' % int(kimg))
                legacy.save_network_pkl(last_snapshot, (G, D, Gs))
                if 'swd' in metrics:
                    log_metrics(kimg)
            tick_start_nimg, tick_start_time, stats = cur_nimg, time.time(), []
    legacy.save_network_pkl(os.path.join(run_dir, 'network-final.pkl'), (G, D, Gs))
    summaries.close()
    log('done: %s' % os.path.join(run_dir, 'network-final.pkl'))
    return run_dir


def _save_grid(path, images, columns):
    images = images[..., 0] if images.shape[-1] == 1 else images
    outputs.write_file_atomic(path, outputs.png_bytes(outputs.image_grid(images, columns=columns)))


class _Log(object):
    """Print a line and append it to the run's log file."""

    def __init__(self, path, stream):
        self.path, self.stream = path, stream

    def __call__(self, line):
        line = '%s %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), line)
        if self.stream is not None:
            cli.progress_write(line, self.stream)
        with open(self.path, 'a') as f:
            f.write(line + '\n')
