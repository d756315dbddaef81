"""How fast nodules/data/phantoms.py draws 64x64 patches, as a ratio to the previous (single-view) implementation measured in
the same run.

The previous implementation is read from git history (`git show BASELINE:phantoms.py`, default the commit that
shipped it) into a temporary module; without git history only the absolute numbers are printed.  Old and new
are timed alternately and medians are reported, because these machines are shared and noisy (the load average
is printed too).  Times are the process's CPU time (NumPy's element-wise maths runs on one core), so
patches/s is per core and other processes on the machine disturb it less than they would wall-clock time.

    python benchmarks/bench_phantoms.py [--patches 640] [--repeats 5] [--views 10]
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nodules.data import phantoms  # noqa: E402

BASELINE = 'dc577c8'   # the commit whose phantoms.py drew one unrelated patch per nodule


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark phantom drawing against the previous implementation.')
    parser.add_argument('--patches', type=int, default=640, help='patches per timed run (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs of each (default: %(default)s)')
    parser.add_argument('--views', type=int, default=10, help='views per nodule for the new drawing (default: '
                                                              '%(default)s; 1 is also measured)')
    parser.add_argument('--resolution', type=int, default=64, help='patch size (default: %(default)s)')
    parser.add_argument('--baseline', default=BASELINE, help='git revision of the old nodules/data/phantoms.py '
                                                             '(default: %(default)s)')
    return parser.parse_args(argv)


def load_baseline(revision):
    """The old nodules/data/phantoms.py as a module, or None (with the reason) if git cannot provide it."""
    try:
        source = subprocess.run(['git', 'show', '%s:phantoms.py' % revision], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return None, str(error)
    folder = tempfile.mkdtemp(prefix='bench_phantoms_')
    path = os.path.join(folder, 'phantoms_baseline.py')
    with open(path, 'wb') as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location('phantoms_baseline', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, None


def main(argv=None):
    args = parse_args(argv)
    baseline, reason = load_baseline(args.baseline)
    per_subtype = max(1, args.patches // len(phantoms.SUBTYPES))
    runs = {}

    def new(views):
        def draw(seed):
            for subtype in phantoms.SUBTYPES:
                phantoms.draw_dataset(subtype, max(1, per_subtype // views), views, seed, args.resolution)
        return draw

    def old(seed):
        for subtype in phantoms.SUBTYPES:
            baseline.make_phantoms(subtype, per_subtype, seed, args.resolution)

    candidates = [('new, %d views per nodule' % args.views, new(args.views), per_subtype // args.views * args.views)]
    if args.views != 1:
        candidates.append(('new, 1 view per nodule', new(1), per_subtype))
    if baseline is not None:
        candidates.append(('previous implementation', old, per_subtype))
    for name, _, _ in candidates:
        runs[name] = []
    for repeat in range(args.repeats + 1):
        for name, draw, count in candidates:
            start = time.process_time()
            draw(1000 + repeat)
            seconds = time.process_time() - start
            if repeat:          # the first round warms caches and imports
                runs[name].append(len(phantoms.SUBTYPES) * count / seconds)
    print('phantoms at %dx%d, %d patches per run, median of %d runs (CPU time), load average %s'
          % (args.resolution, args.resolution, len(phantoms.SUBTYPES) * per_subtype, args.repeats,
             ' '.join('%.2f' % v for v in os.getloadavg())))
    reference = statistics.median(runs['previous implementation']) if baseline is not None else None
    for name, _, _ in candidates:
        rate = statistics.median(runs[name])
        ratio = '' if reference is None else '   %.2fx the previous implementation' % (rate / reference)
        print('  %-28s %7.0f patches/s  (%.2f s per 1000)%s' % (name, rate, 1000.0 / rate, ratio))
    if baseline is None:
        print('  (no baseline: %s)' % reason.strip())


if __name__ == '__main__':
    main()
