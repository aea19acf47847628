"""Throughput of the data paths: in-memory tensors against a torch Dataset (0, 1, 2 workers).

The same run (IMP, one particle, a conv model, mnist5k) is timed once per path, all in this one
process, so the figures are comparable ratios. Two settings:
  * plain:     the Dataset serves the very tensors of the in-memory dataset (pure pipeline cost);
  * transform: a random crop (padding 2) and horizontal flip in the Dataset's __getitem__, one
               sample at a time as torchvision would, against Config.augment (the same crop and
               flip, batched in the core) on the in-memory path;
  * folder:    the digits written as PNG files in an image folder (made in a temporary folder),
               decoded once into memory (`stream=False`) against decoded batch by batch from disk
               (`stream=True`), the ImageNet-style case.
For each path: training images per second (over the whole run: training, batch-norm statistics
and evaluation included), time relative to the in-memory path, and the share of the run spent
waiting for training batches (the Dataset path's own clock around each batch request).

    python benchmarks/data_pipeline.py [--model conv4_small] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from swamp_ext import Config, datasets, run_imp


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class CropFlip(Pairs):
    """A torchvision-style random transform, sample by sample."""

    def __init__(self, x, y, pad=2):
        super().__init__(x, y)
        self.pad = pad

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        p = self.pad
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = padded[:, dy:dy + h, dx:dx + w]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, y


def write_folder(root, d):
    """mnist5k as PNG files: root/train/<digit>/<i>.png, root/val/<digit>/<i>.png (RGB)."""
    from PIL import Image

    for split, x, y in (("train", d.x_train, d.y_train), ("val", d.x_test, d.y_test)):
        lo, hi = float(x.min()), float(x.max())
        pixels = ((x[:, 0] - lo) / (hi - lo) * 255).round().to(torch.uint8).numpy()
        for i, (img, label) in enumerate(zip(pixels, y.tolist())):
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(np.stack([img] * 3, axis=-1)).save(os.path.join(folder, f"{i}.png"))


def timed(cfg, data, repeats):
    """(seconds, seconds waiting for training batches) of the fastest of `repeats` runs."""
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_imp(cfg, data, progress=False)
        s = time.perf_counter() - t0
        wait = data.stats.get("train_wait_s", 0.0) if hasattr(data, "stats") else 0.0
        best = (s, wait) if best is None or s < best[0] else best
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="conv4_small")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timings per path (the best is kept)")
    args = ap.parse_args()
    d = datasets.load("mnist5k")
    base = dict(model=args.model, method="imp", rounds=1, epochs=args.epochs, rewind_epochs=1,
                batch_size=args.batch_size, lr=0.05, seed=0)
    images = args.epochs * len(d.x_train)
    print(f"# {args.model} on mnist5k ({len(d.x_train)} training images), IMP one round of "
          f"{args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} threads; "
          f"best of {args.repeats}")
    print(f"{'setting':10} {'path':16} {'images/s':>9} {'x in-memory':>12} {'waiting':>8}")
    for setting, cls, extra in (("plain", Pairs, {}),
                                ("transform", CropFlip, dict(augment=True, crop_padding=2))):
        cfg_mem = Config(**base, **extra)
        cfg_ds = Config(**base)  # the Dataset does its own augmentation
        mem, _ = timed(cfg_mem, d, args.repeats)
        print(f"{setting:10} {'in-memory':16} {images / mem:9.0f} {1.0:12.2f} {'-':>8}")
        for workers in (0, 1, 2):
            data = datasets.from_torch(cls(d.x_train, d.y_train), Pairs(d.x_test, d.y_test),
                                       num_classes=10, num_workers=workers)
            s, waited = timed(cfg_ds, data, args.repeats)
            wait = waited / s
            print(f"{setting:10} {f'Dataset, {workers} workers':16} {images / s:9.0f} "
                  f"{s / mem:12.2f} {wait:8.0%}")
    with tempfile.TemporaryDirectory() as root:
        write_folder(root, d)
        cfg = Config(**base)
        cached = datasets.load("imagefolder", root=root, stream=False)
        mem, _ = timed(cfg, cached, args.repeats)
        print(f"{'folder':10} {'decoded, memory':16} {images / mem:9.0f} {1.0:12.2f} {'-':>8}")
        for workers in (0, 1, 2):
            data = datasets.load("imagefolder", root=root, stream=True, num_workers=workers)
            s, waited = timed(cfg, data, args.repeats)
            print(f"{'folder':10} {f'streamed, {workers} wk':16} {images / s:9.0f} "
                  f"{s / mem:12.2f} {waited / s:8.0%}")


if __name__ == "__main__":
    main()
