"""How fast nodules/data/phantoms.py draws 64x64 patches, as ratios to earlier models measured in the same run.

The earlier models are read from git history (`git show REVISION:PATH`) into temporary modules: by default the
previous model (3-D nodules and views, smooth pleura, no bone) and the first one (one unrelated patch per
nodule); without git history only the absolute numbers are printed.  All are timed alternately and medians are
reported, because these machines are shared and noisy (the load average is printed too).  Times are the
process's CPU time (NumPy's element-wise maths runs on one core), so patches/s is per core and other processes
on the machine disturb it less than they would wall-clock time.

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

PREVIOUS = 'e1aad9e:nodules/data/phantoms.py'   # 3-D nodules cut into views; smooth pleura, no bone
FIRST = 'dc577c8:phantoms.py'                   # one unrelated patch per nodule


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark phantom drawing against the previous implementation.')
    parser.add_argument('--patches', type=int, default=640, help='patches per timed run (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs of each (default: %(default)s)')
    parser.add_argument('--views', type=int, default=10, help='views per nodule for the new drawing (default: '
                                                              '%(default)s; 1 is also measured)')
    parser.add_argument('--resolution', type=int, default=64, help='patch size (default: %(default)s)')
    parser.add_argument('--previous', default=PREVIOUS, help='REVISION:PATH of the previous model (default: '
                                                             '%(default)s)')
    parser.add_argument('--first', default=FIRST, help='REVISION:PATH of the first, single-view model (default: '
                                                       '%(default)s)')
    return parser.parse_args(argv)


def load_baseline(spec, name):
    """An earlier phantoms.py (REVISION:PATH) as a module, or None (with the reason) if git cannot provide it."""
    try:
        source = subprocess.run(['git', 'show', spec], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return None, str(error)
    folder = tempfile.mkdtemp(prefix='bench_phantoms_')
    path = os.path.join(folder, name + '.py')
    with open(path, 'wb') as f:
        f.write(source)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, None


def main(argv=None):
    args = parse_args(argv)
    previous, previous_reason = load_baseline(args.previous, 'phantoms_previous')
    first, first_reason = load_baseline(args.first, 'phantoms_first')
    per_subtype = max(1, args.patches // len(phantoms.SUBTYPES))

    def views_of(module, views):
        def draw(seed):
            for subtype in phantoms.SUBTYPES:
                module.draw_dataset(subtype, max(1, per_subtype // views), views, seed, args.resolution)
        return draw

    def single(seed):
        for subtype in phantoms.SUBTYPES:
            first.make_phantoms(subtype, per_subtype, seed, args.resolution)

    with_views = per_subtype // args.views * args.views
    candidates = [('new, %d views per nodule' % args.views, views_of(phantoms, args.views), with_views)]
    if args.views != 1:
        candidates.append(('new, 1 view per nodule', views_of(phantoms, 1), per_subtype))
    if previous is not None:
        candidates.append(('previous, %d views per nodule' % args.views, views_of(previous, args.views), with_views))
    if first is not None:
        candidates.append(('first (one view per nodule)', single, per_subtype))
    runs = dict((name, []) for name, _, _ in candidates)
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
    new_rate = statistics.median(runs[candidates[0][0]])
    for name, _, _ in candidates:
        rate = statistics.median(runs[name])
        ratio = '' if name == candidates[0][0] else '   the new model draws %.2fx as fast' % (new_rate / rate)
        print('  %-32s %7.0f patches/s  (%.2f s per 1000)%s' % (name, rate, 1000.0 / rate, ratio))
    for reason in (previous_reason, first_reason):
        if reason is not None:
            print('  (an earlier model is missing: %s)' % reason.strip())


if __name__ == '__main__':
    main()
