"""Dataset readers end to end on small files written here in each standard format."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

import swamp_ext
from swamp_ext import datasets


def _cifar_images(n, rng):
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    x[0, :1024] = 255  # image 0 is pure red: the red plane comes first
    x[0, 1024:] = 0
    return x


def write_cifar10(root, rng, per_batch=8, test=10, bad_label=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": _cifar_images(per_batch, rng), b"labels": labels}, f)
    labels = [int(v) for v in rng.integers(0, 10, test)]
    if bad_label:
        labels[3] = 10
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _cifar_images(test, rng), b"labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return folder


def test_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar10(tmp_path, rng)
    d = datasets.load("cifar10", root=tmp_path)
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (10, 3, 32, 32) and d.num_classes == 10
    assert torch.all(d.x_train[0, 0] == 255) and torch.all(d.x_train[0, 1:] == 0)  # RGB order
    assert d.y_train.dtype == torch.int64 and int(d.y_train.max()) < 10
    assert d.classes == tuple(f"c{i}" for i in range(10))
    assert len(d.mean) == 3 and len(d.std) == 3


def test_cifar10_errors(tmp_path):
    rng = np.random.default_rng(0)
    folder = write_cifar10(tmp_path, rng, bad_label=True)
    with pytest.raises(ValueError,
                       match=r"test_batch: 'labels' has labels in \[1, 10\], expected \[0, 9\]"):
        datasets.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        datasets.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3.*not a CIFAR python pickle"):
        datasets.load("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match="pass root="):
        datasets.load("cifar10")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.load("cifar10", root=tmp_path / "nope")


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", 30), ("test", 12)):
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": _cifar_images(n, rng),
                         b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                         b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)]}, f)
    d = datasets.load("cifar100", root=tmp_path)
    assert d.num_classes == 100 and d.x_train.shape == (30, 3, 32, 32)
    c = datasets.load("cifar100", root=tmp_path, label_mode="coarse")
    assert c.num_classes == 20 and int(c.y_train.max()) < 20
    with pytest.raises(TypeError, match="image_size"):
        datasets.load("cifar100", root=tmp_path, image_size=3)


def write_idx(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    dims = b"".join(struct.pack(">I", s) for s in arr.shape)
    header = struct.pack(">I", 0x0800 | arr.ndim) + dims
    raw = header + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx(tmp_path, name, gz):
    rng = np.random.default_rng(2)
    xtr = rng.integers(0, 256, (50, 28, 28))
    xtr[0] = 0
    xtr[0, 3, 5] = 200  # one lit pixel, row 3 column 5
    write_idx(tmp_path / "train-images-idx3-ubyte", xtr, gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 50), gz)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)), gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 20), gz)
    d = datasets.load(name, root=tmp_path)
    assert d.x_train.shape == (50, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert int(d.x_train[0, 0, 3, 5]) == 200 and int(d.x_train[0].sum()) == 200


def test_idx_errors(tmp_path):
    rng = np.random.default_rng(3)
    p = write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 5), False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)), False)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        datasets.load("mnist", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 5), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 4), False)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: 5 items, but "
                                         r".*train-labels-idx1-ubyte has 4"):
        datasets.load("mnist", root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 5), False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        datasets.load("mnist", root=tmp_path)
    p.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        datasets.load("mnist", root=tmp_path)


def _png(path, color, size=(12, 10)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_and_cache(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls, color in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", color)
    d = datasets.load("imagefolder", root=tmp_path)
    assert d.classes == ("blue", "red") and d.num_classes == 2
    assert d.x_train.shape == (6, 3, 10, 12) and d.x_train.dtype == torch.uint8
    red = d.x_train[d.y_train == 1]
    assert torch.all(red[:, 0] == 255) and torch.all(red[:, 2] == 0)
    assert list(tmp_path.glob(".swamp_cache_*.safetensors")), "decoded once into a cache"
    again = datasets.load("imagefolder", root=tmp_path)
    assert torch.equal(again.x_train, d.x_train)
    small = datasets.load("imagefolder", root=tmp_path, image_size=8)
    assert small.x_train.shape == (6, 3, 8, 8)


def test_image_folder_tiny_imagenet_layout_and_errors(tmp_path):
    for cls, color in (("n01", (0, 255, 0)), ("n02", (10, 10, 10))):
        for i in range(2):
            _png(tmp_path / "train" / cls / "images" / f"{cls}_{i}.JPEG", color)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", (0, 255, 0))
    _png(tmp_path / "val" / "images" / "val_1.JPEG", (10, 10, 10))
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t1\t1\n"
                                                          "val_1.JPEG\tn02\t0\t0\t1\t1\n")
    d = datasets.load("imagefolder", root=tmp_path)
    assert d.y_test.tolist() == [0, 1] and torch.all(d.x_test[0, 1] == 255)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\n")
    with pytest.raises(ValueError, match="val_annotations.txt:1"):
        datasets.load("imagefolder", root=tmp_path, image_size=4)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\nval_1.JPEG\tn02\n")
    (tmp_path / "train" / "n01" / "images" / "n01_0.JPEG").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="n01_0.JPEG: cannot decode"):
        datasets.load("imagefolder", root=tmp_path, image_size=5)


def test_uint8_images_train_end_to_end_with_augmentation(tmp_path):
    rng = np.random.default_rng(4)
    write_cifar10(tmp_path, rng, per_batch=20, test=20)
    d = datasets.load("cifar10", root=tmp_path)
    cfg = dict(model="conv2", method="swamp", particles=2, rounds=2, epochs=2, batch_size=25,
               augment=True, seed=3)
    a = swamp_ext.run_imp(swamp_ext.Config(**cfg), d, progress=False)
    b = swamp_ext.run_imp(swamp_ext.Config(**cfg), d, progress=False)
    c = swamp_ext.run_imp(swamp_ext.Config(**dict(cfg, augment=False)), d, progress=False)
    assert [r.test_nll for r in a.rounds] == [r.test_nll for r in b.rounds]  # seeded
    assert [r.test_nll for r in a.rounds] != [r.test_nll for r in c.rounds]
    assert a.rounds[1].sparsity == pytest.approx(0.2, abs=1e-4)


def test_input_pipeline_crop_flip_and_normalisation():
    prep = swamp_ext._C.ops.prepare_inputs
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    plain = prep(x, mean, std)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(plain, (x.float() / 255 - m) / s)
    # every augmented image is an 8x8 window of the zero-padded image, possibly mirrored
    out = prep(x, [], [], crop_padding=2, flip=True, seed=7)
    padded = torch.nn.functional.pad(x.float() / 255, (2, 2, 2, 2))
    shifts = set()
    for i in range(16):
        found = False
        for dy in range(5):
            for dx in range(5):
                win = padded[i, :, dy:dy + 8, dx:dx + 8]
                if torch.equal(out[i], win) or torch.equal(out[i], win.flip(2)):
                    found = True
                    shifts.add((dy, dx))
        assert found, i
    assert len(shifts) > 3  # random per sample
    assert torch.equal(out, prep(x, [], [], crop_padding=2, flip=True, seed=7))
    assert not torch.equal(out, prep(x, [], [], crop_padding=2, flip=True, seed=8))


def test_augment_needs_images():
    d = datasets.load("digits")
    flat = datasets.from_arrays(d.x_train.flatten(1), d.y_train, d.x_test.flatten(1), d.y_test)
    with pytest.raises(ValueError, match="augment needs image inputs"):
        swamp_ext.run_imp(swamp_ext.Config(rounds=1, epochs=2, augment=True), flat,
                          progress=False)


def test_dataset_names():
    assert {"mnist5k", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist",
            "imagefolder"} == set(datasets.names())


class _Exploit:
    """Unpickling this runs code (writes a marker file) unless the reader refuses globals."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("where", ["data", "labels", "top"])
