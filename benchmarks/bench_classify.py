"""Classifier training speed: patches per second through one training step at batch 64, as a share of the
machine's float32 GEMM peak measured in the same process.

One step is what `Classifier.fit` runs per minibatch: forward pass in training mode (batch statistics), softmax
cross-entropy, backward pass, Adam update and the moving averages of batch normalisation, with the 64 patches fed
from NumPy.  Arithmetic per patch is counted from the architecture (classifier.training_flops: forward, weight
gradients and input gradients of every convolution and the dense layer; element-wise work is not counted), so the
share of the GEMM peak says how close the convolutions run to matrix-multiply speed, overheads included.

    python benchmarks/bench_classify.py                       # the default network at 64x64
    python benchmarks/bench_classify.py --widths 32,64,128    # another width schedule
    python benchmarks/bench_classify.py --quick               # fewer and shorter repeats
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


class Gemm(object):
    """float32 size x size matmuls (`chain` independent products per run) in their own graph and session."""

    def __init__(self, size=2048, chain=4):
        import tfutil
        from tfcompat import tf
        self.flops = chain * 2.0 * size ** 3
        self.graph = tf.Graph()
        with self.graph.as_default():
            rng = np.random.RandomState(0)
            a = tf.Variable(rng.randn(size, size).astype(np.float32))
            bs = [tf.Variable(rng.randn(size, size).astype(np.float32)) for _ in range(chain)]
            # Variables, not constants, so that nothing is folded away; fetch one scalar so that no copy is timed.
            self.products = tf.add_n([tf.reduce_sum(tf.matmul(a, b)) for b in bs])
            init = tf.global_variables_initializer()
        self.session = tf.Session(graph=self.graph, config=tfutil.session_config())
        self.session.run(init)
        self.session.run(self.products)  # warm-up

    def rate(self, seconds):
        """GFLOP/s over runs lasting about `seconds` in all."""
        runs, start = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - start < seconds:
            self.session.run(self.products)
            runs += 1
        return runs * self.flops / (time.perf_counter() - start) / 1e9


def training_rates(net, gemm, batch, repeats, seconds, warmup):
    """Per repeat: patches/s of Classifier.train_step on one fixed minibatch, and the GEMM rate measured right
    after it.  Interleaving keeps the two comparable on a machine whose load changes."""
    images, labels, weights = batch
    rng = np.random.RandomState(0)
    net.session.run(net.reset_op)
    net.set_weights(net.initial_weights(rng))
    mask = net.dropout_mask(rng, len(images))
    for _ in range(warmup):
        net.train_step(images, labels, weights, mask)
    rates, peaks = [], []
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < seconds:
            loss = net.train_step(images, labels, weights, mask)
            steps += 1
        rates.append(steps * len(images) / (time.perf_counter() - start))
        peaks.append(gemm.rate(seconds / 2))
        if not np.isfinite(loss):
            raise RuntimeError('non-finite training loss %r' % loss)
    return np.array(rates), np.array(peaks)


def inference_rate(net, images, repeats):
    net.predict(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.predict(images)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--widths', default=None, help='comma-separated stage widths (default: the classifier\'s)')
    parser.add_argument('--resolution', type=int, default=64, help='patch size (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=64, help='minibatch (default: %(default)s)')
    parser.add_argument('--quick', action='store_true', help='fewer and shorter repeats (a rough number quickly)')
    args = parser.parse_args(argv)
    repeats, seconds, warmup = (3, 0.5, 3) if args.quick else (7, 2.0, 5)

    import classifier
    import tfcompat
    widths = tuple(int(w) for w in args.widths.split(',')) if args.widths else classifier.DEFAULT_WIDTHS
    classes = 3
    flops = classifier.training_flops(args.resolution, classes, widths)
    print('TensorFlow %s, Python %s, %d CPU(s)' % (tfcompat.TF_VERSION, sys.version.split()[0], os.cpu_count() or 0))
    print('classifier %dx%d, widths %s: %d weights, %.1f M multiply-adds forward, %.1f MFLOP per patch per training '
          'step' % (args.resolution, args.resolution, ','.join(map(str, widths)),
                    classifier.num_weights(args.resolution, classes, widths),
                    classifier.multiply_adds(args.resolution, classes, widths) / 1e6, flops / 1e6))
    sys.stdout.flush()

    gemm = Gemm()
    net = classifier.Classifier(args.resolution, classes, widths)
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(args.batch, args.resolution, args.resolution)).astype(np.uint8)
    labels = rng.randint(0, classes, size=args.batch).astype(np.int32)
    weights = np.ones(args.batch, np.float32)
    rates, peaks = training_rates(net, gemm, (images, labels, weights), repeats, seconds, warmup)
    eval_images = rng.randint(0, 256, size=(1024, args.resolution, args.resolution)).astype(np.uint8)
    predict = inference_rate(net, eval_images, repeats)
    net.close()

    shares = rates * flops / 1e9 / peaks
    print('float32 GEMM (2048x2048 matmuls, same process, between the training repeats): median %.1f GFLOP/s '
          '(min %.1f, max %.1f)' % (np.median(peaks), peaks.min(), peaks.max()))
    print('training at batch %d: median %.0f patches/s (min %.0f, max %.0f) = %.1f GFLOP/s' % (
        args.batch, np.median(rates), rates.min(), rates.max(), np.median(rates) * flops / 1e9))
    print('share of the GEMM peak (each repeat against the GEMM run right after it): median %.0f%% (min %.0f%%, '
          'max %.0f%%)' % (100 * np.median(shares), 100 * shares.min(), 100 * shares.max()))
    print('inference (batches of %d): %.0f patches/s' % (classifier.EVAL_BATCH_SIZE, predict))


if __name__ == '__main__':
    main()
