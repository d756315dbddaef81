"""Train a progressive-growing WGAN-GP nodule generator on a multi-resolution TFRecord dataset."""

from nodules.util import cli
from nodules.training import settings as training_settings

# What the memory needed per step grows with: named in the refusal when given on the command line.
MEMORY_SETTINGS = ('fmap_base', 'fmap_max', 'latent_size', 'minibatch', 'minibatch_dict')


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Progressive-growing WGAN-GP training (PGGAN). Writes a new numbered run directory under '
                    'OUTDIR with log.txt, config.json, reals.png, fakes*.png grids, network-snapshot-*.pkl and '
                    'network-final.pkl (use the latter with 2-inference.py --model; it is a hard link to the last '
                    'snapshot where the file system allows). With --resume, every setting not given here is taken '
                    'from the config.json of the resumed run, and the network size from the snapshot.')
    cli.add_run_options(parser, "a snapshot (networks, Gs, the schedule position and the run's settings)")
    training_settings.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.resume_kimg is not None and not args.resume:
        parser.error('--resume-kimg needs --resume')
    if args.transfer and args.resume:
        parser.error('--transfer starts a new run from a model; --resume continues a run (a transferred one too)')
    return args


def explicit_settings(args):
    """{setting: value} of the flags given on the command line (plus resume)."""
    given = training_settings.given_settings(args)
    if args.resume is not None:
        given['resume'] = args.resume
    return given


def check_memory(settings, given):
    """Refuse network sizes and minibatches that could not be trained even at 4x4, before TensorFlow starts (the
    training loop checks again at the dataset's resolution before it builds anything)."""
    flags = ' '.join('%s %s' % (training_settings.BY_NAME[name].flag, given[name])
                     for name in MEMORY_SETTINGS if name in given)
    network = dict(training_settings.NETWORK_DEFAULTS, **training_settings.network_kwargs(given)[0])
    training_settings.check_memory(settings, network, [4], flags or 'the default settings')


def main(argv=None, progress=cli.progress, console=cli.progress_write):
    """Train as the command line `argv` says; `progress` and `console` as training_loop.train takes them
    (4-classify.py --gan-train trains its per-fold generators through here, with its own progress bar)."""
    args = parse_args(argv)
    given = explicit_settings(args)
    settings, resume, resume_kimg, origins = training_settings.resolve_settings(given, args.outdir)
    check_memory(settings, given)
    G_kwargs, D_kwargs = training_settings.network_kwargs(given)
    console('loading TensorFlow ...')
    from nodules.training import loop as training_loop  # TensorFlow: only once the arguments are known to be good
    return training_loop.train(settings, args.outdir, resume=resume, resume_kimg=resume_kimg, G_kwargs=G_kwargs,
                               D_kwargs=D_kwargs, origins=origins, progress=progress, console=console)


if __name__ == '__main__':
    cli.run(main)
