"""The device tier: the behaviours that mean something on a GPU, each run on a device.

Every test takes ``device`` as a parameter: ``cuda`` (marked ``cuda``: ``pytest -m cuda``
selects them; skipped where torch sees no GPU) and ``cpu``. The cpu variants are the GPU check's
dry run (``scripts/gpu_check.sh --device cpu --quick``, run by test_gpu_check.py); the main test
suite skips them because the rest of the suite covers the CPU already.

Expected values never come from the device run itself: they are CPU float64 references
(forward passes, batch-norm statistics, pruning by sorting) or properties (exact sparsity,
zeros under masks, bitwise reruns, masks that only shrink).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_randomness import DropoutMlp
from test_torch_data import Pairs
from torch import nn

import swamp_ext
from swamp_ext import Config, analysis, datasets, models, ops, run_imp

HAS_CUDA = torch.cuda.is_available()
CPU_TIER = os.environ.get("SWAMP_DEVICE_TIER_CPU") == "1"

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(
        not CPU_TIER, reason="cpu variant of the device tier: runs in the GPU check's dry run "
        "(SWAMP_DEVICE_TIER_CPU=1)")),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not HAS_CUDA, reason="no CUDA device")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def exact_fp32():
    """Full fp32 on the GPU for agreement tests (TF32 convolutions round to 10 mantissa bits)."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def small(device, **kw):
    base = dict(model="lenet_300_100", method="swamp", particles=2, rounds=3, epochs=3,
                rewind_epochs=1, batch_size=64, lr=0.05, seed=3, device=device)
    if device == "cpu":  # the dry run: fewer epochs (the GPU runs the full size)
        base.update(epochs=2)
    base.update(kw)
    return Config(**base)


def run(cfg, data, **kw):
    return run_imp(cfg, data, progress=False, **kw)


