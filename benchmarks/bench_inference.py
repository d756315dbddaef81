"""How fast the default 64x64 generator makes nodules, measured against this machine.

Every ratio is between two things measured in the same run: the float32 GEMM peak (a large matmul in
TensorFlow), the one-image-per-call baseline of the original 2-inference.py, float32 itself for the reduced
precisions (whose 8-bit images are also compared with float32's), and what exactness costs: the generator as
shipped against the same generator with the two shortcuts that made it inexact (pixel norm averaging over the
last NHWC axis, and Grappler's memory optimizer left on).  Then the files: a full-size (G, D, Gs) pickle like
the published ones (~270 MB), the time to load its Gs, and the default command
`2-inference.py --model <pkl> --number 10` timed end to end in a fresh interpreter.

Weights are random (N(0, 1) as initialised, ToRGB scaled by 0.3 so that, like a trained generator's, most
outputs fall inside -1..1 and the 8-bit comparison is not dominated by clipped pixels).  The cost per image is
counted from the network's own layer shapes (multiply-adds of every convolution and dense layer, the fused
up-scaling ones as the transposed convolutions they are).  bfloat16 speed depends on the CPU's matrix units;
the benchmark says which case this machine is.  Times are medians over repeats; the machine's load average is
printed because these machines are shared and noisy.

    python benchmarks/bench_inference.py [--quick]
"""
import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

PRECISIONS = ('float32', 'bfloat16', 'float16')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark nodule generation (the default 22M-parameter generator) '
                                                 'against this machine\'s GEMM peak and the one-image-per-call '
                                                 'baseline, in float32 and reduced precisions, and time the '
                                                 'default 2-inference.py command end to end.')
    parser.add_argument('--quick', action='store_true',
                        help='fewer repeats and images (a rough picture in a couple of minutes)')
    parser.add_argument('--repeats', type=int, help='timed runs per generation measurement (default 3, quick 1)')
    parser.add_argument('--batch-sizes', default='8,16,32,64', help='batched sizes to measure (default: %(default)s)')
    parser.add_argument('--precisions', default=','.join(PRECISIONS),
                        help='compute precisions to measure (default: %(default)s)')
    parser.add_argument('--gemm-size', type=int, default=4096, help='n of the n x n matmul (default: %(default)s)')
    parser.add_argument('--budget', type=float, default=30.0,
                        help='seconds after which a measurement stops repeating (default: %(default)s)')
    parser.add_argument('--cli-repeats', type=int, help='runs of each command (default 3, quick 1)')
    parser.add_argument('--skip-files', action='store_true', help='skip the pickle and command-line part')
    parser.add_argument('--skip-exactness', action='store_true',
                        help='skip the cost of exactness (shipped generator vs its inexact shortcuts)')
    parser.add_argument('--exactness-batch', type=int, default=32,
                        help='batch size of the exactness comparison (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.cli_repeats is None:
        args.cli_repeats = 1 if args.quick else 3
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b]
    args.precisions = [p for p in args.precisions.split(',') if p]
    args.gemm_repeats = 3 if args.quick else 5
    args.images_per_run = 16 if args.quick else 32  # batched runs: at least this many images (or one batch)
    args.baseline_images = 4 if args.quick else 8   # one-per-call runs: this many images
    return args


def say(text=''):
    print(text)
    sys.stdout.flush()


def load_average():
    try:
        return '%.1f %.1f %.1f' % os.getloadavg()
    except (AttributeError, OSError):
        return 'n/a'


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def bfloat16_hardware(flags):
    """Which of the three cases of bfloat16 arithmetic this CPU is in, from its /proc/cpuinfo flags."""
    if 'amx_bf16' in flags:
        return ('AMX (amx_bf16): bfloat16 matrix tiles; bfloat16 convolutions and matmuls can run several '
                'times faster than float32 when TensorFlow\'s oneDNN kernels use them')
    if 'avx512_bf16' in flags:
        return ('AVX-512-BF16 without AMX: bfloat16 dot products on the vector units, no matrix tiles; the gain '
                'depends on the core (an outside figure: GEMM 0.52x float32 on such a Xeon; the same-run GEMM '
                'ratio below is what holds here)')
    if flags:
        return 'neither AMX nor AVX-512-BF16: bfloat16 is emulated and slow'
    return 'unknown (no /proc/cpuinfo flags)'


