"""A pix2pix training run in a numbered run directory, as 5-pix2pix.py train makes it.

OUTDIR/NNNNN-<data name>-pix2pix/ holds log.txt, config.json (every setting as used, the drawn seed and real
label among them), TensorBoard summaries (events.out.tfevents.*: every epoch's mean losses), triplets-epochNNNN.png
(every epoch: 6 training pairs on the left and 6 validation pairs on the right, each as mask | real | generated),
network-snapshot-epochNNNN.pkl every --snapshot-epochs epochs and at the end, and network-final.pkl (the last
snapshot; a hard link where the file system allows).  Every file is written atomically.

A resumed run (a snapshot, or 'latest') starts a new run directory from the snapshot's weights and its run's
settings; epochs continue from the snapshot's.  Adam's moments are not stored in snapshots, so they restart from
zero, as in 3-train.py.
"""
import os

import numpy as np

from nodules.data import dataset
from nodules.gan import legacy
from nodules.pix2pix import data as pix2pix_data
from nodules.pix2pix import settings as pix2pix_settings
from nodules.pix2pix import training
from nodules.training import loop as training_loop
from nodules.util import outputs
from nodules.util import progress as progress_reports
from nodules.util.errors import UserError
from nodules.util.tfcompat import tf

TRIPLET_PAIRS = 6   # pairs of each set shown in the per-epoch picture, as the original


def read_data(settings):
    """(training Pairs, validation Pairs or None) as the settings say; all checked before anything is built."""
    pairs = pix2pix_data.read_pairs(settings['data_dir'])
    if settings['val_data_dir']:
        validation = pix2pix_data.read_pairs(settings['val_data_dir'])
        if validation.masks.shape[1:] != pairs.masks.shape[1:]:
            raise UserError('%s: pairs of %dx%d, but the training pairs of %s are %dx%d' % (
                settings['val_data_dir'], validation.masks.shape[2], validation.masks.shape[1],
                settings['data_dir'], pairs.masks.shape[2], pairs.masks.shape[1]))
        return pairs, validation
    return pix2pix_data.split_validation(pairs, settings['val_fraction'])


class Run(object):
    """log.txt (and the console), config.json, TensorBoard, triplets and snapshots of one run directory."""

    def __init__(self, run_dir, console=None):
        self.run_dir, self.console = run_dir, console
        self.summaries = tf.summary.FileWriter(run_dir)

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def log(self, line):
        training_loop.log_line(self.path('log.txt'), line, self.console)

    def summarize(self, epoch, losses):
        self.summaries.add_summary(tf.Summary(value=[tf.Summary.Value(tag='Loss/%s' % name, simple_value=value)
                                                     for name, value in losses.items()]), epoch)
        self.summaries.flush()

    def close(self):
        self.summaries.close()


def triplet_picture(trainer, train_pairs, val_pairs):
    """uint8 mosaic: rows of (training triplet | validation triplet); each triplet mask | real | generated."""
    left = trainer.triplets(train_pairs.patches[:TRIPLET_PAIRS], train_pairs.masks[:TRIPLET_PAIRS])
    if val_pairs is None:
        return outputs.image_grid(left, columns=1, padding=outputs.GRID_PADDING)
    right = trainer.triplets(val_pairs.patches[:TRIPLET_PAIRS], val_pairs.masks[:TRIPLET_PAIRS])
    rows = max(len(left), len(right))
    blank = np.zeros_like(left[:1])
    left = np.concatenate([left] + [blank] * (rows - len(left)))
    right = np.concatenate([right] + [blank] * (rows - len(right)))
    tiles = np.stack([left, right], axis=1).reshape((2 * rows,) + left.shape[1:])
    return outputs.image_grid(tiles, columns=2, padding=4 * outputs.GRID_PADDING)