def same_run(a, b):
    assert len(a.rounds) == len(b.rounds)
    for ra, rb in zip(a.rounds, b.rounds):
        assert (ra.test_acc, ra.test_nll, ra.particle_nll, ra.train_loss, ra.skipped_steps) == \
            (rb.test_acc, rb.test_nll, rb.particle_nll, rb.train_loss, rb.skipped_steps)
    for k in a.masks:
        assert torch.equal(a.masks[k], b.masks[k]), k
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def images(n, seed, channels=3, size=12):
    """uint8 images whose class (of 4) is the brightest of four quadrants: learnable, CIFAR-like."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    h = size // 2
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 2)
        x[i, :, r * h:(r + 1) * h, q * h:(q + 1) * h] += 120
    return x, y


@pytest.fixture(scope="module")
def uint8_data():
    xtr, ytr = images(512, 1)
    xte, yte = images(256, 2)
    return datasets.from_arrays(xtr, ytr, xte, yte, num_classes=4, name="quadrants")


# ---- the engine ---------------------------------------------------------------------------------
def test_run_is_exactly_sparse_zero_under_masks_and_learns(device, digits):
    res = run(small(device, rounds=4), digits)
    total = res.rounds[0].prunable
    remaining = total
    for r in res.rounds:
        assert r.remaining == remaining and r.sparsity == 1 - remaining / total
        remaining -= ops.prune_count(0.2, remaining)
    state = res.state_dict()
    for name, m in res.masks.items():
        assert m.device.type == "cpu" and m.dtype == torch.bool
        assert torch.all(state[name][~m] == 0), name
    assert sum(int(m.sum()) for m in res.masks.values()) == res.rounds[-1].remaining
    assert res.rounds[-1].test_acc > 0.8


def test_deterministic_runs_are_bitwise_equal_and_seeds_differ(device, digits):
    cfg = small(device, model="conv4_small", deterministic=True, rounds=2)
    a, b = run(cfg, digits), run(cfg, digits)
    same_run(a, b)
    c = run(small(device, model="conv4_small", deterministic=True, rounds=2, seed=4), digits)
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)


def test_masks_hold_through_momentum_and_weight_decay(device, digits):
    seen = []
    cfg = small(device, model="conv4_small", momentum=0.9, nesterov=True, weight_decay=5e-3,
                rounds=3)
    res = run(cfg, digits, on_models=seen.append)
    prev = None
    for rm in seen:
        for name, m in rm.masks.items():
            for p in rm.particles + [rm.average]:
                assert torch.all(p[name].cpu()[~m.cpu()] == 0), (rm.round, name)
            if prev is not None:
                assert not (m.cpu() & ~prev[name]).any(), "a pruned weight came back"
        prev = {k: v.cpu() for k, v in rm.masks.items()}
    assert len(seen) == 3 and res.rounds[-1].sparsity > 0.3


@pytest.mark.parametrize("model", ["lenet_300_100", "conv4_small"])
def test_stacked_particles_agree_with_sequential(device, digits, exact_fp32, model):
    cfg = dict(model=model, rounds=2, epochs=2, particles=3)
    a = run(small(device, particle_mode="stacked", **cfg), digits)
    b = run(small(device, particle_mode="sequential", **cfg), digits)
    # float rounding differs between the paths and grows over the steps: close, not equal
    for ra, rb in zip(a.rounds, b.rounds):
        assert abs(ra.test_acc - rb.test_acc) <= 0.03
        assert ra.test_nll == pytest.approx(rb.test_nll, rel=0.1, abs=0.01)
    agree = sum(int((a.masks[n] == b.masks[n]).sum()) for n in a.masks)
    assert agree / sum(m.numel() for m in a.masks.values()) >= 0.98


def test_resume_after_an_interruption_is_bitwise(device, digits, tmp_path):
    cfg = small(device, model="conv4_small", deterministic=True, rounds=2, epochs=3)
    ref = run(cfg, digits)
    count = [0]

    def stop(p):
        count[0] += 1
        if count[0] == 4:  # inside round 0's second particle or later
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_imp(cfg, digits, progress=stop, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.swamp").is_file()
    same_run(ref, run(cfg, digits, checkpoint_dir=tmp_path))


def test_uint8_images_and_augmentation_on_the_device(device, uint8_data):
    cfg = small(device, model="conv4_small", augment=True, crop_padding=2, deterministic=True,
                rounds=2, epochs=4, lr=0.05)
    a, b = run(cfg, uint8_data), run(cfg, uint8_data)
    same_run(a, b)  # augmentation draws from the particles' generators, wherever it runs
    plain = run(small(device, model="conv4_small", deterministic=True, rounds=2, epochs=4),
                uint8_data)
    assert a.rounds[0].train_loss != plain.rounds[0].train_loss  # augmentation did something
    assert a.rounds[-1].test_acc > 0.35  # 4 classes (chance 0.25): it learns through it


def test_batchnorm_statistics_recomputed_on_the_device(device, digits):
    cfg = small(device, model="conv4", rounds=1, epochs=2)
    res = run(cfg, digits)
    state = res.state_dict()
    n_batches = digits.x_train.shape[0] // cfg.batch_size
    assert int(state["bn1.num_batches_tracked"]) == n_batches
    # the cumulative mean of per-batch means of conv1, recomputed on the CPU in float64
    x = digits.x_train.double()
    bias = state.get("conv1.bias")
    h = torch.nn.functional.conv2d(x, state["conv1.weight"].double(),
                                   None if bias is None else bias.double(), padding=1)
    means = [h[s:s + cfg.batch_size].mean(dim=(0, 2, 3))
             for s in range(0, n_batches * cfg.batch_size, cfg.batch_size)]
    ref = torch.stack(means).mean(0)
    assert torch.allclose(state["bn1.running_mean"].double(), ref, atol=1e-4, rtol=1e-4)


def test_the_result_is_on_the_cpu_and_its_torch_module_reproduces_the_accuracy(device, digits):
    res = run(small(device, model="conv4_small", rounds=2), digits)
    assert all(v.device.type == "cpu" for v in res.state_dict().values())
    module = res.to_torch()
    with torch.no_grad():
        acc = float((module(digits.x_test).argmax(1) == digits.y_test).double().mean())
    assert acc == pytest.approx(res.rounds[-1].test_acc, abs=2 / len(digits.y_test))


@pytest.mark.parametrize("sync", [1, 8])
def test_divergence_is_named_at_its_step_however_often_losses_are_read(device, digits, sync):
    cfg = small(device, rounds=3, epochs=2, lr=1e9, weight_decay=0.0, momentum=0.0,
                rewind_epochs=0)
    with pytest.raises(swamp_ext.TrainingDivergedError) as e:
        run(cfg, digits, loss_sync_every=sync)
    assert "step" in str(e.value)


def test_export_csr_of_a_device_run_rebuilds_the_weights(device, digits, tmp_path):
    res = run(small(device, rounds=3), digits)
    from swamp_ext import export

    export.export(res, tmp_path / "m.csr", fmt="csr")
    back = export.load_csr(tmp_path / "m.csr")
    state = res.state_dict()
    for name in res.masks:
        assert torch.equal(back[name], state[name]), name


# ---- your own module and data --------------------------------------------------------------------
class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 48), nn.Linear(48, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def test_own_module_stacked_with_vmap_agrees_with_sequential(device, digits, exact_fp32):
    torch.manual_seed(0)
    module = Mlp()
    a = run(small(device, particle_mode="stacked"), digits, model=module)
    b = run(small(device, particle_mode="sequential"), digits, model=module)
    for ra, rb in zip(a.rounds, b.rounds):
        assert ra.test_nll == pytest.approx(rb.test_nll, rel=1e-3)
    for n in a.masks:
        assert (a.masks[n] == b.masks[n]).double().mean() >= 0.995
    assert all(p.device.type == "cpu" for p in module.parameters())  # the module is untouched


def test_torch_dataset_with_workers_and_pinned_memory_feeds_the_device(device, digits):
    cfg = small(device, rounds=2, epochs=2, deterministic=True)
    mem = run(cfg, digits)
    data = datasets.from_torch(Pairs(digits.x_train, digits.y_train),
                               Pairs(digits.x_test, digits.y_test), num_workers=2,
                               pin_memory=device == "cuda")
    got = run(cfg, data)
    same_run(mem, got)  # the same samples in the same orders: the same run
    assert data.stats["train_batches"] >= cfg.rounds * cfg.epochs * (len(digits.x_train) // 64)


# ---- global magnitude pruning ------------------------------------------------------------------
def reference_masks(weights, masks, ratio):
    """Sort-based float64 reference: smallest |w| first, ties by (tensor, flat index)."""
    flat = torch.cat([w.detach().double().abs().flatten().cpu() for w in weights])
    alive = torch.cat([m.flatten().cpu() for m in masks]) if masks else \
        torch.ones_like(flat, dtype=torch.bool)
    k = ops.prune_count(ratio, int(alive.sum()))
    idx = torch.nonzero(alive).flatten()
    order = np.lexsort((idx.numpy(), flat[idx].numpy()))  # by |w|, then position
    keep = alive.clone()
    keep[idx[torch.from_numpy(order[:k])]] = False
    out, s = [], 0
    for w in weights:
        out.append(keep[s:s + w.numel()].view(w.shape))
        s += w.numel()
    return out


@pytest.mark.parametrize("case", ["random", "ties", "pruned_before", "many_tensors"])
def test_global_pruning_on_the_device_equals_the_reference(device, case):
    g = torch.Generator().manual_seed(7)
    shapes = [(64, 32), (10, 64), (3, 3, 8, 4)] if case != "many_tensors" else \
        [(int(n),) for n in torch.randint(1, 300, (40,), generator=g)]
    ws = [torch.randn(s, generator=g) for s in shapes]
    if case == "ties":
        ws = [torch.round(w * 4) / 4 for w in ws]  # many equal magnitudes
    masks = None
    if case == "pruned_before":
        masks = [torch.rand(s, generator=g) > 0.4 for s in shapes]
    want = reference_masks(ws, masks, 0.3)
    got = ops.global_magnitude_prune([w.to(device) for w in ws],
                                     None if masks is None else [m.to(device) for m in masks],
                                     0.3)
    for a, b in zip(got, want):
        assert a.device.type == device
        assert torch.equal(a.cpu(), b)


def test_inplace_global_pruning_on_the_device(device):
    g = torch.Generator().manual_seed(9)
    ws = [torch.randn(200, 50, generator=g), torch.randn(1000, generator=g)]
    masks = [torch.ones(w.shape, dtype=torch.bool) for w in ws]
    want = reference_masks(ws, masks, 0.5)
    dev_masks = [m.to(device) for m in masks]
    before, pruned, thr = ops.global_magnitude_prune_([w.to(device) for w in ws], dev_masks, 0.5)
    assert (before, pruned) == (11000, 5500)
    for a, b in zip(dev_masks, want):
        assert torch.equal(a.cpu(), b)
    kept = torch.cat([w[m].abs() for w, m in zip(ws, want)])
    assert float(kept.min()) >= thr


# ---- analyses ----------------------------------------------------------------------------------
def test_analyses_on_the_device_agree_with_the_cpu(device, digits, exact_fp32):
    res = run(small("cpu", model="conv4_small", rounds=2), digits, keep_particles=True)
    on_dev = analysis.barrier(res, digits, 0, points=5, device=device, train_samples=256)
    on_cpu = analysis.barrier(res, digits, 0, points=5, device="cpu", train_samples=256)
    for a, b in zip(on_dev, on_cpu):
        assert np.allclose(a.test_loss, b.test_loss, rtol=1e-4, atol=1e-5)
        assert np.allclose(a.test_acc, b.test_acc, atol=1.5 / len(digits.y_test))
    r = res.round(1)
    members, ens = analysis.ensemble_scores(res, digits, [r.state, r.state], device=device)
    assert members[0] == members[1]
    assert ens.acc == pytest.approx(members[0].acc) and ens.nll == pytest.approx(members[0].nll)
    assert ens.acc == pytest.approx(res.rounds[1].test_acc, abs=1.5 / len(digits.y_test))


def test_hessian_trace_on_the_device(device, digits):
    res = run(small("cpu", rounds=1), digits)
    t = analysis.hessian_trace(res, digits, 0, train_samples=256, min_samples=20,
                               max_samples=60, device=device, seed=1)
    c = analysis.hessian_trace(res, digits, 0, train_samples=256, min_samples=20,
                               max_samples=60, device="cpu", seed=1)
    assert t.dimension == c.dimension >= res.rounds[0].remaining  # unpruned weights + biases
    assert t.trace > 0 and abs(t.trace - c.trace) <= 4 * (t.std_error + c.std_error)


# ---- distributed ---------------------------------------------------------------------------------
def test_one_rank_with_a_cpu_and_cuda_backend(device, digits, tmp_path):
    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        cfg = small(device, rounds=2, epochs=2, deterministic=True)
        a = run(cfg, digits)  # a group of one is not spread
        b = run(cfg, digits, process_group=False)
        same_run(a, b)
    finally:
        dist.destroy_process_group()


_DP_JOB = r"""
import json, sys
import torch, torch.distributed as dist
import swamp_ext
from swamp_ext import distributed as spread