def short_error(error):
    text = str(error).strip().splitlines()
    return '%s: %s' % (type(error).__name__, text[0][:110] if text else '')


def median(values):
    return statistics.median(values) if values else float('nan')


@contextlib.contextmanager
def isolated_session(config=None):
    """A graph and session of their own: on TensorFlow 1.12 one op without a kernel (bfloat16 convolutions)
    makes every later run of its session fail, so each precision is measured apart."""
    from nodules.gan import tfutil
    from nodules.util.tfcompat import native_stderr_captured, tf
    graph = tf.Graph()
    with native_stderr_captured():  # CUDA probing on GPU-less machines logs errors that are not ours
        session = tf.Session(graph=graph, config=config or tfutil.session_config())
    try:
        with graph.as_default(), session.as_default():
            yield session
    finally:
        session.close()


# ----------------------------------------------------------------------------------------------------------------
# GEMM peak


def gemm_rate(n, dtype, repeats, budget):
    """GFLOP/s of an n x n x n matmul (2 n^3 flops), median over timed runs after one warm-up."""
    with isolated_session() as session:
        return _gemm_rate(session, n, dtype, repeats, budget)


def _gemm_rate(session, n, dtype, repeats, budget):
    from nodules.util.tfcompat import tf
    rng = np.random.RandomState(0)
    a = tf.Variable(rng.standard_normal((n, n)).astype(np.float32), name='gemm_a')
    b = tf.Variable(rng.standard_normal((n, n)).astype(np.float32), name='gemm_b')
    session.run([a.initializer, b.initializer])
    if dtype == 'float32':
        product = tf.matmul(a, b)
    else:  # the casts are 2 n^2 operations against 2 n^3
        product = tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype))
    # Variables (not constants) so that graph optimisation cannot fold the product away; fetch nothing but
    # the op, so that copying 64 MB back to NumPy is not timed.
    options = tf.RunOptions(timeout_in_ms=int(1000 * max(budget, 10) * 4))
    session.run(product.op, options=options)
    times, start = [], time.time()
    while len(times) < repeats and (not times or time.time() - start < budget):
        t = time.perf_counter()
        session.run(product.op, options=options)
        times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / median(times) / 1e9, len(times)


def measure_gemm(args):
    peaks = {}
    say('GEMM peak (TensorFlow matmul, in this process; median of repeats):')
    for precision in args.precisions:
        n = args.gemm_size if precision == 'float32' else min(args.gemm_size, 1024)
        try:
            rate, runs = gemm_rate(n, precision, args.gemm_repeats, args.budget)
            if precision != 'float32' and rate * 1e9 * args.budget / 4 > 2.0 * args.gemm_size ** 3:
                n = args.gemm_size  # fast enough to be measured at full size too
                rate, runs = gemm_rate(n, precision, args.gemm_repeats, args.budget)
        except Exception as error:  # no kernel for this type on this stack, or hopelessly slow
            say('  %-9s unsupported (%s)' % (precision, short_error(error)))
            continue
        peaks[precision] = rate
        say('  %-9s %4d x %4d: %7.1f GFLOP/s  (%d runs)%s' % (
            precision, n, n, rate, runs,
            '' if precision == 'float32' or 'float32' not in peaks
            else '  = %.3gx float32' % (rate / peaks['float32'])))
    return peaks


# ----------------------------------------------------------------------------------------------------------------
# Generation throughput


