"""What the command-line scripts share: errors a user can fix, how they are reported, argument types, progress bars."""
import argparse
import os
import re
import signal
import sys
import threading

from tqdm import tqdm

from nodules.util import values
from nodules.util.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error report (the usage is one `-h` away) and exit status 1, like any bad input."""

    def error(self, message):
        self.exit(1, '%s: error: %s (see -h)\n' % (self.prog, message))


def add_label_options(parser, label_note=''):
    """--label NAME or --label-index I: the class a conditional generator is asked for (one or the other)."""
    label = parser.add_mutually_exclusive_group()
    label.add_argument('--label', metavar='NAME',
                       help='class to generate from a conditional generator, by name (e.g. MIA): the class names '
                            'are stored with networks trained by 3-train.py --conditional' + label_note)
    label.add_argument('--label-index', type=nonnegative_int, metavar='I',
                       help='class to generate from a conditional generator, by label column 0..K-1 (also in '
                            'pickles that store no class names)')


def add_image_output_options(parser):
    """--grid and --overwrite, as every script that writes a set of PNGs offers them."""
    parser.add_argument('--grid', metavar='FILE.png',
                        help='also save all images as one mosaic (a name inside OUTDIR, or a path)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files that differ (default: refuse and write nothing)')


def add_run_options(parser, resume_from):
    """--outdir and --resume of a training command, which writes a new numbered run directory under OUTDIR and
    may continue from a snapshot: `resume_from` says which snapshot and what it carries on."""
    parser.add_argument('--outdir', default='results', help='root of the run directories (default: %(default)s)')
    parser.add_argument('--resume', metavar='PKL',
                        help='continue from %s; "latest" picks the newest snapshot under OUTDIR' % resume_from)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (temporary files removed, nothing half-done)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run(main, argv=None):
    """Call `main(argv)` as a command-line script does, and end the way a user can act on.

    A UserError becomes one line on stderr and exit status 1.  Ctrl-C and SIGTERM unwind the program (so every
    `finally` and staging clean-up runs) and exit with 130 and 143.  A reader that stops reading our output
    (`dataset_tool.py info DIR | head`) ends the program quietly, like other command-line tools (status 141).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main(argv)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, while it can still be handled
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print('error: not enough memory for this command (ask for fewer or smaller images)', file=sys.stderr)
        sys.exit(1)
    except Terminated:
        print('terminated', file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


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


def seed(text):
    """argparse type for random seeds: a whole number from 0 to 2**32 - 1 (what NumPy's RandomState takes)."""
    value = nonnegative_int(text)
    if not values.is_seed(value):
        raise argparse.ArgumentTypeError('must be below 2**32 = %d, got %d' % (values.SEED_LIMIT, value))
    return value


_SEED_ITEM = re.compile(r'\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?\Z')  # 7 or 0-99


def seed_list(max_count):
    """argparse type factory for lists of seeds such as '0-99,120': single seeds and ranges A-B (both ends
    included), comma-separated, in the order given; at most `max_count` seeds, none twice, each a seed()."""
    def parse(text):
        bounds = []
        for item in text.split(','):
            match = _SEED_ITEM.match(item)
            if not match:
                raise argparse.ArgumentTypeError('%r: %r is not a seed N or a range A-B of seeds'
                                                 % (text, item.strip()))
            first = _seed_in(text, match.group(1))
            last = _seed_in(text, match.group(2)) if match.group(2) else first
            if last < first:
                raise argparse.ArgumentTypeError('%r: the range %d-%d ends before it starts' % (text, first, last))
            bounds.append((first, last))
        count = sum(last - first + 1 for first, last in bounds)  # counted before any list is made
        if count > max_count:
            raise argparse.ArgumentTypeError('%r lists %d seeds; one command generates at most %d images'
                                             % (text, count, max_count))
        seeds = [value for first, last in bounds for value in range(first, last + 1)]
        seen = set()
        for value in seeds:
            if value in seen:  # its image file would be written twice
                raise argparse.ArgumentTypeError('%r lists seed %d twice' % (text, value))
            seen.add(value)
        return seeds
    return parse


def _seed_in(text, number):
    try:
        return seed(number)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError('%r: seed %s %s' % (text, number, error))


def power_of_two(minimum, maximum):
    """argparse type factory for image sizes: a power of two from `minimum` to `maximum`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a whole number' % text)
        if not values.is_power_of_two(value, minimum, maximum):
            raise argparse.ArgumentTypeError('must be a power of two from %d to %d, got %d'
                                             % (minimum, maximum, value))
        return value
    return parse


def progress(total, desc, unit='img', **kwargs):
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal (logs, CI, tests): the progress factory
    the scripts pass to library functions (see nodules/util/progress.py)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True, **kwargs)


def progress_write(line, stream=None):
    """Print a line (on stdout unless `stream` says otherwise) without tearing an active progress bar."""
    stream = sys.stdout if stream is None else stream  # the current one: tests and callers may redirect it
    tqdm.write(line, file=stream)
    stream.flush()