backend, device, where = sys.argv[1], sys.argv[2], sys.argv[3]
dist.init_process_group(backend)
if device == "cuda":
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
probe = torch.ones(4, device=device)
dist.all_reduce(probe)  # a backend that cannot put two ranks on one device fails here
digits = swamp_ext.datasets.load("digits")
out = {"probe": probe.tolist()}
for name, kw in (("imp", dict(model="lenet_300_100")),
                 ("sync_bn", dict(model="conv4_small", sync_batchnorm=True))):
    cfg = swamp_ext.Config(method="imp", rounds=2, epochs=2, seed=5, batch_size=64,
                           data_parallel="always", device=device, **kw)
    spread.gradient_sync_stats(reset=True)
    a = swamp_ext.run_imp(cfg, digits, progress=False)
    stats = spread.gradient_sync_stats(reset=True)
    b = swamp_ext.run_imp(cfg, digits, progress=False, process_group=False)
    out[name] = dict(
        masks=sum(int((a.masks[k] == b.masks[k]).sum()) for k in a.masks)
        / sum(m.numel() for m in a.masks.values()),
        acc=[[r.test_acc for r in a.rounds], [r.test_acc for r in b.rounds]],
        layout=[r.processes_per_particle for r in a.rounds], steps=stats["steps"],
        buckets=stats["buckets"])
