"""Training throughput: real images per second through one training step at each resolution.

One step is what the training loop runs per minibatch (TrainingGraphs.step): a discriminator step with the
gradient penalty and the Gs moving-average update, then a generator step.  Each resolution is measured at its
integer lod (no fade-in), after warm-up, as the median over several repeats.

Only numbers measured in this process are put side by side as ratios:
* "per-res / full-res": our per-resolution graph against the same step built the original's way, at full
  resolution on nearest-upscaled reals (TrainingGraphs(full_resolution=True): both networks at 64x64, choosing the
  resolution with tf.cond like the original's "recursive" structure, the gradient penalty taken with respect to the
  64x64 image).  Same layers, same losses, same process; the two are timed in alternation, so that a change in
  the machine's load hits both;
* "% peak": estimated FLOP/s as a fraction of the float32 GEMM peak timed in this process (the best of several
  large matmuls, timed again at the end to show how much the machine's load moved meanwhile);
* bfloat16 GEMM against float32 GEMM, with which bfloat16 hardware the CPU has: AMX, AVX-512-BF16 without AMX,
  or neither (on an AVX-512-BF16 Xeon without AMX the reviewer measured bfloat16 GEMM at 0.52x float32 and
  `2-inference.py --precision bfloat16` at 0.56x; only AMX's matrix units make bfloat16 reliably faster).
* "--augment": one step at 64x64 with each augmentation policy against the same step without augmentation
  (augment_pipe=None), the candidates timed in turn with the order rotated every round; each round's time is
  divided by that round's baseline and the median of those ratios is reported.  The worst case is ada at p=1 with
  every augmentation on, cutout included (the bilinear resampling for scale and rotation, gathers of four pixels
  per output pixel, applied to reals, fakes, the penalty's mixed images and the G step's fakes); ADA's p update
  runs every 4 steps as in the training loop.  The budget is +15% per step.
* "--blur-resampling", "--edge-padding": one step at 64x64 with each network option against the same step with
  the original networks, timed the same way (rotated rounds, median of per-round ratios), in the small
  configuration and in the demo weights' one (fmap_base 512, fmap_max 64).
Figures measured elsewhere are quoted as such, never divided by this run's numbers (see OUTSIDE_FIGURES).

FLOP estimate: the forward multiply-adds per image of G and D at the trained resolution are counted layer by layer
from the network definition (fused resampling: the 4x4 stride-2 kernels cost 4 taps per output pixel of an
upscale, 16 per output pixel of a downscale; at 64x64 with the defaults G is 9.19 G multiply-adds).  A training
step then costs about 4 F_G + 14 F_D multiply-adds per image, taking a backward pass as twice its forward pass:
D step = G forward + D forward on reals, fakes and mixed images (3 F_D) + the input gradient of the penalty (F_D)
+ weight gradients of the real/fake terms (4 F_D) and of the penalty, which differentiates a forward+backward
graph (4 F_D); G step = G and D forward + D input gradient + G backward (3 F_G + 2 F_D).  Element-wise work is
ignored, so this is an estimate to about +-30%, good for orders of magnitude and for comparing resolutions.

    python benchmarks/bench_training.py            # small configuration (fmap_base 1024, fmap_max 128)
    python benchmarks/bench_training.py --full     # also the default one (8192 / 512) at 16x16 and 64x64 (slow)
    python benchmarks/bench_training.py --quick    # fewer and shorter repeats
    python benchmarks/bench_training.py --augment-only   # just the cost of --augment at 64x64
    python benchmarks/bench_training.py --options-only   # just the cost of --blur-resampling / --edge-padding
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

MINIBATCH = 16
AUGMENT_BUDGET = 0.15  # --augment may add at most this much to a training step at 64x64
SMALL = dict(fmap_base=1024, fmap_max=128)
DEFAULT = dict(fmap_base=8192, fmap_max=512)
DEMO = dict(fmap_base=512, fmap_max=64)  # the demo weights' networks
# Measured elsewhere, quoted as such: the original PGGAN code and this code side by side on one machine.
OUTSIDE_FIGURES = ('On the reviewer\'s machine (small configuration, minibatch 16), the original PGGAN code under '
                   'current TensorFlow measured 54.6 img/s at 16x16 and 19.0 at 64x64, and this code 64.4 and 22.7 '
                   'there: about 1.18x.  Those numbers are not from this machine.')


def nf_function(fmap_base, fmap_max, fmap_decay=1.0):
    return lambda stage: min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


def forward_macs(resolution, fmap_base, fmap_max, num_channels=1, latent_size=None):
    """Forward multiply-adds per image of G_paper and D_paper built up to `resolution` (fused resampling)."""
    nf = nf_function(fmap_base, fmap_max)
    latent_size = latent_size or nf(0)
    top = int(np.log2(resolution))
    # Generator
    g = latent_size * nf(1) * 16 + 16 * 9 * nf(1) * nf(1)          # 4x4 Dense, 4x4 Conv
    g += 16 * nf(1) * num_channels                                  # ToRGB at 4x4
    for res in range(3, top + 1):
        pixels = 4 ** res
        g += pixels * 4 * nf(res - 2) * nf(res - 1)             # Conv0_up: 2x2 taps of the 4x4 kernel
        g += pixels * 9 * nf(res - 1) ** 2                      # Conv1
        g += pixels * nf(res - 1) * num_channels                # ToRGB
    # Discriminator
    d = (4 ** top) * num_channels * nf(top - 1)                     # FromRGB at the top
    for res in range(top, 2, -1):
        pixels = 4 ** res
        d += pixels * 9 * nf(res - 1) ** 2                      # Conv0
        d += (pixels // 4) * 16 * nf(res - 1) * nf(res - 2)     # Conv1_down: 4x4 stride 2
        d += (pixels // 4) * num_channels * nf(res - 2)         # FromRGB of the resolution below (fade-in)
    d += 16 * 9 * (nf(1) + 1) * nf(1) + nf(1) * 16 * nf(0) + nf(0)  # 4x4 Conv, Dense0, Dense1
    return g, d


def step_flops_per_image(resolution, fmap_base, fmap_max):
    g, d = forward_macs(resolution, fmap_base, fmap_max)
    return 2.0 * (4 * g + 14 * d)


def bfloat16_hardware():
    """Which bfloat16 case this CPU is in, from the flags the Linux kernel reports."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = set(f.read().split())
    except OSError:
        return 'unknown (no /proc/cpuinfo)'
    if 'amx_bf16' in flags:
        return 'AMX (bfloat16 matrix units)'
    if 'avx512_bf16' in flags:
        return 'AVX-512-BF16 without AMX (bfloat16 dot-product instructions, no matrix units)'
    return 'neither AMX nor AVX-512-BF16 (bfloat16 arithmetic is emulated)'


