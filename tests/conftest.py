"""Shared test set-up: the project root on sys.path and helpers to run the command-line scripts for real."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def run_script(script, *args, **kwargs):
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


@pytest.fixture
def tf_session():
    """A fresh graph and session per test, so tests never see each other's variables."""
    from tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as session:
        yield session