with open(f"{where}/dp{dist.get_rank()}.json", "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def test_data_parallel_with_two_processes_on_one_device(device, tmp_path):
    """Two processes train each particle data-parallel on the one device: NCCL where its version
    lets two ranks share a GPU, otherwise gloo on the device's tensors (on the CPU, gloo)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(_DP_JOB)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    tried = []
    for backend in (["nccl", "gloo"] if device == "cuda" else ["gloo"]):
        job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              "--nproc_per_node=2", str(script), backend, device, str(tmp_path)],
                             capture_output=True, text=True, timeout=900, env=env)
        tried.append(f"{backend}: exit {job.returncode}\n{job.stderr[-2000:]}")
        if job.returncode == 0:
            break
    assert job.returncode == 0, "\n".join(tried)
    reps = [json.loads((tmp_path / f"dp{r}.json").read_text()) for r in range(2)]
    assert reps[0] == reps[1]  # every process ends with the same result
    rep = reps[0]
    print(f"\n{backend} on {device}: IMP masks {rep['imp']['masks']:.4f} equal, "
          f"sync_bn {rep['sync_bn']['masks']:.4f}")
    assert rep["probe"] == [2.0] * 4
    for name, masks in (("imp", 0.999), ("sync_bn", 0.98)):
        r = rep[name]
        assert r["layout"] == [2, 2], r
        assert r["steps"] > 0 and r["buckets"] >= r["steps"], r  # sent in buckets
        assert r["masks"] >= masks, r
        for x, y in zip(*r["acc"]):
            assert abs(x - y) <= 0.01, r


# ---- the zoo -----------------------------------------------------------------------------------
def zoo_shape(name):
    if name.startswith("lenet_300"):
        return (1, 28, 28)
    if name.startswith(("lenet5", "conv")):
        return (1, 28, 28) if name.startswith("lenet5") else (3, 32, 32)
    return (3, 64, 64) if name == "resnet18_imagenet" else (3, 32, 32)


@pytest.mark.parametrize("name", models.names())
def test_zoo_model_forward_on_the_device_equals_float64_and_trains(device, name, exact_fp32):
    shape = zoo_shape(name)
    state, prunable = models.create(name, shape, 10, seed=1)
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(2))
    want = models.forward(name, shape, 10, {k: v.double() for k, v in state.items()}, x.double())
    got = models.forward(name, shape, 10, state, x.to(device))
    assert got.device.type == device and got.dtype == torch.float32
    scale = float(want.abs().max())
    assert torch.allclose(got.cpu().double(), want, atol=1e-4 * scale + 1e-5, rtol=1e-4)
    assert models.train_throughput(name, shape, 10, batch_size=4, steps=1, device=device) > 0


@pytest.mark.parametrize("name", ["conv4_small", "resnet20", "wrn16_4", "vgg11"])
def test_stacked_particles_of_a_pruned_zoo_model_step_on_the_device(device, name):
    s = swamp_ext._C.models.train_step_seconds(name, [3, 32, 32], 10, batch_size=16,
                                               particles=4, stacked=True, sparsity=0.8,
                                               steps=2, repeats=1, device=device)
    assert 0 < s < 60


# ---- paths that exist on one kind of device only ------------------------------------------------
def test_the_threads_path_is_cpu_only_and_says_so(device, digits):
    cfg = dict(particle_mode="threads", rounds=1, epochs=2)
    if device == "cuda":
        with pytest.raises(ValueError, match="threads"):
            small(device, **cfg)
    else:
        assert run(small(device, **cfg), digits).rounds[0].particles == 2


def test_sparse_kernels_agree_with_the_dense_step_on_the_device(device, digits, exact_fp32):
    cfg = dict(rounds=3, epochs=2, sparse_density=1.0)
    a = run(small(device, sparse_kernels="on", **cfg), digits)
    b = run(small(device, sparse_kernels="off", **cfg), digits)
    for ra, rb in zip(a.rounds, b.rounds):
        assert ra.test_nll == pytest.approx(rb.test_nll, rel=1e-3)
    for n in a.masks:
        assert (a.masks[n] == b.masks[n]).double().mean() >= 0.995


def test_device_names_resolve_to_the_device_tensors_report(device, digits):
    cfg = dict(rounds=1, epochs=2)
    if device == "cuda":
        with pytest.raises(ValueError, match="does not exist"):
            run(small(f"cuda:{torch.cuda.device_count()}", **cfg), digits)
    a = run(small(f"{device}:0", **cfg), digits)  # an explicit index is the same device
    b = run(small(device, **cfg), digits)
    assert a.rounds[0].test_nll == pytest.approx(b.rounds[0].test_nll, rel=1e-4)


# ---- mixed precision ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
@pytest.mark.filterwarnings("ignore:precision='fp16' on a CPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_fp32_weights_and_exact_masks_on_the_device(device, digits,
                                                                          precision):
    # fp16 convolutions are emulated on CPUs (slow): the CPU dry run takes lenet_300_100 there
    model = "lenet_300_100" if device == "cpu" and precision == "fp16" else "conv4_small"
    res = run(small(device, model=model, precision=precision, rounds=3), digits)
    state = res.state_dict()
    for name, v in state.items():
        if v.is_floating_point():
            assert v.dtype == torch.float32 and torch.isfinite(v).all(), name
    for name, m in res.masks.items():
        assert torch.all(state[name][~m] == 0), name
    assert sum(int(m.sum()) for m in res.masks.values()) == res.rounds[-1].remaining
    assert res.rounds[-1].test_acc > 0.8
    if precision == "bf16":
        assert all(r.skipped_steps == 0 for r in res.rounds)


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
def test_channels_last_on_the_device_keeps_the_logical_order(device, digits):
    # bf16 + channels-last, as auto picks it (on a GPU: on), against the contiguous run: the
    # same masks up to float rounding, everything stored contiguous and exact
    cfg = dict(model="conv4_small", precision="bf16", rounds=2)
    auto = run(small(device, **cfg), digits)
    want = device == "cuda" or swamp_ext.precision.cpu_has_native_bf16()
    assert auto.channels_last is want
    on = auto if want else run(small(device, channels_last=True, **cfg), digits)
    off = run(small(device, channels_last=False, **cfg), digits)
    state = on.state_dict()
    for name, v in state.items():
        assert v.is_contiguous() and v.device.type == "cpu", name
    for name, m in on.masks.items():
        assert m.is_contiguous() and torch.all(state[name][~m] == 0), name
    same = sum(int((on.masks[k] == off.masks[k]).sum()) for k in on.masks)
    assert same / sum(m.numel() for m in on.masks.values()) >= 0.97
    assert on.rounds[-1].test_acc > 0.8


@pytest.mark.parametrize("mode", ["sequential", "stacked"])
def test_dropout_is_reproducible_on_the_device_whatever_the_callers_generators(device, digits,
                                                                               mode):
    torch.manual_seed(0)
    module = DropoutMlp()
    cfg = small(device, particle_mode=mode, rounds=2, deterministic=True)
    torch.manual_seed(1)
    a = run(cfg, digits, model=module)
    torch.manual_seed(2)
    if device == "cuda":
        torch.cuda.manual_seed(3)
        before = torch.cuda.get_rng_state()
    b = run(cfg, digits, model=module)
    if device == "cuda":
        assert torch.equal(torch.cuda.get_rng_state(), before)  # the caller's CUDA stream kept
    same_run(a, b)


# ---- sparse inference: 2:4 on the GPU (issue 41) ----------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_four_layers_give_the_dense_outputs_or_are_refused_by_name(device, dtype):
    from swamp_ext.inference import choices, sparsify

    g = torch.Generator().manual_seed(0)
    mlp = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                        nn.Linear(512, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        for layer in (mlp[0], mlp[2]):  # 2:4 by magnitude; mlp[4] unstructured
            layer.weight.mul_(ops.nm_prune([layer.weight], None, 2, 4)[0])
        mlp[4].weight.mul_(torch.rand(mlp[4].weight.shape, generator=g) < 0.3)
    if device == "cpu" or torch.cuda.get_device_capability() < (8, 0):
        with pytest.raises(ValueError, match="compute capability 8.0"):
            sparsify(mlp, sparse="2:4", device=device, dtype=dtype)
        return
    out = sparsify(mlp, sparse="2:4", device=device, dtype=dtype,
                   example_input=torch.zeros(1, 512), batch_sizes=(64, 1024))
    by = {c.name: c for c in choices(out)}
    assert not by["4"].sparse and "not 2:4" in by["4"].reason
    for name in ("0", "2"):  # converted, or kept dense with the reason (measured, refused)
        c = by[name]
        assert c.sparse or "dense kept" in c.reason or "refuses" in c.reason, c
        assert c.sparse == isinstance(out[int(name)].weight,
                                      torch.sparse.SparseSemiStructuredTensor)
    x = torch.randn(1024, 512, generator=g)
    ref = mlp.to(device, dtype)(x.to(device, dtype)).float()
    with torch.inference_mode():
        got = out(x.to(device, dtype)).float()
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)