def gemm_rate(tf, tfutil, dtype='float32', size=2048, chain=4, repeats=5):
    """GFLOP/s of `dtype` matmuls (`chain` independent size x size products per run): (median, best)."""
    rng = np.random.RandomState(0)
    a = tf.cast(tf.constant(rng.randn(size, size).astype(np.float32)), dtype)
    bs = [tf.Variable(rng.randn(size, size).astype(np.float32)) for _ in range(chain)]
    tfutil.run([b.initializer for b in bs])
    total = tf.add_n([tf.reduce_sum(tf.cast(tf.matmul(a, tf.cast(b, dtype)), tf.float32)) for b in bs])
    tfutil.run(total)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.time()
        tfutil.run(total)
        rates.append(chain * 2.0 * size ** 3 / (time.time() - start) / 1e9)
    return statistics.median(rates), max(rates)


def run_steps(graphs, res_log2, steps):
    """`steps` training steps as the training loop runs them: ADA's p (and r_t) updated every MINIBATCH_REPEATS
    steps (a no-op without an augment pipe).  Returns the last step's losses."""
    from nodules.training import loop as training_loop
    for index in range(steps):
        values = graphs.step(res_log2, 0.001)
        if index % training_loop.MINIBATCH_REPEATS == training_loop.MINIBATCH_REPEATS - 1:
            graphs.update_augment()
    if not np.all(np.isfinite(values)):
        raise RuntimeError('non-finite losses at %dx%d: %s' % (2 ** res_log2, 2 ** res_log2, values))
    return values


def _seconds_per_step(graphs, res_log2, lod, warmup):
    """Prepare `graphs` at one resolution (2**res_log2) and lod (warm-up included); returns the seconds of one step."""
    graphs.set_lod(lod)
    graphs.reset_optimizers()
    for _ in range(max(warmup - 1, 0)):  # the first run of a graph also optimises it: slow, not timed
        graphs.step(res_log2, 0.001)
    start = time.time()
    graphs.step(res_log2, 0.001)
    return max(time.time() - start, 1e-4)