def time_generation(Gs, latents, labels, batch, count, precision, repeats, budget):
    """Images per second generating `count` images in calls of `batch` (median of timed runs)."""
    times, start, images = [], time.time(), None
    while len(times) < repeats and (not times or time.time() - start < budget):
        t = time.perf_counter()
        images = Gs.run(latents[:count], labels[:count], minibatch_size=batch, dtype=precision)
        times.append(time.perf_counter() - t)
    return count / median(times), len(times), images


def generator_gflop(weights, resolution=64):
    """GFLOP per image (2 per multiply-add) of G_paper at lod 0, counted from its weight shapes."""
    resolution_log2 = int(np.log2(resolution))
    multiply_adds = 0
    for name, value in weights.items():
        if not name.endswith('/weight'):
            continue
        shape = value.shape
        if name.startswith('ToRGB_lod'):
            size = 2 ** (resolution_log2 - int(name.split('/')[0][len('ToRGB_lod'):]))
        elif len(shape) == 2:  # the dense layer
            multiply_adds += shape[0] * shape[1]
            continue
        else:
            size = int(name.split('x')[0])
        if '/Conv0_up/' in name:  # transposed: every input pixel meets all 4x4 taps of the summed kernel
            multiply_adds += (size // 2) ** 2 * 16 * shape[2] * shape[3]
        else:
            multiply_adds += size ** 2 * int(np.prod(shape))
    return 2.0 * multiply_adds / 1e9


def default_generator(weights=None):
    """The default 64x64 Gs in the current graph, with `weights` or freshly initialised."""
    from nodules.gan import tfutil
    Gs = tfutil.Network('Gs', 'G_paper', resolution=64)
    if weights is None:
        Gs.init_vars()
    else:
        Gs.set_vars(weights)
    return Gs


def measure_generation(weights, args, peaks):
    from nodules.util import outputs
    gflop_per_image = generator_gflop(weights)
    largest = max(args.batch_sizes + [args.images_per_run])
    latent_size = weights['4x4/Dense/weight'].shape[0]
    latents = np.random.RandomState(123).randn(largest, latent_size).astype(np.float32)
    labels = np.zeros((largest, 0), np.float32)
    peak = peaks.get('float32')
    rows, reference, results = [], {}, {}
    params = sum(int(np.prod(v.shape)) for n, v in weights.items() if n != 'lod')
    say()
    say('Generation, default generator (%s parameters), %.2f GFLOP per image (counted from its layers):'
        % (format(params, ','), gflop_per_image))
    say('  %-9s %5s %4s %9s %9s %8s %8s %9s %9s' % ('precision', 'batch', 'runs', 'images/s', 'GFLOP/s',
                                                    'f32 peak', 'own peak', 'vs batch1', 'vs f32'))
    for precision in args.precisions:
        with isolated_session():
            Gs = default_generator(weights)
            try:  # build the graph and warm up (kernels, memory) before timing
                t = time.perf_counter()
                Gs.run(latents[:1], labels[:1], dtype=precision)
                per_image = time.perf_counter() - t  # an upper bound: includes building and first-run costs
            except Exception as error:
                say('  %-9s unsupported on this stack (%s)' % (precision, short_error(error)))
                continue
            if 8 * per_image <= 2 * args.budget:
                Gs.run(latents[:8], labels[:8], minibatch_size=8, dtype=precision)
            baseline, skipped = None, []
            for batch in [1] + args.batch_sizes:
                count = args.baseline_images if batch == 1 else max(batch, args.images_per_run)
                if count * per_image > 2 * args.budget:  # emulated arithmetic can be 100x slower
                    skipped.append(batch)
                    continue
                rate, runs, images = time_generation(Gs, latents, labels, batch, count, precision,
                                                     args.repeats, args.budget)
                per_image = min(per_image, 1.0 / rate)
                baseline = baseline or rate
                results[(precision, batch)] = rate
                gflops = rate * gflop_per_image
                own_peak = peaks.get(precision)
                versus_f32 = results.get(('float32', batch))
                say('  %-9s %5d %4d %9.2f %9.1f %7.1f%% %8s %8.2fx %9s' % (
                    precision, batch, runs, rate, gflops, 100.0 * gflops / peak if peak else float('nan'),
                    '%.1f%%' % (100.0 * gflops / own_peak) if own_peak else 'n/a', rate / baseline,
                    '%.2fx' % (rate / versus_f32) if versus_f32 else 'n/a'))
                if batch == max(args.batch_sizes):
                    reference[precision] = outputs.float_to_uint8(images)
            if skipped:
                say('  %-9s batch %s skipped: too slow here (the first image took %.1f s, %.3f images/s; '
                    'a run would exceed %.0f s)' % (precision, ', '.join(map(str, skipped)), per_image,
                                                   1 / per_image, 2 * args.budget))
        rows.append(precision)
    if 'float32' in reference and len(reference) > 1:
        say()
        say('8-bit images vs float32 (the same %d latents at batch %d):' % (len(reference['float32']),
                                                                          max(args.batch_sizes)))
        for precision in rows:
            if precision == 'float32' or precision not in reference:
                continue
            difference = np.abs(reference[precision].astype(int) - reference['float32'])
            say('  %-9s pixels equal %6.2f%%, within 1 grey level %6.2f%%, max difference %d' % (
                precision, 100.0 * np.mean(difference == 0), 100.0 * np.mean(difference <= 1), difference.max()))
    return results


# ----------------------------------------------------------------------------------------------------------------
# The cost of exactness


@contextlib.contextmanager
def last_axis_pixel_norm():
    """Graphs built inside average pixel norm's squares over the last NHWC axis: faster to write, but the
    channel sum then rounds differently from the original's channel-first one."""
    from nodules.gan import networks
    from nodules.util.tfcompat import tf
    exact = networks.channel_mean
    networks.channel_mean = lambda x: tf.reduce_mean(x, axis=-1, keepdims=True)
    try:
        yield
    finally:
        networks.channel_mean = exact


def memory_optimizer_on_config():
    """tfutil.session_config with Grappler's memory optimizer back at its default (on)."""
    from nodules.gan import tfutil
    config = tfutil.session_config()
    rewrite_options = config.graph_options.rewrite_options
    rewrite_options.memory_optimization = rewrite_options.DEFAULT_MEM_OPT
    return config


def pixel_norm_seconds(weights, batch, rounds):
    """Seconds per pass of the generator's pixel norms alone (one per layer, on random features of each layer's
    shape), channel-first as shipped and over the last axis: the whole-network ratio hides this under noise."""
    from nodules.gan import networks
    from nodules.util.tfcompat import tf
    shapes = [(batch, int(name.split('x')[0]), int(name.split('x')[0]), value.shape[0])
              for name, value in weights.items() if name.endswith('/bias') and not name.startswith('ToRGB')]
    with isolated_session() as session:
        features = [tf.Variable(tf.random_normal(shape)) for shape in shapes]
        session.run([f.initializer for f in features])
        exact = tf.add_n([tf.reduce_sum(networks.pixel_norm(f)) for f in features])  # fetched: nothing pruned
        with last_axis_pixel_norm():
            last_axis = tf.add_n([tf.reduce_sum(networks.pixel_norm(f)) for f in features])
        session.run([exact, last_axis])
        times = {exact: [], last_axis: []}
        for _ in range(rounds):
            for total in times:
                t = time.perf_counter()
                session.run(total)
                times[total].append(time.perf_counter() - t)
    return len(shapes), median(times[exact]), median(times[last_axis])


def measure_exactness(weights, args):
    """The generator as shipped against each inexact shortcut, float32, timed in alternation in this process."""
    from nodules.util import outputs
    batch = args.exactness_batch
    count = max(batch, args.images_per_run)
    rounds = 3 if args.quick else 5
    latents = np.random.RandomState(321).randn(count, weights['4x4/Dense/weight'].shape[0]).astype(np.float32)
    labels = np.zeros((count, 0), np.float32)
    variants = [('as shipped (exact)', None, contextlib.ExitStack),
                ('pixel norm mean over the last axis', None, last_axis_pixel_norm),
                ('memory optimizer on', memory_optimizer_on_config(), contextlib.ExitStack)]
    say()
    say('The cost of exactness: float32, batch %d, %d images per run, %d rounds timed in alternation:'
        % (batch, count, rounds))
    with contextlib.ExitStack() as stack:
        runs = []
        for label, config, build_context in variants:
            session = stack.enter_context(isolated_session(config))
            with build_context():
                Gs = default_generator(weights)
                first = Gs.run(latents, labels, minibatch_size=batch)  # builds the graph, warms up
            runs.append(dict(label=label, session=session, Gs=Gs, first=first, times=[], unlike_first=0))
        for _ in range(rounds):
            for run in runs:
                with run['session'].graph.as_default(), run['session'].as_default():
                    t = time.perf_counter()
                    images = run['Gs'].run(latents, labels, minibatch_size=batch)
                    run['times'].append(time.perf_counter() - t)
                run['unlike_first'] += not np.array_equal(images, run['first'])  # reordered sums show here
    exact_rate = count / median(runs[0]['times'])
    exact_bytes = outputs.float_to_uint8(runs[0]['first'])
    say('  %-36s %9s %9s %18s %22s' % ('', 'images/s', 'vs exact', 'runs unlike first', '8-bit vs exact'))
    for run in runs:
        rate = count / median(run['times'])
        differing = int(np.sum(outputs.float_to_uint8(run['first']) != exact_bytes))
        say('  %-36s %9.2f %8.3fx %11d of %-5d %10d pixels differ' % (
            run['label'], rate, rate / exact_rate, run['unlike_first'], rounds, differing))
    layers, exact_seconds, last_axis_seconds = pixel_norm_seconds(weights, batch, 2 * rounds + 1)
    say('  the %d pixel norms alone, per batch of %d: channel-first %.3f s, last axis %.3f s (%.2fx); the '
        'difference is %.1f%% of an exact batch' % (
            layers, batch, exact_seconds, last_axis_seconds, exact_seconds / last_axis_seconds,
            100.0 * (exact_seconds - last_axis_seconds) * exact_rate / batch))


# ----------------------------------------------------------------------------------------------------------------
# Files and the command line


def wall_clock(command, repeats, cwd):
    times = []
    for index in range(repeats):
        t = time.perf_counter()
        result = subprocess.run([part(index) if callable(part) else part for part in command], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        times.append(time.perf_counter() - t)
        if result.returncode != 0:
            raise RuntimeError('%s failed: %s' % (' '.join(map(str, command[:3])), result.stderr.strip()[-500:]))
    return median(times)


def measure_files(weights, args, generation_rates):
    from nodules.gan import legacy
    from nodules.gan import tfutil
    say()
    say('Files (a full-size pickle like the published AIS/MIA/IAC weights):')
    directory = tempfile.mkdtemp(prefix='bench_inference_')
    try:
        path = os.path.join(directory, 'AIS-random.pkl')
        with isolated_session():
            G = tfutil.Network('G', 'G_paper', resolution=64)
            D = tfutil.Network('D', 'D_paper', resolution=64)
            G.init_vars()
            D.init_vars()
            Gs = default_generator(weights)
            t = time.perf_counter()
            legacy.save_network_pkl(path, (G, D, Gs))
            save_time = time.perf_counter() - t
            params = G.num_params() + D.num_params() + Gs.num_params()
        say('  pickle: %s parameters in (G, D, Gs), %.1f MB, saved in %.2f s'
            % (format(params, ','), os.path.getsize(path) / 1e6, save_time))

        read_times, load_times = [], []
        for _ in range(args.cli_repeats):
            t = time.perf_counter()
            legacy.read_network_states(path)
            read_times.append(time.perf_counter() - t)
            with isolated_session():
                t = time.perf_counter()
                legacy.load_network_pkl(path, which=('Gs',))
                load_times.append(time.perf_counter() - t)
        say('  legacy.load_network_pkl(path, which=(\'Gs\',)): %.2f s (of which reading and checked unpickling '
            '%.2f s)' % (median(load_times), median(read_times)))

        python = sys.executable
        script = os.path.join(ROOT, '2-inference.py')
        out = lambda tag: (lambda index: os.path.join(directory, '%s%d' % (tag, index)))  # noqa: E731
        startup = wall_clock([python, '-c', 'import tfutil'], args.cli_repeats, ROOT)
        default = wall_clock([python, script, '--model', path, '--number', '10', '--outdir', out('default')],
                             args.cli_repeats, ROOT)
        one_per_call = wall_clock([python, script, '--model', path, '--number', '10', '--batch-size', '1',
                                   '--outdir', out('one')], args.cli_repeats, ROOT)
        say('  python -c "import tfutil" (interpreter + TensorFlow):  %6.2f s' % startup)
        say('  2-inference.py --model <pkl> --number 10:              %6.2f s  (%.2f s beyond start-up)'
            % (default, default - startup))
        say('  ... --batch-size 1 (one image per call, as the seed):  %6.2f s  -> default is %.2fx faster '
            '(%.2fx beyond start-up)' % (one_per_call, one_per_call / default,
                                         (one_per_call - startup) / max(default - startup, 1e-9)))
        best = generation_rates.get(('float32', 32))
        if best:
            say('  in-process estimate for the default: load %.2f s + 10 images at %.2f images/s = %.2f s; the '
                'command adds %.2f s (interpreter, TensorFlow, building graphs, writing PNGs)' % (
                    median(load_times), best, median(load_times) + 10 / best,
                    default - median(load_times) - 10 / best))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    from nodules.util import tfcompat
    say('nodule-pggan inference benchmark%s' % (' (--quick)' if args.quick else ''))
    say('Python %s, TensorFlow %s, NumPy %s; %s, %s logical CPUs; load average %s'
        % (platform.python_version(), tfcompat.TF_VERSION, np.__version__, cpu_name(), os.cpu_count(),
           load_average()))
    bfloat16_case = bfloat16_hardware(cpu_flags())
    say('bfloat16 on this CPU: %s' % bfloat16_case)
    say()
    peaks = measure_gemm(args)

    with isolated_session():
        weights = default_generator().get_vars()
    weights['ToRGB_lod0/weight'] *= np.float32(0.3)
    rates = measure_generation(weights, args, peaks)
    if not args.skip_exactness:
        measure_exactness(weights, args)

    if rates.get(('float32', 1)):
        batched = [(rate, batch) for (precision, batch), rate in rates.items() if precision == 'float32' and batch > 1]
        best, batch = max(batched) if batched else (None, None)
        say()
        say('Summary: float32 one image per call %.2f images/s; best batched %.2f images/s (batch %s) = %.2fx; '
            '%.0f%% of the float32 GEMM peak.' % (rates[('float32', 1)], best or float('nan'), batch,
                                                   (best or float('nan')) / rates[('float32', 1)],
                                                   100.0 * (best or float('nan')) * generator_gflop(weights)
                                                   / peaks.get('float32', float('nan'))))
        fastest = max(rates.items(), key=lambda item: item[1])
        say('         fastest overall: %s at batch %d, %.2f images/s = %.2fx the float32 one-per-call baseline.'
            % (fastest[0][0], fastest[0][1], fastest[1], fastest[1] / rates[('float32', 1)]))
        both = sorted(batch for (precision, batch) in rates if precision == 'bfloat16' and ('float32', batch) in rates)
        if both:
            say('         bfloat16 at batch %d: %.2fx float32 (this run); %s.'
                % (both[-1], rates[('bfloat16', both[-1])] / rates[('float32', both[-1])], bfloat16_case))

    if not args.skip_files:
        measure_files(weights, args, rates)
    say()
    say('done in %.0f s; load average %s' % (time.time() - started, load_average()))


if __name__ == '__main__':
    main()
