import pytest

from mmpeft.datasets.synthetic_pascal_mt import generate_synthetic_pascal_mt


@pytest.fixture(scope='session')
def pascal_mt_size():
    """(H, W) of the shared synthetic images: small and non-square, so H/W mix-ups show."""
    return (48, 64)


@pytest.fixture(scope='session')
def pascal_mt_root(tmp_path_factory, pascal_mt_size):
    """A synthetic PASCAL_MT folder shared by the tests that only read it."""
    return generate_synthetic_pascal_mt(str(tmp_path_factory.mktemp('data') / 'PASCAL_MT'),
                                        num_train=6, num_val=3, size=pascal_mt_size, seed=0)