def gemm_rates(tf, tfutil, tf_version, repeats):
    """Time float32 and bfloat16 GEMMs in a graph of their own and print them; returns (float32 best GFLOP/s,
    bfloat16 description)."""
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=tfutil.session_config()) as session, \
            session.as_default():
        median, best = gemm_rate(tf, tfutil, 'float32', repeats=repeats)
        try:
            bf16, _ = gemm_rate(tf, tfutil, 'bfloat16', repeats=repeats)
            bf16_text = '%.1f GFLOP/s median, %.2fx float32' % (bf16, bf16 / median)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError, TypeError):
            bf16_text = 'no bfloat16 matmul kernel in TensorFlow %s' % tf_version
    print('float32 GEMM (2048x2048 matmuls, this process): median %.1f GFLOP/s, best %.1f; bfloat16 GEMM: %s'
          % (median, best, bf16_text))
    sys.stdout.flush()
    return best, bf16_text


def measure_alternately(candidates, res_log2, lod, warmup, repeats, seconds):
    """Median, min and max img/s of TrainingGraphs.step at one resolution for each of `candidates`, timed in turn
    (A, B, A, B, ...), each turn running about `seconds`."""
    steps = [max(1, int(round(seconds / _seconds_per_step(graphs, res_log2, lod, warmup))))
             for graphs in candidates]
    rates = [[] for _ in candidates]
    for _ in range(repeats):
        for index, graphs in enumerate(candidates):
            graphs.set_lod(lod)
            start = time.time()
            run_steps(graphs, res_log2, steps[index])
            rates[index].append(steps[index] * MINIBATCH / (time.time() - start))
    return [(statistics.median(r), min(r), max(r)) for r in rates]


def build_graphs(kwargs, resolutions, data_dir, full_resolution, augment_pipe=None, G_options=None, D_options=None):
    from nodules.gan import tfutil
    from nodules.training import loop as training_loop
    G = tfutil.Network('G', 'G_paper', num_channels=1, resolution=64, **dict(kwargs, **(G_options or {})))
    D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=64, **dict(kwargs, **(D_options or {})))
    G.init_vars()
    D.init_vars()
    schedule = training_loop.Schedule(64, initial_resolution=min(resolutions), minibatch=MINIBATCH)
    graphs = training_loop.TrainingGraphs(G, D, G.clone('Gs'), data_dir, schedule,
                                          training_loop.available_devices(1), seed=1000,
                                          full_resolution=full_resolution, augment_pipe=augment_pipe)
    for resolution in resolutions:  # each is otherwise built by its first step
        graphs.build(int(np.log2(resolution)))
    tfutil.initialize_uninitialized_vars()
    return G, D, graphs


def run_config(name, kwargs, resolutions, data_dir, args, peak):
    """Print one table: img/s of each resolution's step, ours and full-resolution, and the share of `peak`."""
    from nodules.gan import tfutil
    from nodules.util.tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=tfutil.session_config()) as session, \
            session.as_default():
        tf.set_random_seed(1000)
        start = time.time()
        G, D, ours = build_graphs(kwargs, resolutions, data_dir, full_resolution=False)
        _, _, full = build_graphs(kwargs, resolutions, data_dir, full_resolution=True)
        print('%s configuration (fmap_base %d, fmap_max %d, minibatch %d): G %d and D %d parameters; '
              'graphs for %s built in %.1f s'
              % (name, kwargs['fmap_base'], kwargs['fmap_max'], MINIBATCH, G.num_params(), D.num_params(),
                 ', '.join('%dx%d' % (r, r) for r in resolutions), time.time() - start))
        print('%-7s %10s %17s %12s %17s %9s %10s %7s'
              % ('res', 'img/s', '(min..max)', 'full-res', '(min..max)', 'per-res /', 'GFLOP/img', '% peak'))
        print('%-7s %10s %17s %12s %17s %9s %10s %7s' % ('', 'per-res', '', 'img/s', '', 'full-res', '(est.)',
                                                          '(est.)'))
        sys.stdout.flush()
        for resolution in resolutions:
            res_log2 = int(np.log2(resolution))
            lod = float(6 - res_log2)
            (median, low, high), (full_median, full_low, full_high) = measure_alternately(
                [ours, full], res_log2, lod, args.warmup, args.repeats, args.seconds)
            flops = step_flops_per_image(resolution, kwargs['fmap_base'], kwargs['fmap_max'])
            print('%-7s %10.2f %17s %12.2f %17s %8.2fx %10.3f %6.1f%%'
                  % ('%dx%d' % (resolution, resolution), median, '(%.2f..%.2f)' % (low, high), full_median,
                     '(%.2f..%.2f)' % (full_low, full_high), median / full_median, flops / 1e9,
                     100.0 * median * flops / 1e9 / peak))
            sys.stdout.flush()