def test_cifar_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, where):
    rng = np.random.default_rng(0)
    folder = write_cifar10(tmp_path, rng)
    marker = tmp_path / "pwned"
    payload = {b"data": _cifar_images(8, rng), b"labels": [0] * 8}
    if where == "top":
        payload = _Exploit(marker)
    else:
        payload[b"data" if where == "data" else b"labels"] = _Exploit(marker)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(ValueError, match=r"data_batch_3.*forbidden global builtins\.exec"):
        datasets.load("cifar10", root=tmp_path)
    assert not marker.exists()


def test_real_cifar_pickles_still_load_with_every_protocol(tmp_path):
    # numpy arrays pickled with protocols 2..5 (and the bytes of protocol 2) pass the reader
    rng = np.random.default_rng(1)
    folder = write_cifar10(tmp_path, rng)
    for protocol in (2, 3, 4, 5):
        with open(folder / "data_batch_2", "wb") as f:
            pickle.dump({b"data": _cifar_images(8, rng), b"labels": [1] * 8,
                         b"batch_label": b"training batch 2 of 5"}, f, protocol=protocol)
        d = datasets.load("cifar10", root=tmp_path)
        assert d.x_train.shape == (40, 3, 32, 32)


def test_image_cache_that_runs_code_is_never_executed(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / split / c / "x.png")
    first = datasets.load("imagefolder", root=tmp_path)
    caches = list(tmp_path.glob(".swamp_cache_*.safetensors"))
    assert len(caches) == 1
    marker = tmp_path / "pwned"
    torch.save({"x": _Exploit(marker)}, caches[0])  # a crafted cache in the dataset folder
    again = datasets.load("imagefolder", root=tmp_path)
    assert not marker.exists()
    assert torch.equal(first.x_train, again.x_train)