def train(settings, outdir, resume=None, start_epoch=0, origins=None, progress=progress_reports.quiet,
          console=None):
    """Train as `settings` (nodules/pix2pix/settings.py, resolved) say in a new run directory under `outdir`,
    from `resume` (a snapshot, `start_epoch` epochs trained) or from scratch.  Returns the run directory."""
    console = console or (lambda line: None)
    console('reading %s ...' % settings['data_dir'])
    train_pairs, val_pairs = read_data(settings)
    resolution = train_pairs.masks.shape[1]
    states = legacy.read_network_states(resume, 'pix2pix') if resume else None
    trainer_settings = dict((name, settings[name]) for name in pix2pix_settings.TRAINER_DEFAULTS)
    console('building the networks ...')
    trainer = training.Trainer(trainer_settings, resolution=resolution)
    try:
        if states is not None:
            _check_resumed_size(states, trainer, resume)
            trainer.set_network_states(states)
            trainer.epoch = start_epoch
        return _train(trainer, settings, outdir, train_pairs, val_pairs, resume, origins or {}, progress, console)
    finally:
        trainer.close()


def _check_resumed_size(states, trainer, resume):
    for state, kwargs in zip(states, (trainer.G_kwargs, trainer.D_kwargs)):
        for name in ('ngf', 'ndf', 'resolution'):
            stored = state['static_kwargs'].get(name)
            if name in kwargs and stored is not None and stored != kwargs[name]:
                raise UserError('%s: network %s has %s %s, but this run asks for %s (leave it out to continue '
                                'the snapshot)' % (resume, state['name'], name, stored, kwargs[name]))


def _train(trainer, settings, outdir, train_pairs, val_pairs, resume, origins, progress, console):
    name = dataset.dataset_name(settings['data_dir'].rstrip('/\\') or settings['data_dir'])
    run = Run(training_loop.new_run_dir(outdir, '%s-pix2pix' % name), console)
    config = dict(settings, **dict((k, trainer.settings[k]) for k in ('seed', 'real_label')))
    details = dict((k, v) for k, v in trainer.config.items() if k not in settings)
    try:
        outputs.write_file_atomic(pix2pix_settings.config_path(run.run_dir), pix2pix_settings.SETTINGS.config_bytes(
            config, resume=resume and os.path.abspath(resume), start_epoch=trainer.epoch,
            training_pairs=len(train_pairs), validation_pairs=len(val_pairs) if val_pairs else 0, **details))
        run.log('run %s: %d training pairs from %s, %s, %dx%d; G %d and D %d parameters' % (
            run.run_dir, len(train_pairs), settings['data_dir'],
            '%d validation pairs from %s' % (len(val_pairs), val_pairs.source) if val_pairs else 'no validation',
            trainer.resolution, trainer.resolution, details['G_params'], details['D_params']))
        if resume:
            run.log('resuming %s after epoch %d' % (resume, trainer.epoch))
        changed = ', '.join('%s=%s (%s)' % (k, settings[k], origins[k]) for k in sorted(origins))
        run.log('settings: %s' % ', '.join('%s=%s' % (k, config[k]) for k in sorted(config)))
        if changed:
            run.log('not at their defaults: %s' % changed)
        if settings['label_smoothing'] == 'once':
            run.log('real label of this run (drawn once, as the original does): %.6f' % config['real_label'])
        last = [resume]

        def on_epoch(epoch, losses):
            run.summarize(epoch, losses)
            run.log('epoch %-5d %s' % (epoch, ' '.join('%s %.5g' % item for item in losses.items())))
            outputs.write_file_atomic(run.path(pix2pix_settings.triplets_name(epoch)),
                                      outputs.png_bytes(triplet_picture(trainer, train_pairs, val_pairs)))
            if epoch % settings['snapshot_epochs'] == 0 or epoch == settings['epochs']:
                path = run.path(pix2pix_settings.snapshot_name(epoch))
                legacy.save_network_states(path, trainer.network_states())
                last[0] = path

        try:
            trainer.train(train_pairs.patches, train_pairs.masks, settings['epochs'], on_epoch, progress)
        except UserError as error:
            run.log('error: %s' % error)
            raise UserError('%s; the last good snapshot is %s' % (error, last[0] or 'none'))
        final = training_loop.save_final(run.run_dir, last[0])
        run.log('done: %s' % final)
    finally:
        run.close()
    return run.run_dir
