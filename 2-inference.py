"""Generate nodule patches from trained weights (a PGGAN network pickle) and save them as PNGs."""
from nodules.util import cli
from nodules.util.errors import UserError
from nodules import generation
from nodules.util import outputs

DEFAULT_NUMBER = 10


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Nodule generation pipeline')
    parser.add_argument('--model', default='demo/weight/AIS.pkl', help='the model weight file path')
    parser.add_argument('--number', type=cli.positive_int, default=None,
                        help='set the number of output images (default: %d, or as many as --latents holds; '
                             'at most %d images in all)' % (DEFAULT_NUMBER, generation.MAX_IMAGES))
    parser.add_argument('--outdir', default='demo/output', help='the output path')
    parser.add_argument('--seed', type=cli.seed, default=0,
                        help='random seed of the latent vectors, 0 to 2**32-1: same seed, same images '
                             '(default: %(default)s)')
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
    return parser.parse_args(argv)


def planned_files(args, latents):
    """How many PNG files the command writes (single images or interpolation strips), checked against --number."""
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
    pattern = 'interpolation_%d.png' if args.interpolate else 'inference_img_%d.png'
    outputs.png_set_paths(args.outdir, pattern, files, args.grid)

    Gs = generation.load_generator(args.model)
    latent_size = Gs.input_shapes[0][1]
    label_index = generation.label_index_for(Gs, args.label, args.label_index, source=args.model)
    if latents is None:
        latents = generation.random_latents(files * (2 if args.interpolate else 1), latent_size, args.seed)
    else:
        generation.check_latent_size(latents, latent_size, args.latents)
    if args.interpolate:
        latents = generation.interpolation_latents(latents, args.interpolate)

    with cli.progress(len(latents), 'generating') as bar:
        images = generation.generate_images(Gs, latents, label_index, args.batch_size, args.precision,
                                            progress=bar.update)
    if args.interpolate:
        strips = images.reshape((-1, strip_length) + images.shape[1:])
        images = [outputs.image_grid(strip, columns=strip_length) for strip in strips]
    paths = outputs.write_pngs(images, args.outdir, pattern, args.grid, args.overwrite,
                               grid_columns=1 if args.interpolate else None)  # strips stack one under another
    print('wrote %d file(s) from %s to %s%s' % (len(paths), args.model, args.outdir,
                                               ' (mosaic: %s)' % paths[-1] if args.grid else ''))


if __name__ == '__main__':
    cli.run(main)
