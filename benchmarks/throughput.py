"""Training throughput of every model: images per second of a full training step (forward,
backward, masked SGD) in the C++ core, at each model's usual input size, on random data.

    python benchmarks/throughput.py                 # CPU, batch 32, 3 timed steps per model
    python benchmarks/throughput.py --device cuda --batch-size 128 --steps 20

Divide a recipe's images per round (particles x epochs x training images) by the figure to see
what a round costs on this machine.
"""

from __future__ import annotations

import argparse

import torch

import swamp_ext

SHAPES = {  # the input each family is usually trained on
    "lenet_300_100": (1, 28, 28), "lenet5": (1, 28, 28), "conv2": (3, 32, 32),
    "conv4": (3, 32, 32), "conv4_small": (1, 28, 28), "conv6": (3, 32, 32),
    "resnet20": (3, 32, 32), "resnet32": (3, 32, 32), "resnet56": (3, 32, 32),
    "resnet18": (3, 32, 32), "resnet18_imagenet": (3, 64, 64), "vgg11": (3, 32, 32),
    "vgg13": (3, 32, 32), "vgg16": (3, 32, 32), "vgg19": (3, 32, 32), "wrn16_4": (3, 32, 32),
    "wrn28_2": (3, 32, 32), "wrn28_10": (3, 32, 32),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--models", default=",".join(SHAPES))
    a = p.parse_args()
    print(f"swamp_ext {swamp_ext.__version__}, torch {torch.__version__}, device {a.device}, "
          f"{torch.get_num_threads()} threads, batch {a.batch_size}, {a.steps} timed steps")
    print(f"{'model':<18} {'input':<12} {'params':>11} {'images/s':>10} {'CIFAR epoch':>12}")
    for name in a.models.split(","):
        shape = SHAPES[name]
        state, prunable = swamp_ext.models.create(name, shape, 10)
        params = sum(v.numel() for k, v in state.items() if "running" not in k
                     and "num_batches" not in k)
        ips = swamp_ext.models.train_throughput(name, shape, 10, a.batch_size, a.steps, a.device)
        epoch = 50000 / ips
        print(f"{name:<18} {'x'.join(map(str, shape)):<12} {params:>11,d} {ips:>10.1f} "
              f"{epoch:>10.0f} s", flush=True)


if __name__ == "__main__":
    main()
