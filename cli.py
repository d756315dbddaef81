"""What the command-line scripts share: errors a user can fix, how they are reported, argument types, progress bars."""
import argparse
import sys

from tqdm import tqdm

from errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error report (the usage is one `-h` away)."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see -h)\n' % (self.prog, message))


def add_image_output_options(parser):
    """--grid and --overwrite, as every script that writes a set of PNGs offers them."""
    parser.add_argument('--grid', metavar='FILE.png',
                        help='also save all images as one mosaic (a name inside OUTDIR, or a path)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files that differ (default: refuse and write nothing)')


def run(main, argv=None):
    """Call `main(argv)` and turn a UserError or Ctrl-C into one line on stderr and a non-zero exit status."""
    try:
        main(argv)
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


def positive_int(text):
    """argparse type for counts: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a whole number' % text)
    if value <= 0:
        raise argparse.ArgumentTypeError('must be at least 1, got %d' % value)
    return value


def nonnegative_int(text):
    """argparse type for seeds and offsets: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a whole number' % text)
    if value < 0:
        raise argparse.ArgumentTypeError('must be 0 or more, got %d' % value)
    return value


def progress(total, desc, unit='img', **kwargs):
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal (logs, CI, tests)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True, **kwargs)


def progress_write(line, stream=sys.stdout):
    """Print a line without tearing an active progress bar."""
    tqdm.write(line, file=stream)
    stream.flush()