def augment_cases():
    """(label, AugmentPipe or None) of each policy timed against no augmentation; built inside the current graph."""
    from nodules.gan import augment
    worst = dict(initial_p=1.0, ada_target=None, cutout=True)  # every augmentation, cutout too, on every image
    return [('none (augment_pipe=None)', None),
            ('none (pipe: only r_t)', augment.AugmentPipe('none', name='AugmentNone')),
            ('diffaugment', augment.AugmentPipe('diffaugment', name='AugmentDiff')),
            ('ada p=0.2, all on', augment.AugmentPipe('ada', initial_p=0.2, ada_target=None, cutout=True,
                                                      name='AugmentAda02')),
            ('ada p=1, all on (worst)', augment.AugmentPipe('ada', name='AugmentAda1', **worst))]


def measure_rotated(candidates, res_log2, lod, warmup, repeats, seconds):
    """Seconds per step of each of `candidates` (the first is the baseline) over `repeats` rounds: each round runs
    the same number of steps of every candidate, starting with a different one each round.  Returns per
    candidate the list of per-round seconds per step and the list of per-round ratios to the baseline."""
    baseline = _seconds_per_step(candidates[0], res_log2, lod, warmup)
    for graphs in candidates[1:]:
        _seconds_per_step(graphs, res_log2, lod, warmup)
    steps = max(1, int(round(seconds / baseline)))
    times = [[] for _ in candidates]
    for round_index in range(repeats):
        order = list(range(len(candidates)))
        shift = round_index % len(order)
        for index in order[shift:] + order[:shift]:
            graphs = candidates[index]
            graphs.set_lod(lod)
            start = time.time()
            run_steps(graphs, res_log2, steps)
            times[index].append((time.time() - start) / steps)
    ratios = [[t / b for t, b in zip(column, times[0])] for column in times]
    return times, ratios, steps


def compare_at_64(title, build_cases, kwargs, args):
    """Time one 64x64 training step of each case of build_cases() -> [(label, TrainingGraphs)] (the first is the
    baseline) in rotated rounds; print ms/step and the same-run ratios to the baseline; return the ratios."""
    from nodules.gan import tfutil
    from nodules.util.tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=tfutil.session_config()) as session, \
            session.as_default():
        tf.set_random_seed(1000)
        start = time.time()
        cases = build_cases()
        print('%s at 64x64 (fmap_base %d, fmap_max %d, minibatch %d): one step = D step + G '
              'step; graphs built in %.1f s' % (title, kwargs['fmap_base'], kwargs['fmap_max'], MINIBATCH,
                                                time.time() - start))
        sys.stdout.flush()
        times, ratios, steps = measure_rotated([graphs for _, graphs in cases], 6, 0.0, args.warmup,
                                               args.augment_repeats, args.seconds)
        print('%d rounds of %d step(s) per case, order rotated every round; ratio = median over rounds of the '
              'round\'s time / that round\'s %s' % (args.augment_repeats, steps, cases[0][0]))
        print('%-34s %9s %17s %8s %15s' % (title, 'ms/step', '(min..max)', 'ratio', '(min..max)'))
        for (label, _), column, ratio in zip(cases, times, ratios):
            print('%-34s %9.1f %17s %7.3fx %15s'
                  % (label, 1000 * statistics.median(column), '(%.1f..%.1f)' % (1000 * min(column),
                                                                                1000 * max(column)),
                     statistics.median(ratio), '(%.2f..%.2f)' % (min(ratio), max(ratio))))
        sys.stdout.flush()
        return ratios


def run_augment(kwargs, data_dir, args):
    """Print the cost of each --augment policy at 64x64 as ms/step and same-run ratios to no augmentation
    (p update every 4 steps, as in the training loop)."""
    build = lambda: [(label, build_graphs(kwargs, [64], data_dir, full_resolution=False, augment_pipe=pipe)[2])
                     for label, pipe in augment_cases()]
    ratios = compare_at_64('--augment', build, kwargs, args)
    worst = statistics.median(ratios[-1])
    print('worst case (ada p=1, all on): %+.1f%% per step, %s the %d%% budget'
          % (100 * (worst - 1), 'within' if worst <= 1 + AUGMENT_BUDGET else 'OVER', int(round(100 * AUGMENT_BUDGET))))


