"""Classifier training speed: patches per second through one training step at batch 64, as a share of the
machine's float32 GEMM peak measured in the same process.

One step is what `Classifier.fit` runs per minibatch: forward pass in training mode (batch statistics), softmax
cross-entropy, backward pass, Adam update and the moving averages of batch normalisation, with the 64 patches fed
from NumPy.  Arithmetic per patch is counted from the architecture (cnn.training_flops: forward, weight
gradients and input gradients of every convolution and the dense layer; element-wise work is not counted), so the
share of the GEMM peak says how close training runs to matrix-multiply speed, overheads included.

Two measurements, each a ratio of two numbers taken in this process:
  * wall clock, all cores: training steps and 2048x2048 matmuls (TensorFlow's default threads) alternate, and
    each training repeat is divided by the GEMM rate measured right after it.  This is the number that matters
    on an idle machine.
  * CPU time, one thread: the same with one TensorFlow thread, counting the process's CPU seconds instead of
    wall seconds.  Other programs sharing the CPU then change neither side much, so on a busy machine this still
    says how efficient the kernels are.

    python benchmarks/bench_classify.py                       # the default network at 64x64
    python benchmarks/bench_classify.py --widths 64,128,256   # another width schedule
    python benchmarks/bench_classify.py --quick               # fewer and shorter repeats
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

CLASSES = 3


class Gemm(object):
    """float32 size x size matmuls (`chain` independent products per run) in their own graph and session."""

    def __init__(self, num_threads=0, size=2048, chain=2):
        from nodules.gan import tfutil
        from nodules.util.tfcompat import tf
        self.flops = chain * 2.0 * size ** 3
        self.graph = tf.Graph()
        with self.graph.as_default():
            rng = np.random.RandomState(0)
            a = tf.Variable(rng.randn(size, size).astype(np.float32))
            bs = [tf.Variable(rng.randn(size, size).astype(np.float32)) for _ in range(chain)]
            # Variables, not constants, so that nothing is folded away; fetch one scalar so that no copy is timed.
            self.products = tf.add_n([tf.reduce_sum(tf.matmul(a, b)) for b in bs])
            init = tf.global_variables_initializer()
        self.session = tf.Session(graph=self.graph, config=tfutil.session_config(num_threads))
        self.session.run(init)
        self.session.run(self.products)  # warm-up

    def rate(self, seconds, clock):
        """GFLOP/s over runs lasting about `seconds` of `clock`."""
        runs, start = 0, clock()
        while runs == 0 or clock() - start < seconds:
            self.session.run(self.products)
            runs += 1
        return runs * self.flops / (clock() - start) / 1e9

    def close(self):
        self.session.close()


def measure(net, gemm, batch, repeats, seconds, warmup, clock):
    """Per repeat: patches/s of Classifier.train_step on one fixed minibatch by `clock`, and the GEMM rate by the
    same clock right after it."""
    images, labels, weights = batch
    rng = np.random.RandomState(0)
    net.session.run(net.reset_op)
    net.set_weights(net.initial_weights(rng))
    mask = net.dropout_mask(rng, len(images))
    for _ in range(warmup):
        net.train_step(images, labels, weights, mask)
    rates, peaks = [], []
    for _ in range(repeats):
        steps, start = 0, clock()
        while steps == 0 or clock() - start < seconds:
            loss = net.train_step(images, labels, weights, mask)
            steps += 1
        rates.append(steps * len(images) / (clock() - start))
        peaks.append(gemm.rate(seconds / 2, clock))
        if not np.isfinite(loss):
            raise RuntimeError('non-finite training loss %r' % loss)
    return np.array(rates), np.array(peaks)


def report(title, rates, peaks, flops, unit, batch):
    shares = rates * flops / 1e9 / peaks
    print('%s:' % title)
    print('  float32 GEMM (2048x2048 matmuls): median %.1f GFLOP/%s (min %.1f, max %.1f)'
          % (np.median(peaks), unit, peaks.min(), peaks.max()))
    print('  training at batch %d: median %.0f patches/%s (min %.0f, max %.0f) = %.1f GFLOP/%s'
          % (batch, np.median(rates), unit, rates.min(), rates.max(), np.median(rates) * flops / 1e9, unit))
    print('  share of the GEMM peak (each repeat against the GEMM run right after it): median %.0f%% '
          '(min %.0f%%, max %.0f%%)' % (100 * np.median(shares), 100 * shares.min(), 100 * shares.max()))
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--widths', default=None, help='comma-separated stage widths (default: the classifier\'s)')
    parser.add_argument('--resolution', type=int, default=64, help='patch size (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=64, help='minibatch (default: %(default)s)')
    parser.add_argument('--quick', action='store_true', help='fewer and shorter repeats (a rough number quickly)')
    args = parser.parse_args(argv)
    repeats, seconds, warmup = (3, 1.0, 3) if args.quick else (7, 2.0, 5)

    from nodules.classification import cnn
    from nodules.util import tfcompat
    widths = tuple(int(w) for w in args.widths.split(',')) if args.widths else cnn.DEFAULT_WIDTHS
    flops = cnn.training_flops(args.resolution, CLASSES, widths)
    print('TensorFlow %s, Python %s, %d CPU(s)' % (tfcompat.TF_VERSION, sys.version.split()[0], os.cpu_count() or 0))
    print('classifier %dx%d, widths %s: %d weights, %.1f M multiply-adds forward, %.1f MFLOP per patch per training '
          'step' % (args.resolution, args.resolution, ','.join(map(str, widths)),
                    cnn.num_weights(args.resolution, CLASSES, widths),
                    cnn.multiply_adds(args.resolution, CLASSES, widths) / 1e6, flops / 1e6))
    sys.stdout.flush()
    rng = np.random.RandomState(1)
    batch = (rng.randint(0, 256, size=(args.batch, args.resolution, args.resolution)).astype(np.uint8),
             rng.randint(0, CLASSES, size=args.batch).astype(np.int32), np.ones(args.batch, np.float32))

    for title, threads, clock, unit in [('wall clock, all cores', 0, time.perf_counter, 's'),
                                        ('CPU time, one thread', 1, time.process_time, 'CPU-s')]:
        gemm = Gemm(num_threads=threads)
        net = cnn.Classifier(args.resolution, CLASSES, widths, num_threads=threads)
        try:
            rates, peaks = measure(net, gemm, batch, repeats, seconds, warmup, clock)
            if threads == 0:
                eval_images = rng.randint(0, 256, size=(1024, args.resolution, args.resolution)).astype(np.uint8)
                net.predict(eval_images)
                start = time.perf_counter()
                net.predict(eval_images)
                inference = len(eval_images) / (time.perf_counter() - start)
        finally:
            net.close()
            gemm.close()
        report(title, rates, peaks, flops, unit, args.batch)
    print('inference (batches of %d, all cores): %.0f patches/s' % (cnn.EVAL_BATCH_SIZE, inference))


if __name__ == '__main__':
    main()
