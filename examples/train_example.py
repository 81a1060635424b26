"""Train the example model (a small CNN with a re-encoder named ``code``) and write what convert needs.

    python examples/train_example.py --dataset digits --out build/digits
    python examples/train_example.py --dataset fashion-mnist --data ../shared/data --out build/fmnist

Writes ``model.keras``, ``calib.npz`` and ``test.npz`` to ``--out``; the recipe is ``edgekit.demo.example_model``.
"""

from __future__ import annotations

import argparse

from edgekit.demo.example_model import DATASETS, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data", help="shared data folder (default $EDGEKIT_DATA or ../shared/data)")
    parser.add_argument("--out", required=True, help="output folder for model.keras, calib.npz, test.npz")
    parser.add_argument("--epochs", type=int, help="default: 40 for digits, 4 for fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in train(args.dataset, args.data, args.out, args.epochs, args.seed):
        print(path)


if __name__ == "__main__":
    main()
