"""Generate nodule patches from trained weights (a PGGAN network pickle) and save them as PNGs."""
import cli
from errors import UserError


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Nodule generation pipeline')
    parser.add_argument('--model', default='demo/weight/AIS.pkl', help='the model weight file path')
    parser.add_argument('--number', type=cli.positive_int, default=None,
                        help='set the number of output images')
    parser.add_argument('--outdir', default='demo/output', help='the output path')
    parser.add_argument('--seed', type=cli.nonnegative_int, default=0,
                        help='random seed of the latent vectors: same seed, same images (default: %(default)s)')
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
    parser.add_argument('--label-index', type=cli.nonnegative_int,
                        help='class to generate, for generators trained with labels')
    cli.add_image_output_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import generation
    import legacy
    import outputs
    import tfutil
    outputs.check_outdir(args.outdir)
    tfutil.init_tf()
    Gs = legacy.load_network_pkl(args.model, which=('Gs',))
    latent_size = Gs.input_shapes[0][1]
    count = args.number or 10
    if args.latents:
        latents = generation.load_latents(args.latents, latent_size)
        if args.number is not None and args.number != len(latents):
            raise UserError('%s: holds %d latent vectors but --number is %d'
                                % (args.latents, len(latents), args.number))
        count = len(latents)
    if args.interpolate:
        if not args.latents:
            latents = generation.random_latents(2 * count, latent_size, args.seed)
        elif count % 2:
            raise UserError('%s: --interpolate needs pairs of latent vectors, got %d' % (args.latents, count))
        latents = generation.interpolation_latents(latents, args.interpolate)
    elif not args.latents:
        latents = generation.random_latents(count, latent_size, args.seed)

    with cli.progress(len(latents), 'generating') as bar:
        images = generation.generate_images(Gs, latents, args.label_index, args.batch_size, args.precision,
                                            progress=bar.update)
    if args.interpolate:
        strips = images.reshape((-1, args.interpolate + 2) + images.shape[1:])
        strips = [outputs.image_grid(strip, columns=len(strip)) for strip in strips]
        paths = outputs.write_pngs(strips, args.outdir, 'interpolation_%d.png', args.grid, args.overwrite,
                                   grid_columns=1)  # strips stacked one under the other
    else:
        paths = outputs.write_pngs(images, args.outdir, 'inference_img_%d.png', args.grid, args.overwrite)
    print('wrote %d file(s) from %s to %s%s' % (len(paths), args.model, args.outdir,
                                               ' (mosaic: %s)' % paths[-1] if args.grid else ''))


if __name__ == '__main__':
    cli.run(main)
