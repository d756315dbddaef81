"""Shared test set-up: the project root on sys.path and helpers to run the command-line scripts for real."""
import contextlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, 'tests')
# The project root (for `nodules` and the scripts), and every folder of tests: test modules share builders of
# test data (published-style pickles, forged TFRecords) by importing each other by name.
for folder in [ROOT] + sorted(os.path.join(TESTS, d) for d in os.listdir(TESTS)
                              if os.path.isdir(os.path.join(TESTS, d)) and not d.startswith(('.', '_'))):
    if folder not in sys.path:
        sys.path.insert(0, folder)


def pytest_configure(config):
    # `pytest -m "not slow"` is the inner loop (a couple of minutes); CI runs everything.
    config.addinivalue_line('markers', 'slow: takes more than about ten seconds (training runs, full-size networks)')
    # A shell starts background jobs (`pytest ... &`, nohup) with Ctrl-C ignored, and the scripts these tests start
    # would inherit that: the tests of what Ctrl-C does need Python's own handler, as in a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_script(script, *args, **kwargs):
    """Run one of the project's scripts in this interpreter, as its command line does: `cli.run(main, argv)`.

    Returns a CompletedProcess (exit status, stdout and stderr as text), so a test reads the same whether the
    script ran here or in its own process.  In-process is what keeps the tests fast (a fresh interpreter spends
    seconds importing TensorFlow); a few smoke tests per script use run_script_process instead, and so does
    anything that needs a real process: signals, resource limits, what an import loads, a timeout.
    """
    if kwargs:
        return run_script_process(script, *args, **kwargs)
    from nodules.gan import tfutil
    from nodules.util import cli
    argv = [str(a) for a in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    with _IN_PROCESS:  # one at a time: helpers that start commands from a thread pool share sys.stdout and the cwd
        cwd, program = os.getcwd(), sys.argv
        os.chdir(ROOT)
        sys.argv = [os.path.join(ROOT, script)] + argv  # argparse names the program after sys.argv[0]
        try:
            # A graph of its own, whose session is closed at the end, as a process of its own would have.
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), tfutil.separate_graph():
                try:
                    cli.run(load_script(script).main, argv)
                    status = 0
                except SystemExit as exit:
                    status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        finally:
            os.chdir(cwd)
            sys.argv = program
    return subprocess.CompletedProcess([script] + argv, status, stdout.getvalue(), stderr.getvalue())


_SCRIPTS = {}
_IN_PROCESS = threading.Lock()


def load_script(script):
    """The module of a script (their names start with a digit, so `import` cannot name them), loaded once."""
    if script not in _SCRIPTS:
        name = 'script_' + os.path.splitext(script)[0].replace('-', '_')
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[script] = module
    return _SCRIPTS[script]


def run_script_process(script, *args, **kwargs):
    """Run one of the project's scripts in a fresh interpreter; returns the CompletedProcess (text output)."""
    command = [sys.executable, os.path.join(ROOT, script)] + [str(a) for a in args]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          cwd=kwargs.pop('cwd', ROOT), **kwargs)


def assert_clean_failure(result, *fragments):
    """A bad input must give exit status != 0, no traceback, and an error that names the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def directory_contents(directory):
    """{relative path: bytes} of every file under `directory` (hidden ones too); directories map to None."""
    result = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            result[os.path.relpath(os.path.join(root, name), directory) + '/'] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                result[os.path.relpath(path, directory)] = f.read()
    return result


def read_records(path):
    """uint8 [N, C, H, W] read with TensorFlow's own TFRecord reader and decoded in the test."""
    import numpy as np
    from nodules.util.tfcompat import tf, tfrecord_iterator
    images = []
    for serialized in tfrecord_iterator(str(path)):
        features = tf.train.Example.FromString(serialized).features.feature
        shape = list(features['shape'].int64_list.value)
        images.append(np.frombuffer(features['data'].bytes_list.value[0], dtype=np.uint8).reshape(shape))
    return np.stack(images)


@pytest.fixture
def tf_session():
    """A fresh graph and session per test, so tests never see each other's variables."""
    from nodules.util.tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as session:
        yield session
