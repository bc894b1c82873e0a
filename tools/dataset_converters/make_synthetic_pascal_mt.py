"""Write a small synthetic PASCAL-Context multi-task dataset (PASCAL_MT layout).

Example::

    python tools/dataset_converters/make_synthetic_pascal_mt.py data/PASCAL_MT_synthetic \
        --num-train 24 --num-val 16 --size 128 128 --seed 0
"""
import argparse

from mmpeft.datasets.synthetic_pascal_mt import generate_synthetic_pascal_mt


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='dataset folder to create (the data_root of the dataset)')
    parser.add_argument('--num-train', type=int, default=24, help='number of training images')
    parser.add_argument('--num-val', type=int, default=16, help='number of validation images')
    parser.add_argument('--size', type=int, nargs=2, default=(128, 128), metavar=('H', 'W'),
                        help='image height and width')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a synthetic folder made with other arguments')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    root = generate_synthetic_pascal_mt(args.root, num_train=args.num_train,
                                        num_val=args.num_val, size=tuple(args.size),
                                        seed=args.seed, overwrite=args.overwrite)
    print(root)


if __name__ == '__main__':
    main()
