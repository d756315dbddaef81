"""Save the first images of a TFRecords dataset file as PNGs, to see what a dataset holds."""
from nodules.util import cli
from nodules.generation import MAX_IMAGES


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Dataset demo pipeline: transform picture from tfrecords file to png format')
    parser.add_argument('--tfrecords', default='processData/AIS/AIS-r06.tfrecords',
                        help='the tfrecords file path (default: %(default)s)')
    parser.add_argument('--number', type=cli.positive_int, default=10,
                        help='set the number of dataset images to show (default: %(default)s)')
    parser.add_argument('--outdir', default='demo/output', help='the output path (default: %(default)s)')
    parser.add_argument('--rgb', action='store_true',
                        help='save 3-channel records in colour (default: channel 0 as 8-bit grayscale)')
    cli.add_image_output_options(parser)
    args = parser.parse_args(argv)
    if args.number > MAX_IMAGES:
        parser.error('argument --number: one command writes at most %d images, got %d' % (MAX_IMAGES, args.number))
    return args


def main(argv=None):
    args = parse_args(argv)
    from nodules.data import dataset  # TensorFlow loads here, after -h and argument errors have had their say
    from nodules.util import outputs
    outputs.check_outdir(args.outdir)
    images = dataset.read_images(args.tfrecords, args.number)
    if args.rgb and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    else:
        images = images[:, 0]
    paths = outputs.write_pngs(images, args.outdir, 'dataset_img_%d.png', grid=args.grid,
                               overwrite=args.overwrite)
    print('wrote %d images from %s to %s' % (len(images), args.tfrecords, args.outdir))
    if args.grid:
        print('mosaic: %s' % paths[-1])


if __name__ == '__main__':
    cli.run(main)
