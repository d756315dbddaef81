"""What a seed and an image size may be: the one definition every script, setting and library check uses."""
import numbers

SEED_LIMIT = 2 ** 32  # NumPy's RandomState takes seeds 0 .. 2**32 - 1
SEED_RANGE = 'a whole number from 0 to 2**32 - 1'


def is_whole(value):
    """An integer (Python or NumPy), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_seed(value):
    return is_whole(value) and 0 <= value < SEED_LIMIT


def is_power_of_two(value, minimum=4, maximum=None):
    """Whether `value` is a whole power of two from `minimum` to `maximum` (no upper limit when None): the side of
    every image a progressive GAN or a pyramid of halvings works with."""
    return (is_whole(value) and value >= minimum and (maximum is None or value <= maximum)
            and value & (value - 1) == 0)
