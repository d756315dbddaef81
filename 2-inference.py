"""Generate nodule patches from trained weights (a PGGAN network pickle) and save them as PNGs."""
from nodules.util import cli
from nodules.util.errors import UserError
from nodules import generation
from nodules.util import outputs

DEFAULT_NUMBER = 10
DEFAULT_SEED = 0
SEEDS_PATTERN = 'seed%04d.png'  # --seeds: the file names say the seed, as StyleGAN's generate.py users expect


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Nodule generation pipeline')
    parser.add_argument('--model', default='demo/weight/AIS.pkl',
                        help='the model weight file path (default: %(default)s)')
    parser.add_argument('--number', type=cli.positive_int, default=None,
                        help='set the number of output images (default: %d, or as many as --latents holds; '
                             'at most %d images in all)' % (DEFAULT_NUMBER, generation.MAX_IMAGES))
    parser.add_argument('--outdir', default='demo/output', help='the output path (default: %(default)s)')
    parser.add_argument('--seed', type=cli.seed, default=None,
                        help='random seed of the latent vectors, 0 to 2**32-1: same seed, same images '
                             '(default: %d)' % DEFAULT_SEED)
    parser.add_argument('--seeds', type=cli.seed_list(generation.MAX_IMAGES), metavar='LIST',
                        help='one image per seed, e.g. 0-99,120 (ranges include both ends), named seed0120.png; '
                             'each is the image of its seed alone, whatever else the list holds (instead of '
                             '--seed, --number, --latents and --interpolate)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=32,
                        help='images generated per step (default: %(default)s)')
    parser.add_argument('--latents', metavar='FILE.npy',
                        help='generate from these latent vectors [N, latent_size] instead of random ones')
    parser.add_argument('--interpolate', type=cli.positive_int, metavar='K',
                        help='for NUMBER pairs of latents, write strips of the pair with K images interpolated '
                             'between them (interpolation_{i}.png) instead of single images')
    parser.add_argument('--precision', choices=['float32', 'bfloat16', 'float16'], default='float32',
                        help='compute precision; reduced ones are faster on hardware that has them '
                             '(default: %(default)s)')
    cli.add_label_options(parser, '; with --interpolate, every image of a strip is of this class')
    cli.add_image_output_options(parser)
    args = parser.parse_args(argv)
    if args.seeds is not None:
        for option in ('seed', 'number', 'latents', 'interpolate'):
            if getattr(args, option) is not None:
                parser.error('argument --seeds: not allowed with argument --%s' % option)
    if args.seed is None:
        args.seed = DEFAULT_SEED
    return args


def planned_files(args, latents):
    """How many PNG files the command writes (single images or interpolation strips), checked against --number."""
    if args.seeds is not None:
        return len(args.seeds)
    if latents is None:
        return args.number or DEFAULT_NUMBER
    if args.number is not None and args.number != len(latents):
        raise UserError('%s: holds %d latent vectors but --number is %d' % (args.latents, len(latents), args.number))
    if args.interpolate:
        if len(latents) % 2:
            raise UserError('%s: --interpolate needs pairs of latent vectors, got %d' % (args.latents, len(latents)))
        return len(latents) // 2
    return len(latents)


def main(argv=None):
    args = parse_args(argv)
    # Everything that does not need the generator is checked before TensorFlow starts or anything is allocated.
    strip_length = args.interpolate + 2 if args.interpolate else 1  # images per file
    latents = generation.read_latents(args.latents) if args.latents else None
    files = planned_files(args, latents)
    generation.check_image_count(files * strip_length, 'images (%d strips of %d)' % (files, strip_length)
                                 if args.interpolate else 'images')
    pattern = SEEDS_PATTERN if args.seeds else 'interpolation_%d.png' if args.interpolate else 'inference_img_%d.png'
    outputs.png_set_paths(args.outdir, pattern, files, args.grid, numbers=args.seeds)

    Gs = generation.load_generator(args.model)
    latent_size = Gs.input_shapes[0][1]
    label_index = generation.label_index_for(Gs, args.label, args.label_index, source=args.model)
    if args.seeds:
        latents = generation.seed_latents(args.seeds, latent_size)
    elif latents is None:
        latents = generation.random_latents(files * (2 if args.interpolate else 1), latent_size, args.seed)
    else:
        generation.check_latent_size(latents, latent_size, args.latents)
    if args.interpolate:
        latents = generation.interpolation_latents(latents, args.interpolate)

    # A seed's image must not depend on the other seeds asked for (re-running a list that overlaps leaves it alone).
    generate = generation.generate_images_each_alone if args.seeds else generation.generate_images
    with cli.progress(len(latents), 'generating') as bar:
        images = generate(Gs, latents, label_index=label_index, batch_size=args.batch_size,
                          precision=args.precision, progress=bar.update)
    if args.interpolate:
        strips = images.reshape((-1, strip_length) + images.shape[1:])
        images = [outputs.image_grid(strip, columns=strip_length) for strip in strips]
    paths = outputs.write_pngs(images, args.outdir, pattern, args.grid, args.overwrite,
                               grid_columns=1 if args.interpolate else None,  # strips stack one under another
                               numbers=args.seeds)
    print('wrote %d file(s) from %s to %s%s' % (len(paths), args.model, args.outdir,
                                               ' (mosaic: %s)' % paths[-1] if args.grid else ''))


if __name__ == '__main__':
    cli.run(main)
