"""Any torch Dataset as the data of a run (datasets.from_torch): the same results as the in-memory
path, reproducible random transforms with and without worker processes, bitwise resume, streamed
image folders, and errors that name the problem and lose nothing."""

import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from swamp_ext import Config, datasets, formats, run_imp


class Pairs(torch.utils.data.Dataset):
    """The tensors of an in-memory split, one (x, label) pair at a time."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Noisy(Pairs):
    """Random transforms drawing from torch, Python's random and numpy's global generator; the
    draws of the main process are recorded (sample index -> noise)."""

    seen: dict

    def __init__(self, x, y):
        super().__init__(x, y)
        self.seen = {}

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        noise = torch.randn_like(x) * 0.1 + random.random() * 0.05 + float(np.random.rand()) * 0.05
        self.seen.setdefault(i, []).append(float(noise.sum()))
        return x + noise, y


class Faulty(Pairs):
    """Fails once `flag` exists: raises, or (kill=True) the process fetching dies by SIGKILL."""

    def __init__(self, x, y, flag, kill=False):
        super().__init__(x, y)
        self.flag, self.kill = flag, kill

    def __getitem__(self, i):
        if os.path.exists(self.flag):
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise ArithmeticError(f"bad sample {i} (injected)")
        return super().__getitem__(i)


def pairs(d, cls=Pairs, **kw):
    return cls(d.x_train, d.y_train, **kw), cls(d.x_test, d.y_test, **kw)


def summary(res):
    return ([(r.test_acc, r.test_nll, r.ensemble_acc, r.particle_acc, r.sparsity, r.train_loss)
             for r in res.rounds], res.masks, res.state_dict())


def assert_same(a, b):
    ra, ma, sa = summary(a)
    rb, mb, sb = summary(b)
    assert ra == rb
    assert ma.keys() == mb.keys() and sa.keys() == sb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


SMALL = dict(rounds=2, epochs=2, particles=2, batch_size=64, lr=0.05)


@pytest.mark.parametrize("model,extra", [
    ("lenet_300_100", {}),
    ("conv4_small", {"augment": True, "crop_padding": 1}),  # batch norm; crop / flip in the core
])
def test_a_torch_dataset_gives_the_in_memory_result(digits, model, extra):
    cfg = Config(model=model, seed=3, **SMALL, **extra)
    mem = run_imp(cfg, digits, progress=False)
    data = datasets.from_torch(*pairs(digits))
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    got = run_imp(cfg, data, progress=False)
    assert_same(mem, got)  # the same tensors in the same orders: bitwise the same run
    # every training, batch-norm and test batch was announced and fetched ahead; at most the
    # model check before training asks for a batch nobody announced
    steps = cfg.epochs * (len(digits.x_train) // cfg.batch_size)
    assert data.stats["train_batches"] >= steps * cfg.rounds
    assert data.stats["direct"] <= 1 and data.stats["announced"] > data.stats["train_batches"]
    assert got.dataset == "Pairs" and got.to_torch() is not None


def test_own_module_on_a_torch_dataset(digits):
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    cfg = Config(seed=1, **SMALL)
    mem = run_imp(cfg, digits, model=module, progress=False)
    got = run_imp(cfg, datasets.from_torch(*pairs(digits), num_workers=1), model=module,
                  progress=False)
    assert_same(mem, got)


def test_random_transforms_are_seeded_per_batch_whoever_fetches(digits):
    cfg = Config(model="lenet_300_100", seed=5, **SMALL)
    train, test = pairs(digits, Noisy)
    a = run_imp(cfg, datasets.from_torch(train, test), progress=False)
    # the transforms are random: a sample gets other noise in each epoch, round and particle
    assert all(len(set(v)) == len(v) for v in train.seen.values() if len(v) > 1)
    assert sum(len(v) > 1 for v in train.seen.values()) > len(train) // 2
    # ... and the global generators of this process are left as they were
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    run_imp(cfg, datasets.from_torch(*pairs(digits, Noisy)), progress=False)
    assert torch.equal(torch.rand(3), before)
    b = run_imp(cfg, datasets.from_torch(*pairs(digits, Noisy), num_workers=2), progress=False)
    assert_same(a, b)  # fetched in worker processes: the same batches
    c = run_imp(Config(model="lenet_300_100", seed=6, **SMALL),
                datasets.from_torch(*pairs(digits, Noisy), num_workers=2), progress=False)
    assert summary(c)[0] != summary(a)[0]


@pytest.mark.parametrize("kill,workers", [(False, 2), (True, 2), (False, 0)],
                         ids=["worker_raises", "worker_killed", "no_workers_raises"])
def test_a_failing_worker_stops_the_run_and_loses_nothing(digits, tmp_path, kill, workers):
    cfg = Config(model="lenet_300_100", seed=2, rounds=3, epochs=3, particles=2, batch_size=64,
                 lr=0.05, particle_mode="sequential")
    ref = run_imp(cfg, datasets.from_torch(*pairs(digits, Noisy), num_workers=workers),
                  progress=False)
    flag = tmp_path / "fail-now"

    def trip(p):
        if p.round == 1 and p.particle == 1 and p.epoch == 2:
            flag.touch()

    train, test = pairs(digits, Noisy)
    faulty = Faulty(train.x, train.y, str(flag), kill=kill)
    faulty.__class__ = type("FaultyNoisy", (Faulty, Noisy), {})
    faulty.seen = {}
    data = datasets.from_torch(faulty, test, num_workers=workers)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Exception) as err:
        run_imp(cfg, data, checkpoint_dir=ckpt, progress=trip)
    msg = str(err.value)
    if kill:
        assert "DataLoader worker" in msg and ("killed" in msg or "exited unexpectedly" in msg)
    else:
        assert isinstance(err.value, ArithmeticError) and "bad sample" in msg
        if workers:
            assert "Traceback" in msg  # the worker's own traceback
    assert (ckpt / "checkpoint.swamp").exists()
    flag.unlink()
    resumed = run_imp(cfg, datasets.from_torch(*pairs(digits, Noisy), num_workers=workers),
                      checkpoint_dir=ckpt, progress=False)
    assert_same(ref, resumed)  # resumed from the last checkpoint: bitwise the uninterrupted run


class Shape(Pairs):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x[:, :7] if i == 5 else x), y


class Label(Pairs):
    def __init__(self, x, y, bad):
        super().__init__(x, y)
        self.bad = bad

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x, (self.bad if i == 9 else y)


@pytest.mark.parametrize("make,err,match", [
    (lambda d: Shape(d.x_train, d.y_train), ValueError,
     r"Shape: training sample 5: the input is \(1, 7, 8\) float32, expected \(1, 8, 8\) "
     "float32 like the first training sample"),
    (lambda d: Label(d.x_train, d.y_train, 10), ValueError,
     r"training sample 9: label 10 is out of range \[0, 10\)"),
    (lambda d: Label(d.x_train, d.y_train, -1), ValueError, r"sample 9: label -1 is out of range"),
    (lambda d: Label(d.x_train, d.y_train, 2.0), TypeError,
     r"sample 9: the label must be an integer, got builtins.float"),
    (lambda d: Label(d.x_train, d.y_train, torch.tensor(1.0)), TypeError,
     r"sample 9: the label must be an integer, got a torch.float32 tensor"),
])
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_samples_are_named(digits, make, err, match, workers):
    data = datasets.from_torch(make(digits), Pairs(digits.x_test, digits.y_test),
                               num_classes=10, num_workers=workers)
    with pytest.raises(err, match=match):
        run_imp(Config(model="lenet_300_100", rounds=1, epochs=2, particles=1), data,
                progress=False)


class Parts(Pairs):
    """Structured inputs: the image and its row sums, as a dict (keyword arguments) or a tuple
    (positional), plus an integer tensor (a count) to show integer leaves pass untouched."""

    def __init__(self, x, y, as_dict):
        super().__init__(x, y)
        self.as_dict = as_dict

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        parts = (x, x.sum(dim=2).flatten(), torch.tensor([i % 3]))
        return (dict(zip(("image", "rows", "count"), parts)) if self.as_dict else parts), y


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 24)
        self.b = nn.Linear(8, 24)
        self.out = nn.Linear(24, 10)

    def forward(self, image, rows, count):
        assert count.dtype == torch.int64
        return self.out(torch.relu(self.a(image.flatten(1)) + self.b(rows)))


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "tuple"])
def test_tuple_and_dict_inputs_reach_the_module_as_arguments(digits, as_dict):
    data = datasets.from_torch(Parts(digits.x_train, digits.y_train, as_dict),
                               Parts(digits.x_test, digits.y_test, as_dict), num_workers=1)
    assert data.structured and data.input_shape == ()
    cfg = Config(seed=4, **SMALL)
    module = TwoInputs()
    a = run_imp(cfg, data, model=module, progress=False)
    assert a.rounds[-1].test_acc > 0.5 and a.rounds[-1].sparsity == pytest.approx(0.2, abs=1e-3)
    b = run_imp(cfg, datasets.from_torch(Parts(digits.x_train, digits.y_train, as_dict),
                                         Parts(digits.x_test, digits.y_test, as_dict)),
                model=module, progress=False)
    assert_same(a, b)  # in a worker process or here: the same run
    with pytest.raises(ValueError, match="gives tuple / dict inputs; the zoo models take one input "
                                         "tensor: pass your module"):
        run_imp(cfg, data, progress=False)
    with pytest.raises(ValueError, match=r"particle_mode 'stacked'.*its inputs are a tuple / dict"):
        run_imp(Config(particle_mode="stacked", **SMALL), data, model=TwoInputs(), progress=False)


def test_datasets_that_cannot_be_used_are_refused(digits):
    train, test = pairs(digits)
    with pytest.raises(ValueError, match=r"from_torch: test \(Pairs\) is empty"):
        datasets.from_torch(train, Pairs(digits.x_test[:0], digits.y_test[:0]))

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match="train must be a map-style dataset"):
        datasets.from_torch(Stream(), test)

    class Pil(Pairs):
        def __getitem__(self, i):
            from PIL import Image
            return Image.new("L", (8, 8)), 0

    with pytest.raises(TypeError, match=r"training sample 0: the input is PIL.Image.Image; "
                                        r"expected a tensor \(or a tuple / list / dict of "
                                        r"tensors\); add a transform"):
        datasets.from_torch(Pil(digits.x_train, digits.y_train), test)
    with pytest.raises(TypeError, match="wrap the training and test sets with "
                                        "swamp_ext.datasets.from_torch"):
        run_imp(Config(), train)
    with pytest.raises(ValueError, match="timeout applies to worker processes"):
        datasets.from_torch(train, test, timeout=5)
    with pytest.raises(ValueError, match="mean / std normalise uint8 images"):
        datasets.from_torch(train, test, mean=[0.5], std=[0.2])
    with pytest.raises(ValueError, match="bn_data has 3 samples, train has 1437"):
        datasets.from_torch(train, test, bn_data=Pairs(digits.x_train[:3], digits.y_train[:3]))


def test_number_of_classes_is_found(digits):
    train, test = pairs(digits)
    assert datasets.from_torch(train, test).num_classes == 10  # by a pass over the labels
    train.targets = [int(v) for v in digits.y_train]
    assert datasets.from_torch(train, test).num_classes == 10
    train.classes = [str(c) for c in range(12)]
    data = datasets.from_torch(train, test)
    assert data.num_classes == 12 and data.classes == tuple(str(c) for c in range(12))


def make_folder(root, n_train=12, n_test=4, size=(10, 10)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_test)):
        for c in ("cat", "dog", "eel"):
            os.makedirs(root / split / c, exist_ok=True)
            for k in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{k}.png")


def test_a_streamed_image_folder_equals_its_decoded_version(tmp_path):
    make_folder(tmp_path)
    cached = datasets.load("imagefolder", root=tmp_path)  # small: decoded and cached ('auto')
    assert isinstance(cached, datasets.Dataset)
    streamed = datasets.load("imagefolder", root=tmp_path, stream=True, num_workers=1)
    assert isinstance(streamed, datasets.TorchData)
    assert streamed.mean == cached.mean and streamed.std == cached.std
    assert streamed.classes == ("cat", "dog", "eel") and streamed.input_shape == (3, 10, 10)
    cfg = Config(model="conv2", rounds=2, epochs=2, particles=2, batch_size=8, lr=0.05)
    assert_same(run_imp(cfg, cached, progress=False), run_imp(cfg, streamed, progress=False))
    with pytest.raises(ValueError, match="stream must be 'auto', True or False"):
        datasets.load("imagefolder", root=tmp_path, stream="yes")


def test_a_streamed_folder_of_mixed_sizes_names_the_image(tmp_path):
    make_folder(tmp_path)
    from PIL import Image

    odd = tmp_path / "train" / "dog" / "odd.png"
    Image.new("RGB", (12, 10)).save(odd)
    with pytest.raises(ValueError, match=r"odd.png: image is 12x10 but earlier ones are 10x10; "
                                         "pass image_size=N"):
        datasets.load("imagefolder", root=tmp_path, stream=True)  # found by the statistics pass
    train, _ = formats.image_folder_files(str(tmp_path))
    data = datasets.from_torch(train, train, num_workers=1)  # ... or when it is fetched
    with pytest.raises(ValueError, match=r"odd.png: image is 12x10 but earlier ones are 10x10"):
        run_imp(Config(model="conv2", rounds=1, epochs=2, particles=1, batch_size=8), data,
                progress=False)
    resized = datasets.load("imagefolder", root=tmp_path, stream=True, image_size=8)
    assert resized.input_shape == (3, 8, 8)


def test_streaming_is_chosen_by_size(tmp_path, monkeypatch):
    make_folder(tmp_path)
    monkeypatch.setattr(datasets, "_memory_budget", lambda: 1000)  # 48 images of 300 bytes
    assert isinstance(datasets.load("imagefolder", root=tmp_path), datasets.TorchData)
    assert isinstance(datasets.load("imagefolder", root=tmp_path, stream=False), datasets.Dataset)
    assert formats.decoded_bytes(str(tmp_path)) == 48 * 300
