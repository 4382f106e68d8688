#!/usr/bin/env python
"""Find CIFAR-10 ($CIFAR10_ROOT, else data/), download the official archive if it is missing,
check it, and say where it is. A problem is printed as one message with what to do."""
import sys

import helpers as H


def main() -> int:
    try:
        data = H.load_cifar10(verbose=False)
    except H.DataError as exc:
        print(f"CIFAR-10 is not ready: {exc}", file=sys.stderr)
        return 1
    print(f"CIFAR-10: {len(data.train):,} training and {len(data.test):,} test images in {data.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
