"""Exact global magnitude pruning: counts, agreement with a brute-force sort, ties, bad input."""

import pytest
import torch

from swamp_ext import ops


def brute_force(weights, masks, ratio):
    """Reference: sort all alive entries by (|w|, global position) and drop the first k."""
    flat_w = torch.cat([w.detach().reshape(-1).double().abs() for w in weights])
    if masks is None:
        alive = torch.ones_like(flat_w, dtype=torch.bool)
    else:
        alive = torch.cat([m.reshape(-1) for m in masks])
    remaining = int(alive.sum())
    k = ops.prune_count(ratio, remaining)
    idx = torch.nonzero(alive).reshape(-1)
    # stable sort on |w| keeps the positional order among ties
    order = torch.sort(flat_w[idx], stable=True).indices
    keep = alive.clone()
    keep[idx[order[:k]]] = False
    out, start = [], 0
    for w in weights:
        out.append(keep[start : start + w.numel()].reshape(w.shape))
        start += w.numel()
    return out


def assert_masks_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == torch.bool and x.shape == y.shape
        assert torch.equal(x, y)


def count_kept(masks):
    return sum(int(m.sum()) for m in masks)


BACKENDS = ["native", "aten"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ratio", [0.0, 1e-6, 0.001, 0.2, 0.5, 0.9, 0.999])
def test_matches_brute_force_random(gen, backend, ratio):
    weights = [torch.randn(s, generator=gen) for s in [(64, 3, 3, 3), (128, 64), (10,), (7, 5)]]
    masks = [torch.rand(w.shape, generator=gen) > 0.3 for w in weights]
    got = ops.global_magnitude_prune(weights, masks, ratio, backend=backend)
    assert_masks_equal(got, brute_force(weights, masks, ratio))
    remaining = count_kept(masks)
    assert count_kept(got) == remaining - ops.prune_count(ratio, remaining)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_counts_over_rounds_and_masks_only_shrink(gen, backend):
    weights = [
        torch.randn(300, 784, generator=gen),
        torch.randn(100, 300, generator=gen),
        torch.randn(10, 100, generator=gen),
    ]
    total = sum(w.numel() for w in weights)
    masks = None
    remaining = total
    for _ in range(12):
        new = ops.global_magnitude_prune(weights, masks, 0.2, backend=backend)
        remaining -= ops.prune_count(0.2, remaining)
        assert count_kept(new) == remaining
        if masks is not None:
            for old, m in zip(masks, new):
                assert not (m & ~old).any(), "a pruned weight came back"
        masks = new
    assert remaining == count_kept(masks)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(gen, backend, dtype):
    weights = [
        torch.randn(50, 40, generator=gen).to(dtype),
        torch.randn(33, generator=gen).to(dtype),
    ]
    got = ops.global_magnitude_prune(weights, None, 0.37, backend=backend)
    assert_masks_equal(got, brute_force(weights, None, 0.37))


def test_mixed_dtypes_use_exact_order(gen):
    a = torch.tensor(
        [1.0 + 2**-40, 1.0], dtype=torch.float64
    )  # differ only below float32 precision
    b = torch.tensor([1.0], dtype=torch.float32)
    got = ops.global_magnitude_prune([a, b], None, 0.34)  # prune 1 of 3
    # |a[1]| == |b[0]| == 1.0 exactly; a[1] comes first in position order
    assert got[0].tolist() == [True, False] and got[1].tolist() == [True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_equal_weights_break_ties_by_position(backend):
    weights = [torch.full((10, 10), 0.5), torch.full((50,), -0.5), torch.full((3, 3), 0.5)]
    got = ops.global_magnitude_prune(weights, None, 0.5, backend=backend)
    total = 159
    k = ops.prune_count(0.5, total)
    flat = torch.cat([m.reshape(-1) for m in got])
    assert int((~flat).sum()) == k
    # the first k positions go
    assert not flat[:k].any() and flat[k:].all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zeros_negative_and_signed_zero(backend):
    w = [torch.tensor([0.0, -0.0, -3.0, 2.0, -1.0, 0.0, 5.0, -2.0])]
    got = ops.global_magnitude_prune(w, None, 0.5, backend=backend)  # prune 4
    assert got[0].tolist() == [False, False, True, True, False, False, True, True]
    assert_masks_equal(got, brute_force(w, None, 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinities_are_largest(backend):
    w = [torch.tensor([float("inf"), 1.0, float("-inf"), 2.0])]
    got = ops.global_magnitude_prune(w, None, 0.5, backend=backend)
    assert got[0].tolist() == [True, False, True, False]


def test_ratio_zero_and_tiny_ratio_keep_everything_alive(gen):
    weights = [torch.randn(100, generator=gen)]
    masks = [torch.rand(100, generator=gen) > 0.5]
    got = ops.global_magnitude_prune(weights, masks, 0.0)
    assert_masks_equal(got, masks)
    assert got[0] is not masks[0] and got[0].data_ptr() != masks[0].data_ptr()
    got = ops.global_magnitude_prune(weights, masks, 1e-9)  # rounds to 0
    assert_masks_equal(got, masks)


def test_tiny_ratio_on_many_weights_prunes_exact_count(gen):
    w = [torch.randn(2_000_000, generator=gen)]
    got = ops.global_magnitude_prune(w, None, 3e-6)  # 6 weights
    assert int((~got[0]).sum()) == 6
    smallest = torch.topk(w[0].abs(), 6, largest=False).indices
    assert not got[0][smallest].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_huge_tensor(gen, backend):
    # larger than one parallel grain and one ATen chunk of the kernels
    w = [torch.randn(17_000_003, generator=gen)]
    masks = [torch.rand(w[0].shape, generator=gen) > 0.1]
    got = ops.global_magnitude_prune(w, masks, 0.25, backend=backend)
    remaining = int(masks[0].sum())
    assert int(got[0].sum()) == remaining - ops.prune_count(0.25, remaining)
    # threshold property: every pruned-now entry is <= every kept entry
    now = masks[0] & ~got[0]
    assert w[0][now].abs().max() <= w[0][got[0]].abs().min()


def test_huge_tensor_with_ties_across_chunk_boundary():
    w = torch.ones(20_000_000)
    w[::7] = 0.5
    masks = ops.global_magnitude_prune([w], None, 0.4, backend="native")
    aten = ops.global_magnitude_prune([w], None, 0.4, backend="aten")
    assert_masks_equal(masks, aten)
    k = ops.prune_count(0.4, w.numel())
    assert int((~masks[0]).sum()) == k


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_tiny_tensors(gen, backend):
    weights = [
        torch.randn(int(s), generator=gen) for s in torch.randint(1, 6, (2000,), generator=gen)
    ]
    weights[5] = torch.zeros(3)
    got = ops.global_magnitude_prune(weights, None, 0.3, backend=backend)
    assert_masks_equal(got, brute_force(weights, None, 0.3))


def test_deterministic_and_inputs_untouched(gen):
    weights = [torch.randn(1000, generator=gen).round(decimals=1) for _ in range(5)]  # many ties
    masks = [torch.rand(1000, generator=gen) > 0.2 for _ in range(5)]
    w_copy = [w.clone() for w in weights]
    m_copy = [m.clone() for m in masks]
    a = ops.global_magnitude_prune(weights, masks, 0.45)
    b = ops.global_magnitude_prune(weights, masks, 0.45)
    assert_masks_equal(a, b)
    assert_masks_equal(a, brute_force(weights, masks, 0.45))
    assert all(torch.equal(x, y) for x, y in zip(weights, w_copy))
    assert_masks_equal(masks, m_copy)


def test_in_place_variant(gen):
    weights = [torch.randn(40, 30, generator=gen), torch.randn(30, generator=gen)]
    masks = [torch.ones(40, 30, dtype=torch.bool), torch.ones(30, dtype=torch.bool)]
    expected = ops.global_magnitude_prune(weights, masks, 0.3)
    remaining, pruned, threshold = ops.global_magnitude_prune_(weights, masks, 0.3)
    assert remaining == 1230 and pruned == ops.prune_count(0.3, 1230)
    assert_masks_equal(masks, expected)
    assert threshold == pytest.approx(
        max(float(w[~m].abs().max()) for w, m in zip(weights, masks) if (~m).any())
    )


def test_parameters_and_noncontiguous_inputs(gen):
    lin = torch.nn.Linear(20, 30)
    t = torch.randn(30, 20, generator=gen).t()  # non-contiguous
    got = ops.global_magnitude_prune([lin.weight, t], None, 0.5)
    assert_masks_equal(got, brute_force([lin.weight, t], None, 0.5))
    assert got[1].shape == t.shape


def test_nan_in_alive_weights_is_an_error_but_pruned_nan_is_ignored():
    w = torch.tensor([1.0, float("nan"), 3.0, 4.0])
    with pytest.raises(ValueError, match=r"weights\[0\] contains NaN"):
        ops.global_magnitude_prune([w], None, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        ops.global_magnitude_prune([w], None, 0.5, backend="aten")
    m = torch.tensor([True, False, True, True])
    got = ops.global_magnitude_prune([w], [m], 0.34)
    assert got[0].tolist() == [False, False, True, True]


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda w, m: ops.global_magnitude_prune(w, m, 1.0), ValueError, r"ratio.*\[0, 1\)"),
        (lambda w, m: ops.global_magnitude_prune(w, m, -0.1), ValueError, "ratio"),
        (lambda w, m: ops.global_magnitude_prune(w, m, float("nan")), ValueError, "ratio"),
        (lambda w, m: ops.global_magnitude_prune(w, m, "0.2"), TypeError, "ratio"),
        (lambda w, m: ops.global_magnitude_prune([], None, 0.2), ValueError, "empty"),
        (lambda w, m: ops.global_magnitude_prune(w[0], None, 0.2), TypeError, "list of tensors"),
        (lambda w, m: ops.global_magnitude_prune([w[0], 3], None, 0.2), TypeError, r"weights\[1\]"),
        (
            lambda w, m: ops.global_magnitude_prune(w, m[:1], 0.2),
            ValueError,
            "2 weights but 1 masks",
        ),
        (
            lambda w, m: ops.global_magnitude_prune(w, [m[0], m[0]], 0.2),
            ValueError,
            r"masks\[1\] has shape",
        ),
        (
            lambda w, m: ops.global_magnitude_prune(w, [m[0], m[1].float()], 0.2),
            TypeError,
            r"masks\[1\].*bool",
        ),
        (
            lambda w, m: ops.global_magnitude_prune([torch.arange(5)], None, 0.2),
            TypeError,
            r"weights\[0\].*float",
        ),
        (lambda w, m: ops.global_magnitude_prune(w, m, 0.2, backend="gpu"), ValueError, "backend"),
        (
            lambda w, m: ops.global_magnitude_prune_(w, [m[0], m[1].t()], 0.2),
            ValueError,
            "contiguous",
        ),
    ],
)
def test_bad_input(call, exc, pattern):
    w = [torch.randn(4, 5), torch.randn(5, 3)]
    m = [torch.ones(4, 5, dtype=torch.bool), torch.ones(5, 3, dtype=torch.bool)]
    with pytest.raises(exc, match=pattern):
        call(w, m)


def test_mismatched_devices_raise():
    w = [torch.randn(3), torch.randn(3, device="meta")]
    with pytest.raises(ValueError, match="is on meta"):
        ops.global_magnitude_prune(w, None, 0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(gen, dtype):
    weights = [
        torch.randn(s, generator=gen).to(dtype) for s in [(256, 128), (1000,), (3, 3, 16, 16)]
    ]
    masks = [torch.rand(w.shape, generator=gen) > 0.2 for w in weights]
    cpu = ops.global_magnitude_prune(weights, masks, 0.3)
    gpu = ops.global_magnitude_prune([w.cuda() for w in weights], [m.cuda() for m in masks], 0.3)
    assert all(g.is_cuda for g in gpu)
    assert_masks_equal([g.cpu() for g in gpu], cpu)
