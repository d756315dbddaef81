"""pix2pix, the original project's second generator: train a model that turns a binary nodule mask into a CT
patch, and generate patches from masks or from a requested nodule diameter."""
import argparse

import numpy as np

from nodules.util import cli
from nodules.util import outputs
from nodules.generation import MAX_IMAGES
from nodules.pix2pix import masks as mask_drawing
from nodules.pix2pix import settings as pix2pix_settings

DEFAULT_BATCH_SIZE = 32     # the original's training minibatch
DEFAULT_NUMBER = 10
BATCH_NOTE = ('The generator runs as in training, as the original does: batch norm uses the statistics of the '
              'minibatch being generated and dropout (its only noise) draws anew, so a patch depends on the other '
              'masks of its minibatch (--batch-size) and on --seed. The same masks, order, --batch-size and --seed '
              'give the same patches; with --seeds each seed\'s patch is made in a minibatch of its own masks and '
              'does not depend on the other seeds.')


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=cli.ArgumentParser)
    commands.required = True
    train = commands.add_parser(
        'train', help='train a pix2pix model',
        description='Train a pix2pix model (U-Net G, PatchGAN D) as the original Keras script does, faithful by '
                    'default; its quirks are settings below (--label-smoothing, --reconstruction). Writes a new '
                    'numbered run directory under OUTDIR with log.txt, config.json, TensorBoard summaries, '
                    'triplets-epochNNNN.png every epoch (6 training pairs left, 6 validation pairs right, each '
                    'mask | real | generated), network-snapshot-epochNNNN.pkl and network-final.pkl (use it with '
                    '5-pix2pix.py generate --model). With --resume, settings not given here come from the resumed '
                    'run\'s config.json.')
    cli.add_run_options(train, 'a network-snapshot-epochNNNN.pkl (its weights, epoch count and run settings; Adam '
                               'restarts)')
    pix2pix_settings.SETTINGS.add_arguments(train)

    generate = commands.add_parser(
        'generate', help='generate patches from masks',
        description='Generate CT patches from binary nodule masks with a pix2pix model: masks from a folder or '
                    'a dataset (--masks), or drawn to a diameter (--diameter-mm). Writes pix2pix_NNNN.png (or '
                    'seedNNNN.png with --seeds), all or none; existing files are never replaced without '
                    '--overwrite. ' + BATCH_NOTE)
    generate.add_argument('--model', required=True, help='a pix2pix pickle (5-pix2pix.py train)')
    generate.add_argument('--outdir', required=True, help='folder to write the patches to')
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument('--masks', metavar='DIR|DATASET',
                        help='masks: a folder of HxH mask PNGs (8-bit grayscale, 0 outside and 255 inside the '
                             'nodule; HxW pairs of the training layout are read for their right half), or a '
                             'dataset with masks')
    source.add_argument('--diameter-mm', type=diameters, metavar='D[,D...]',
                        help='draw centred masks of this equal-area diameter in mm (the patch is 44.8 mm across at '
                             '64 px, 0.7 mm per pixel, as the phantoms; %g to %g mm); several, e.g. 4,6,8,10: '
                             '--number masks of each, mask i of every diameter the same outline scaled, and the '
                             '--grid has one row per diameter' % (mask_drawing.MIN_DIAMETER_MM,
                                                                  mask_drawing.max_diameter_mm()))
    generate.add_argument('--number', type=cli.positive_int,
                          help='with --diameter-mm: how many of each diameter (default: %d)' % DEFAULT_NUMBER)
    generate.add_argument('--shape', choices=mask_drawing.SHAPES,
                          help='with --diameter-mm: outline of the drawn masks (default: round)')
    generate.add_argument('--seed', type=cli.seed, default=None,
                          help='seed of the drawn masks and of the dropout draws: same seed, same patches '
                               '(default: 0)')
    generate.add_argument('--seeds', type=cli.seed_list(MAX_IMAGES), metavar='LIST',
                          help='with --diameter-mm: one patch per seed, e.g. 0-9,12, named seed0012.png; each '
                               'depends on its seed alone (instead of --seed and --number)')
    generate.add_argument('--batch-size', type=cli.positive_int, default=DEFAULT_BATCH_SIZE,
                          help='masks per minibatch (default: %(default)s, the training minibatch of the original)')
    generate.add_argument('--grid', metavar='FILE.png',
                          help='also save a mosaic of mask | generated pairs (a name inside OUTDIR, or a path)')
    generate.add_argument('--overwrite', action='store_true',
                          help='replace existing output files that differ (default: refuse and write nothing)')
    args = parser.parse_args(argv)
    if args.command == 'generate':
        _check_generate_args(generate, args)
    return args