NETWORK_OPTIONS = [('original networks', {}), ('--blur-resampling', dict(blur_resampling=True)),
                   ('--blur-resampling --edge-padding', dict(blur_resampling=True, edge_padding=True))]


def run_network_options(kwargs, data_dir, args):
    """Print the cost of the network options that are not in the original networks, at 64x64."""
    def build():
        cases = []
        for label, options in NETWORK_OPTIONS:
            D_options = {k: v for k, v in options.items() if k != 'edge_padding'}  # edge padding is G's only
            cases.append((label, build_graphs(kwargs, [64], data_dir, full_resolution=False,
                                              G_options=options, D_options=D_options)[2]))
        return cases
    compare_at_64('network options', build, kwargs, args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='See the module docstring for what is compared and how FLOPs are '
                                            'estimated.')
    parser.add_argument('--full', action='store_true',
                        help='also measure the default configuration (fmap_base 8192, fmap_max 512) at 16x16 and '
                             '64x64; slow (minutes) on a CPU')
    parser.add_argument('--quick', action='store_true', help='fewer and shorter repeats (a rough number quickly)')
    parser.add_argument('--repeats', type=int, help='timed repeats per resolution (default 5, quick 3)')
    parser.add_argument('--seconds', type=float, help='length of one repeat in seconds (default 2, quick 0.5)')
    parser.add_argument('--warmup', type=int, help='untimed steps first (default 3, quick 2)')
    parser.add_argument('--images', type=int, default=256, help='synthetic 64x64 images in the dataset')
    parser.add_argument('--augment-only', action='store_true',
                        help='only the cost of --augment at 64x64 (no GEMM peak, no per-resolution table)')
    parser.add_argument('--options-only', action='store_true',
                        help='only the cost of --blur-resampling and --edge-padding at 64x64')
    parser.add_argument('--augment-repeats', type=int,
                        help='rounds of the --augment and network-option comparisons (default 9, quick 3): more '
                             'rounds, less noise')
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.seconds = args.seconds or (0.5 if args.quick else 2.0)
    args.warmup = args.warmup or (2 if args.quick else 3)
    args.augment_repeats = args.augment_repeats or (3 if args.quick else 9)

    from nodules.data import dataset
    from nodules.util import tfcompat
    from nodules.gan import tfutil
    from nodules.util.tfcompat import tf
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print('TensorFlow %s, Python %s, %d CPU(s), load average %.2f; minibatch %d; one step = D step with gradient '
          'penalty and Gs update + G step' % (tfcompat.TF_VERSION, sys.version.split()[0], os.cpu_count() or 0,
                                              load, MINIBATCH))
    workdir = tempfile.mkdtemp(prefix='bench-training-')
    try:
        images = np.random.RandomState(0).randint(0, 256, size=(args.images, 1, 64, 64)).astype(np.uint8)
        data_dir = dataset.write_dataset(os.path.join(workdir, 'synthetic'), images)
        if args.augment_only:
            run_augment(SMALL, data_dir, args)
            return
        if args.options_only:
            run_network_options(SMALL, data_dir, args)
            print()
            run_network_options(DEMO, data_dir, args)
            return
        print('bfloat16 hardware: %s' % bfloat16_hardware())
        repeats = 3 if args.quick else 5
        peak, _ = gemm_rates(tf, tfutil, tfcompat.TF_VERSION, repeats)
        print(OUTSIDE_FIGURES)
        print()
        sys.stdout.flush()
        run_config('small', SMALL, [4, 8, 16, 32, 64], data_dir, args, peak)
        if args.full:
            print()
            run_config('default', DEFAULT, [16, 64], data_dir, args, peak)
        print()
        later_peak, _ = gemm_rates(tf, tfutil, tfcompat.TF_VERSION, repeats)
        if later_peak > 1.2 * peak:
            print('the float32 GEMM is %.2fx faster now than at the start: the machine was busier then, and the '
                  '"%% peak" column overstates the share (by up to that factor)' % (later_peak / peak))
        print()
        run_augment(SMALL, data_dir, args)
        print()
        run_network_options(SMALL, data_dir, args)
        print()
        run_network_options(DEMO, data_dir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
