"""The IMP / SWAMP loop written the way a PyTorch user would: plain Python, DataLoader, hand masks
(gradients and weights multiplied by the mask), torch.optim.SGD, torch.optim.swa_utils for SWA and
batch-norm statistics, global magnitude pruning by concatenation + kthvalue. Same hyper-parameters
and architectures (swamp_ext.torch_models) as swamp_ext. This is the baseline every speed figure is
compared with; it is not part of the package.

    python benchmarks/reference_torch.py --model lenet_300_100 --method swamp --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, update_bn
from torch.utils.data import DataLoader, TensorDataset

import swamp_ext
from swamp_ext.torch_models import build


def prunable(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]


def lr_at(step: int, total: int, lr: float, swa_step: int, swa_lr: float) -> float:
    if swa_step >= 0 and step >= swa_step:
        return swa_lr
    end, floor = (swa_step, swa_lr) if swa_step >= 0 else (total, 0.0)
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, end))))


class Batches:
    """Shuffled batches of (x, y): a DataLoader on the CPU; on a GPU the data stays on the device
    and batches are indexed there (what a competent GPU user writes: no per-sample collation)."""

    def __init__(self, data, cfg, seed, device):
        self.device, self.bs = device, cfg.batch_size
        if device == "cpu":
            self.loader = DataLoader(TensorDataset(data.x_train, data.y_train),
                                     batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                     generator=torch.Generator().manual_seed(seed))
        else:
            self.loader = None
            self.x, self.y = data.x_train.to(device), data.y_train.to(device)
            self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.loader) if self.loader is not None else len(self.x) // self.bs

    def __iter__(self):
        if self.loader is not None:
            yield from self.loader
            return
        perm = torch.randperm(len(self.x), generator=self.gen).to(self.device)
        for i in range(len(self)):
            idx = perm[i * self.bs:(i + 1) * self.bs]
            yield self.x[idx], self.y[idx]


def inputs(x, data, cl):
    """uint8 images become float and normalised, as the engine does; optionally NHWC."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
        if data.mean:
            m = torch.tensor(data.mean, device=x.device).view(1, -1, 1, 1)
            s = torch.tensor(data.std, device=x.device).view(1, -1, 1, 1)
            x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if cl and x.dim() == 4 else x


def train(model, masks, data, cfg, start_step, seed, swa, end_epoch=None, device="cpu", amp=None,
          cl=False):
    loader = Batches(data, cfg, seed, device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    spe = len(loader)
    total = cfg.epochs * spe
    swa_epoch = min(cfg.epochs - 1, int(cfg.swa_start * cfg.epochs))
    swa_step = swa_epoch * spe if swa else -1
    avg = AveragedModel(model) if swa else None
    params = dict(model.named_parameters())
    step = start_step
    for epoch in range(start_step // spe, end_epoch or cfg.epochs):
        model.train()
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.lr, swa_step, cfg.swa_lr)
            opt.zero_grad()
            with torch.autocast(torch.device(device).type, dtype=amp or torch.float32,
                                enabled=amp is not None):
                loss = F.cross_entropy(model(inputs(x, data, cl)), y)
            loss.backward()
            for n, m in masks.items():
                params[n].grad.mul_(m)
            opt.step()
            with torch.no_grad():
                for n, m in masks.items():
                    params[n].mul_(m)
            step += 1
        if swa and epoch >= swa_epoch:
            avg.update_parameters(model)
    if swa:
        recompute_bn(avg, data, cfg, device, cl)
        return avg.module
    return model


def recompute_bn(model, data, cfg, device, cl):
    x = data.x_train.to(device)
    update_bn(([inputs(x[s:s + cfg.batch_size], data, cl)]
               for s in range(0, len(x), cfg.batch_size)), model)


def accuracy(model, data, device="cpu", cl=False) -> float:
    model.eval()
    with torch.no_grad():
        x, y = data.x_test.to(device), data.y_test.to(device)
        return (model(inputs(x, data, cl)).argmax(1) == y).double().mean().item()


def run(cfg: swamp_ext.Config, data, device: str = "cpu", amp=None,
        channels_last: bool = False) -> list[tuple[float, float, float]]:
    """(sparsity, accuracy, seconds) per round; ``amp``: an autocast dtype (bf16 / fp16) for the
    forward pass and the loss; ``channels_last``: NHWC model and inputs."""
    torch.manual_seed(cfg.seed)
    cl = channels_last
    model = build(cfg.model, data.input_shape, data.num_classes).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    names = prunable(model)
    masks = {n: torch.ones_like(p) for n, p in model.named_parameters() if n in names}
    spe = data.x_train.shape[0] // cfg.batch_size
    rewind = cfg.rewind_epochs * spe
    if rewind:
        train(model, {}, data, cfg, 0, cfg.seed, False, end_epoch=cfg.rewind_epochs,
              device=device, amp=amp, cl=cl)
    ticket = copy.deepcopy(model)
    out = []
    for r in range(cfg.rounds):
        t0 = time.perf_counter()
        n = cfg.particles if cfg.method == "swamp" else 1
        swa = cfg.method != "imp"
        sols = []
        for p in range(n):
            m = copy.deepcopy(ticket)
            with torch.no_grad():
                for name, param in m.named_parameters():
                    if name in masks:
                        param.mul_(masks[name])
            sols.append(train(m, masks, data, cfg, rewind, cfg.seed * 1000 + r * 10 + p, swa,
                              device=device, amp=amp, cl=cl))
        final = copy.deepcopy(sols[0])
        with torch.no_grad():
            for name, param in final.named_parameters():
                param.copy_(torch.stack([dict(s.named_parameters())[name] for s in sols]).mean(0))
        if n > 1 or swa:
            recompute_bn(final, data, cfg, device, cl)
        acc = accuracy(final, data, device, cl)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        out.append((1 - kept / total, acc, time.perf_counter() - t0))
        if r + 1 < cfg.rounds:  # global magnitude pruning, the usual way
            params = dict(final.named_parameters())
            scores = torch.cat([(params[k].detach().abs() * masks[k]).flatten() for k in masks])
            alive = torch.cat([masks[k].flatten() for k in masks]).bool()
            k = int(cfg.prune_ratio * int(alive.sum()) + 0.5)
            thr = scores[alive].kthvalue(k).values
            for name in masks:
                masks[name] = masks[name] * (params[name].detach().abs() > thr).float()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--method", default="swamp", choices=["imp", "imp_swa", "swamp"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--particles", type=int, default=4)
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    cfg = swamp_ext.Config(model=a.model, method=a.method, rounds=a.rounds, epochs=a.epochs,
                           particles=a.particles)
    for sp, acc, s in run(cfg, data):
        print(f"sparsity {sp:.4f}  acc {acc:.4f}  {s:.2f}s")


if __name__ == "__main__":
    main()