def diameters(text):
    """argparse type: comma-separated diameters in mm, each within what a 64-pixel patch can hold."""
    low, high = mask_drawing.MIN_DIAMETER_MM, mask_drawing.max_diameter_mm()
    values = []
    for item in text.split(','):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a number of millimetres' % item.strip())
        if not low <= value <= high:
            raise argparse.ArgumentTypeError('%g mm does not fit a 64-pixel patch at 0.7 mm per pixel (%g to %g mm)'
                                             % (value, low, high))
        values.append(value)
    return values


def _check_generate_args(parser, args):
    if args.masks is not None:
        for option in ('number', 'shape', 'seeds'):
            if getattr(args, option) is not None:
                parser.error('argument --%s: only with --diameter-mm' % option)
    if args.seeds is not None:
        for option in ('seed', 'number'):
            if getattr(args, option) is not None:
                parser.error('argument --seeds: not allowed with argument --%s' % option)
        if len(args.diameter_mm or []) > 1:
            parser.error('argument --seeds: one --diameter-mm at a time')
    args.seed = 0 if args.seed is None else args.seed
    args.number = args.number or DEFAULT_NUMBER
    args.shape = args.shape or 'round'


def train(args):
    given = pix2pix_settings.SETTINGS.given(args)
    settings, resume, start_epoch, origins = pix2pix_settings.resolve_settings(given, args.resume, args.outdir)
    cli.progress_write('loading TensorFlow ...')
    from nodules.pix2pix import run  # TensorFlow: only once the arguments are known to be good
    run_dir = run.train(settings, args.outdir, resume, start_epoch, origins, cli.progress, cli.progress_write)
    print('trained: %s' % run_dir)


def generate(args):
    from nodules.pix2pix import data, generation  # TensorFlow
    generator = generation.load_generator(args.model)
    if args.masks is not None:
        masks = generator.check_masks(data.read_pairs(args.masks, need_patches=False).masks, args.masks)
    elif args.seeds is None:
        masks = np.concatenate([mask_drawing.draw_masks(diameter, args.number, args.shape, args.seed,
                                                        generator.resolution) for diameter in args.diameter_mm])
    pattern = 'seed%04d.png' if args.seeds else 'pix2pix_%04d.png'
    count = len(args.seeds) if args.seeds else len(masks)
    paths, grid_path = outputs.png_set_paths(args.outdir, pattern, count, args.grid, numbers=args.seeds)
    with cli.progress(count, 'generating') as bar:
        if args.seeds:
            def masks_of_seed(seed, number):
                return mask_drawing.draw_masks(args.diameter_mm[0], number, args.shape, seed, generator.resolution)
            patches = generator.generate_per_seed(masks_of_seed, args.seeds, args.batch_size, bar.update)
            masks = np.stack([masks_of_seed(seed, 1)[0] for seed in args.seeds])
        else:
            patches = generator.generate(masks, args.seed, args.batch_size, bar.update)
    with outputs.FileSet(paths + ([grid_path] if grid_path else []), args.overwrite) as files:
        for path, patch in zip(paths, patches):
            files.write_png(path, patch)
        if grid_path:  # mask | generated, one pair per tile
            rows = len(args.diameter_mm) if args.diameter_mm and not args.seeds else None
            files.write(grid_path, outputs.mosaic_png(np.concatenate([masks, patches], axis=2),
                                                      columns=args.number if rows and rows > 1 else None,
                                                      padding=outputs.GRID_PADDING))
    print('wrote %d file(s) from %s to %s%s' % (len(paths) + bool(grid_path), args.model, args.outdir,
                                               ' (mosaic: %s)' % grid_path if grid_path else ''))


def main(argv=None):
    args = parse_args(argv)
    {'train': train, 'generate': generate}[args.command](args)


if __name__ == '__main__':
    cli.run(main)
