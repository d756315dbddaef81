"""The one place that decides which TensorFlow API the project calls `tf`.

Everything else does `from tfcompat import tf` and writes plain TF1 graph code.  On TensorFlow 2.x that is
`tensorflow.compat.v1` with v2 behaviour switched off; on the legacy TensorFlow 1.12 stack (which has no
`compat.v1`) it is the `tensorflow` module itself.  The few names that moved between the two live here too,
so no other module ever branches on versions.
"""
import contextlib
import os
import sys
import tempfile

# TensorFlow's C++ side logs a screenful of INFO lines on import; users asked for nodules, not CUDA probes.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@contextlib.contextmanager
def native_stderr_captured():
    """Hold back what native code writes to fd 2 while importing; replay it only if the import fails."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to hide
        yield
        return
    with tempfile.TemporaryFile(mode='w+b') as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode('utf-8', 'replace'))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


with native_stderr_captured():
    try:
        import tensorflow.compat.v1 as tf
        tf.logging.set_verbosity(tf.logging.ERROR)  # before the switch, which logs deprecation notices
        tf.disable_v2_behavior()
        IS_TF2 = True
    except ImportError:
        import tensorflow as tf
        IS_TF2 = False

tf.logging.set_verbosity(tf.logging.ERROR)

TF_VERSION = tf.VERSION if hasattr(tf, 'VERSION') else tf.__version__

# Names that differ between TF 1.12 and tf.compat.v1 on TF 2.x.
tfrecord_iterator = tf.python_io.tf_record_iterator
TFRecordWriter = tf.python_io.TFRecordWriter


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning switched off.

    On TF 2.x autotuning runs a background thread per iterator, and its shutdown can miss its wake-up: closing the
    session (at the end of training, or on Ctrl-C or SIGTERM) then waited forever in the iterator's destructor.  A
    pipeline of fixed buffer sizes has nothing to tune, so the thread is not started at all.
    """
    options = tf.data.Options()
    if hasattr(options, 'autotune'):
        options.autotune.enabled = False
    else:  # TF 1.12
        options.experimental_autotune = False
    return dataset.with_options(options)
