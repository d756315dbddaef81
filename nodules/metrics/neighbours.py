"""Euclidean distances between two sets of vectors, a block of rows at a time, for the nearest-neighbour metrics.

prdc.py (precision, recall, density, coverage) and memorization.py (distance to the nearest training patch) both
need all distances between two sets; a full matrix of 10,000 x 10,000 float64 distances would take 800 MB, so the
query set is cut into blocks of rows whose distance matrix stays under `max_block_bytes`.

Inputs are any arrays [N, ...] (images [N, C, H, W] are flattened to [N, C*H*W]); distances are float64.
Plain NumPy (1.16 and later): runs on both stacks.
"""
import numpy as np

MAX_BLOCK_BYTES = 64 << 20  # one block of the distance matrix (float64) stays under this


def as_vectors(samples, name='samples'):
    """float64 [N, D] from any array [N, ...] of real numbers; refuses empty sets and NaN or infinite values."""
    x = np.asarray(samples)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError('%s: an empty set has no nearest neighbours' % name)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError('%s: expected real numbers, got %s' % (name, x.dtype))
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError('%s: contains NaN or infinite values' % name)
    return x


def check_pair(a, b, names=('a', 'b')):
    """Both sets as float64 vectors of one width (see as_vectors)."""
    a, b = as_vectors(a, names[0]), as_vectors(b, names[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError('%s has %d values per sample, %s has %d: distances need one feature space'
                         % (names[0], a.shape[1], names[1], b.shape[1]))
    return a, b


def block_rows(columns, max_block_bytes=MAX_BLOCK_BYTES):
    """Rows per block so that a [rows, columns] float64 matrix (and its temporaries) fits `max_block_bytes`."""
    return int(max(1, max_block_bytes // (3 * 8 * max(1, columns))))  # the matmul and the squares: ~3 copies


def distance_blocks(queries, reference, max_block_bytes=MAX_BLOCK_BYTES):
    """Yield (start, D) with D[i, j] = |queries[start + i] - reference[j]|, float64, block after block of rows.

    Both sets are float64 [N, D] (see check_pair).  Computed as |q|^2 + |r|^2 - 2 q.r on data centred at the
    reference mean: centring keeps the squares small, so the cancellation error stays ~1e-4 for 64x64 images on
    the 0..255 scale, and an exact copy comes out at (almost exactly) zero rather than at a rounding error of
    several grey levels.
    """
    centre = reference.mean(axis=0)
    reference = reference - centre
    reference_squares = np.einsum('ij,ij->i', reference, reference)
    rows = block_rows(len(reference), max_block_bytes)
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows] - centre
        squared = np.einsum('ij,ij->i', q, q)[:, None] + reference_squares[None, :] - 2.0 * q.dot(reference.T)
        yield start, np.sqrt(np.maximum(squared, 0.0))


def nearest(queries, reference, max_block_bytes=MAX_BLOCK_BYTES):
    """(distances [N], indices [N]): for each query, its distance to the nearest reference vector, and which."""
    queries, reference = check_pair(queries, reference, ('queries', 'reference'))
    distances = np.empty(len(queries))
    indices = np.empty(len(queries), dtype=np.int64)
    for start, block in distance_blocks(queries, reference, max_block_bytes):
        stop = start + len(block)
        indices[start:stop] = np.argmin(block, axis=1)
        distances[start:stop] = block[np.arange(len(block)), indices[start:stop]]
    return distances, indices


def kth_neighbour_radii(samples, k, max_block_bytes=MAX_BLOCK_BYTES):
    """float64 [N]: each sample's distance to its k-th nearest neighbour among the other samples of its set.

    The sample itself is left out by its index, not by its zero distance, so duplicates count as neighbours.
    """
    x = as_vectors(samples)
    if not 1 <= k < len(x):
        raise ValueError('the %d-th nearest neighbour needs at least %d samples, got %d' % (k, k + 1, len(x)))
    radii = np.empty(len(x))
    for start, block in distance_blocks(x, x, max_block_bytes):
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # not its own neighbour
        radii[start:start + len(block)] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii
