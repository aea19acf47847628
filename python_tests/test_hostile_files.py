"""Damaged and hostile files: checkpoints and dataset files that must never crash, hang or lie.

Regression tests for each case seen in the field, then a fuzz test: a few hundred mutations of
checkpoints (with and without a valid checksum) and dataset files, each opened in a worker process
that the parent watches for signals and hangs (python_tests/fuzzing.py).
"""

import gzip
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import fuzzing
import numpy as np
import pytest
import torch

from swamp_ext import Config, datasets, models, run_imp
from swamp_ext.testing import read_checkpoint, reseal_checkpoint, write_checkpoint

SEQ = dict(model="lenet_300_100", method="swamp", particles=2, rounds=3, epochs=4,
           rewind_epochs=1, batch_size=64, lr=0.05, seed=5, swa_start=0.5,
           particle_mode="sequential")
STACKED = dict(SEQ, particle_mode="stacked", seed=6)
CONV = dict(SEQ, model="conv4_small", particle_mode="auto", seed=7)  # batch norm


class _Stop(Exception):
    pass


def _snapshots(cfg, folder, keep_finished):
    """Runs `cfg` with a checkpoint every epoch and keeps copies of chosen checkpoints:
    'mid' (round 2, a particle in training with SWA snapshots, earlier particles done),
    'between' (round 1 finished, round 2's masks pruned), 'finished' (the whole run)."""
    data = datasets.load("digits")
    ck = folder / "run"
    snaps = {}

    def keep(name):
        dst = folder / name
        dst.mkdir()
        shutil.copy(ck / "checkpoint.swamp", dst / "checkpoint.swamp")
        snaps[name] = dst

    def progress(p):
        if p.round == 2 and p.particle == p.particles - 1 and p.epoch == 4 and "mid" not in snaps:
            keep("mid")

    def on_round(r):
        if r.round == 1:
            keep("between")

    run_imp(Config(**cfg), data, checkpoint_dir=ck, checkpoint_every=1, progress=progress,
            on_round=on_round)
    if keep_finished:
        keep("finished")
    return snaps


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    base = tmp_path_factory.mktemp("snapshots")
    (base / "seq").mkdir()
    out = {("seq", k): v for k, v in _snapshots(SEQ, base / "seq", True).items()}
    for name, cfg in (("stacked", STACKED), ("conv", CONV)):
        (base / name).mkdir()
        out.update({(name, k): v for k, v in _snapshots(cfg, base / name, False).items()})
    return out


def _fresh(snapshots, tmp_path, which=("seq", "mid")):
    dst = tmp_path / "ck"
    shutil.copytree(snapshots[which], dst)
    return dst


def _read(folder):
    return read_checkpoint(str(folder / "checkpoint.swamp"))


def _first_mask(m):
    return next(k for k in sorted(m) if k.startswith("mask/"))


def _edit(folder, **changes):
    path = str(folder / "checkpoint.swamp")
    m = read_checkpoint(path)
    for k, v in changes.items():
        m[k.replace("__", "/")] = v
    write_checkpoint(path, m)
    return m


def _resume(folder, cfg=SEQ):
    return run_imp(Config(**cfg), datasets.load("digits"), checkpoint_dir=folder, progress=False)


# ---- the cases seen -------------------------------------------------------------------------
def test_particle_counter_past_the_particles_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    _edit(ck, meta__particles_done=torch.tensor(3))
    with pytest.raises(RuntimeError, match=r"checkpoint .*ck/checkpoint.swamp is damaged: "
                                           r"'meta/particles_done' is 3, outside \[0, 2\]"):
        _resume(ck)


@pytest.mark.parametrize("value", [-(2 ** 62), -1])
def test_negative_round_counter_is_refused(snapshots, tmp_path, value):
    ck = _fresh(snapshots, tmp_path)
    _edit(ck, meta__rounds_done=torch.tensor(value))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"damaged: 'meta/rounds_done' is -\d+, outside"):
        _resume(ck)
    assert time.monotonic() - t0 < 30


def test_nan_loss_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    _edit(ck, **{"done/0/loss": torch.tensor(float("nan"), dtype=torch.float64)})
    with pytest.raises(RuntimeError, match=r"'done/0/loss' is nan, not a finite value"):
        _resume(ck)


def test_revived_mask_entry_is_refused_against_the_round_records(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _read(ck)
    key = _first_mask(m)
    mask = m[key].clone().flatten()
    mask[(~mask).nonzero()[0]] = True
    _edit(ck, **{key: mask.view_as(m[key])})
    kept = sum(int(v.sum()) for k, v in m.items() if k.startswith("mask/"))
    with pytest.raises(RuntimeError, match=rf"'mask' keeps {kept + 1} weights where the round "
                                           rf"records give {kept}"):
        _resume(ck)


def test_swapped_mask_entries_are_refused_against_the_weights(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path, ("seq", "between"))
    m = _read(ck)
    key = _first_mask(m)
    mask = m[key].clone().flatten()
    w = m["final/" + key[5:]].flatten().abs()
    kept, pruned = mask.nonzero().flatten(), (~mask).nonzero().flatten()
    big = pruned[w[pruned].argmax()]  # the largest pruned weight back in, the smallest kept out
    small = kept[w[kept].argmin()]
    mask[big], mask[small] = True, False
    _edit(ck, **{key: mask.view_as(m[key])})
    with pytest.raises(RuntimeError, match="does not keep the largest weights"):
        _resume(ck)


def test_edited_round_record_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _read(ck)
    text = bytes(m["result/0"].tolist()).decode()
    acc = next(line for line in text.splitlines() if line.startswith("test_acc="))
    edited = text.replace(acc, "test_acc=0.99")
    _edit(ck, result__0=torch.tensor(list(edited.encode()), dtype=torch.uint8))
    with pytest.raises(RuntimeError, match=r"'result/0' does not match its check line"):
        _resume(ck)


def test_header_damage_with_a_valid_checksum_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    path = ck / "checkpoint.swamp"
    raw = bytearray(path.read_bytes())
    header = raw[8: 8 + int.from_bytes(raw[:8], "little")]
    at = header.index(b'"data_offsets":[') + 8 + len(b'"data_offsets":[')
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")  # an offset changed
    path.write_bytes(bytes(raw))
    reseal_checkpoint(str(path))
    with pytest.raises(RuntimeError, match=r"checkpoint .*checkpoint.swamp is damaged"):
        _resume(ck)


def test_non_utf8_text_gives_a_readable_message(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _read(ck)
    cfg = bytes(m["meta/config"].tolist()).replace(b"seed=5", b"seed=\xff\xfe")
    _edit(ck, meta__config=torch.tensor(list(cfg), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"seed: checkpoint \\xff\\xfe, now 5"):
        _resume(ck)


def test_unknown_and_missing_entries_are_named(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _edit(ck, junk__x=torch.zeros(2))
    with pytest.raises(RuntimeError, match=r"'junk/x' is not an entry this checkpoint can have"):
        _resume(ck)
    del m["junk/x"], m["cur/step"]
    write_checkpoint(str(ck / "checkpoint.swamp"), m)
    with pytest.raises(RuntimeError, match=r"'cur/step' is missing"):
        _resume(ck)


def test_missing_momentum_buffer_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _read(ck)
    del m["cur/momentum/0"]
    write_checkpoint(str(ck / "checkpoint.swamp"), m)
    with pytest.raises(RuntimeError, match=r"'cur/momentum/0' is missing"):
        _resume(ck)


def test_pruned_weight_made_nonzero_is_refused(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    m = _read(ck)
    key = _first_mask(m)
    w = m["done/0/" + key[5:]].clone()
    w.view(-1)[(~m[key].flatten()).nonzero()[0]] = 0.5
    _edit(ck, **{"done/0/" + key[5:]: w})
    with pytest.raises(RuntimeError, match=r"'done/0/.*' has nonzero weights where the mask"):
        _resume(ck)


def test_fifo_and_device_checkpoints_are_refused_at_once(snapshots, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    os.mkfifo(ck / "checkpoint.swamp")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"checkpoint.swamp is a FIFO \(named pipe\), not a "
                                           r"regular file"):
        _resume(ck)
    (ck / "checkpoint.swamp").unlink()
    os.symlink("/dev/zero", ck / "checkpoint.swamp")
    with pytest.raises(RuntimeError, match="is a character device, not a regular file"):
        _resume(ck)
    assert time.monotonic() - t0 < 20


def test_older_format_is_named(snapshots, tmp_path):
    ck = _fresh(snapshots, tmp_path)
    path = ck / "checkpoint.swamp"
    raw = bytearray(path.read_bytes())
    raw[-24:-16] = b"SWAMPCK1"
    path.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="earlier swamp_ext"):
        _resume(ck)


def test_untouched_snapshots_resume_to_the_uninterrupted_run(snapshots, tmp_path):
    direct = run_imp(Config(**SEQ), datasets.load("digits"), progress=False)
    for which in (("seq", "mid"), ("seq", "between"), ("seq", "finished")):
        res = _resume(_fresh(snapshots, tmp_path / "_".join(which), which))
        assert [r.test_acc for r in res.rounds] == [r.test_acc for r in direct.rounds], which
        for k in direct.masks:
            assert torch.equal(res.masks[k], direct.masks[k]), (which, k)


# ---- dataset files ----------------------------------------------------------------------------
def _idx(path, arr, gz=False, dims=None):
    arr = np.asarray(arr, dtype=np.uint8)
    dims = arr.shape if dims is None else dims
    body = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    body += arr.tobytes()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def _mnist(root, gz=True, n=(20, 10)):
    rng = np.random.default_rng(0)
    for prefix, k in (("train", n[0]), ("t10k", n[1])):
        _idx(root / f"{prefix}-images-idx3-ubyte{'.gz' if gz else ''}",
             rng.integers(0, 256, (k, 28, 28)), gz)
        _idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' if gz else ''}",
             rng.integers(0, 10, k), gz)


def test_idx_gzip_bomb_is_stopped_at_the_declared_size(tmp_path):
    _mnist(tmp_path)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">III", 20, 28, 28)
    with gzip.open(bomb, "wb") as f:  # 20 images declared, 256 MiB of zeros follow
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(256):
            f.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    def peak_mb(root):
        code = ("import resource, swamp_ext.datasets as d\n"
                f"try:\n    d.load('mnist', root={str(root)!r})\n"
                "except ValueError as e:\n    print('ERR', e)\n"
                "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1")).stdout
        return out, int(out.split("RSS ")[1]) / 1024

    out, bomb_mb = peak_mb(tmp_path)
    assert "train-images-idx3-ubyte.gz: more bytes follow" in out, out
    (tmp_path / "pristine").mkdir()
    _mnist(tmp_path / "pristine")
    _, base_mb = peak_mb(tmp_path / "pristine")
    assert bomb_mb < base_mb + 64, (bomb_mb, base_mb)  # nowhere near the 256 MiB it inflates to


def test_idx_damaged_streams_and_headers_name_the_file(tmp_path):
    _mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    raw[len(raw) // 2 + 1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: (broken gzip|header|more|"
                                         r"only)"):
        datasets.load("mnist", root=tmp_path)
    _idx(p, np.zeros(10 * 4, np.uint8), gz=True, dims=(10, 2 ** 31, 2 ** 31))  # 2^65 bytes
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: header says .* cannot "
                                         r"hold them"):
        datasets.load("mnist", root=tmp_path)
    _idx(p, np.zeros(0, np.uint8), gz=True, dims=(10, 0, 0))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: IDX header declares an "
                                         r"empty array"):
        datasets.load("mnist", root=tmp_path)
    _idx(p, np.zeros((10, 28), np.uint8), gz=True)
    with pytest.raises(ValueError, match="has 2 dimensions, expected 3"):
        datasets.load("mnist", root=tmp_path)
    os.remove(p)
    os.mkfifo(p)
    with pytest.raises(ValueError, match="is a FIFO, not a regular file"):
        datasets.load("mnist", root=tmp_path)


def _cifar(root, labels=None, meta=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        y = list(rng.integers(0, 10, 4)) if labels is None or name != "data_batch_2" else labels
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": y}, f)
    if meta is not None:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": meta}, f)
    return folder


@pytest.mark.parametrize("labels, match", [
    ([9.7, 1.0, 2.0, 3.0], "must hold integer class labels, got float64"),
    ([True, False, True, False], "must hold integer class labels, got bool"),
    ([1, 2, 3, 12], r"has labels in \[1, 12\], expected \[0, 9\]"),
    ([1, 2, 3], r"4 images but 'labels' has shape \[3\]"),
])
def test_cifar_labels_are_checked_and_name_the_file(tmp_path, labels, match):
    _cifar(tmp_path, labels=labels)
    with pytest.raises(ValueError, match="data_batch_2: .*" + match):
        datasets.load("cifar10", root=tmp_path)


@pytest.mark.parametrize("meta, match", [
    ([b"a", b"b", b"c"], "must list the 10 class names, got 3 names"),
    ("airplaneautomobile", "must list the 10 class names, got str"),
    ([b"\xff"] * 10, "not UTF-8"),
])
def test_cifar_class_names_are_checked(tmp_path, meta, match):
    _cifar(tmp_path, meta=meta)
    with pytest.raises(ValueError, match="batches.meta: .*" + match):
        datasets.load("cifar10", root=tmp_path)
    _cifar(tmp_path, meta=[f"c{i}".encode() for i in range(10)])
    assert datasets.load("cifar10", root=tmp_path).classes == tuple(f"c{i}" for i in range(10))


def test_image_folder_cache_is_reused_and_checked_against_the_folder(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image

    from swamp_ext import formats

    for split in ("train", "val"):
        for c, color in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (6, 6), color).save(tmp_path / split / c / f"{i}.png")
    first = datasets.load("imagefolder", root=tmp_path)
    decoded = []
    real = formats._decode
    monkeypatch.setattr(formats, "_decode", lambda paths, size: decoded.append(1) or
                        real(paths, size))
    again = datasets.load("imagefolder", root=tmp_path)
    assert not decoded, "the cache was not reused"
    assert torch.equal(again.x_train, first.x_train)
    # a file changed after the cache was made: decoded again, the new pixels are seen
    img = tmp_path / "train" / "a" / "0.png"
    Image.new("RGB", (6, 6), (1, 2, 3)).save(img)
    os.utime(img, ns=(time.time_ns() + 10 ** 9, time.time_ns() + 10 ** 9))
    changed = datasets.load("imagefolder", root=tmp_path)
    assert decoded and int(changed.x_train[0, 0, 0, 0]) == 1
    # a crafted cache holding only tensors, with other labels: not used
    decoded.clear()
    cache = next(tmp_path.glob(".swamp_cache_*.safetensors"))
    from swamp_ext import _C
    tensors, meta = _C.io.load_safetensors(str(cache))
    tensors["y_train"] = 1 - tensors["y_train"]
    _C.io.save_safetensors(str(cache), tensors, meta)
    fixed = datasets.load("imagefolder", root=tmp_path)
    assert decoded and torch.equal(fixed.y_train, changed.y_train)


# ---- models against the built-in datasets ---------------------------------------------------
@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_every_zoo_model_runs_on_builtin_data_or_is_refused_up_front(dataset):
    data = datasets.load(dataset)
    shape = tuple(data.x_train.shape[1:])
    x = data.x_test[:2]
    for name in models.names():
        try:
            state, _ = models.create(name, shape, data.num_classes)
        except ValueError as e:
            assert "needs images of at least" in str(e), (name, e)
            with pytest.raises(ValueError, match=f"{name} needs images of at least"):
                run_imp(Config(model=name, rounds=1, epochs=2, particles=1, method="imp"), data,
                        progress=False)
            continue
        out = models.forward(name, shape, data.num_classes, state, x)
        assert out.shape == (2, data.num_classes) and torch.isfinite(out).all(), name


# ---- the fuzz test ------------------------------------------------------------------------------
def _check_outcome(job, res, pristine):
    """'' when the job ended acceptably; else what went wrong."""
    out = res.get("outcome")
    if out in ("signal", "hang", "exit", "lost"):
        return f"{out}: {res}"
    if out == "error" and job.plain and res["type"] == "TrainingDivergedError":
        return ""  # a plain value changed so much that training diverges: said as such
    if out == "error":
        msg = res["message"]
        if res["type"] not in ("RuntimeError", "ValueError", "FileNotFoundError"):
            return f"raw {res['type']}: {msg}\n{res.get('where', '')}"
        if "INTERNAL ASSERT" in msg or "report a bug" in msg or not msg.strip():
            return f"raw message: {msg}"
        if job.kind == "checkpoint" and job.path not in msg:
            return f"the error does not name the checkpoint: {msg}"
        if job.kind == "dataset" and job.path not in msg:
            return f"the error does not name the file: {msg}"
        return ""
    if job.kind == "checkpoint" and not job.plain and res["digest"] != pristine:
        return "completed with a result other than the untouched checkpoint's"
    return ""


def test_fuzz_checkpoints_and_dataset_files(snapshots, tmp_path):
    rng = random.Random(20261122)
    jobs: list[fuzzing.Job] = []
    work = tmp_path / "jobs"
    work.mkdir()

    def new_dir(job_id):
        d = work / job_id
        d.mkdir()
        return d

    per_snapshot = {("seq", "mid"): 120, ("seq", "between"): 80, ("seq", "finished"): 60,
                    ("stacked", "mid"): 80, ("conv", "mid"): 60}
    configs = {"seq": SEQ, "stacked": STACKED, "conv": CONV}
    for (cfg_name, snap), budget in per_snapshot.items():
        cfg = configs[cfg_name]
        src = str(snapshots[(cfg_name, snap)] / "checkpoint.swamp")
        tag = f"{cfg_name}-{snap}"
        d = new_dir(f"{tag}-pristine")
        shutil.copy(src, d / "checkpoint.swamp")
        pristine = fuzzing.Job(f"{tag}-pristine", "checkpoint", str(d), "untouched", config=cfg,
                               family="checkpoint-untouched")
        jobs.append(pristine)
        muts = fuzzing.tensor_mutations(read_checkpoint(src), rng)
        rng.shuffle(muts)
        for k, (what, m, plain) in enumerate(muts[:budget]):
            d = new_dir(f"{tag}-t{k}")
            write_checkpoint(str(d / "checkpoint.swamp"), m)
            jobs.append(fuzzing.Job(d.name, "checkpoint", str(d), what, plain, pristine.id, cfg,
                                    family="checkpoint-entries"))
        for k, (what, raw, reseal, plain) in enumerate(
                fuzzing.byte_mutations(src, rng, budget // 3)):
            d = new_dir(f"{tag}-b{k}")
            (d / "checkpoint.swamp").write_bytes(raw)
            if reseal:
                reseal_checkpoint(str(d / "checkpoint.swamp"))
            jobs.append(fuzzing.Job(d.name, "checkpoint", str(d),
                                    what + (" (resealed)" if reseal else ""), plain and reseal,
                                    pristine.id, cfg,
                                    family="checkpoint-bytes" + ("-resealed" if reseal else "")))
    # dataset files: IDX (gzipped and raw) and CIFAR batches
    for kind in ("idx-gz", "idx-raw", "cifar"):
        src = tmp_path / f"src-{kind}"
        src.mkdir()
        if kind == "cifar":
            _cifar(src, meta=[f"c{i}".encode() for i in range(10)])
            files = sorted((src / "cifar-10-batches-py").iterdir())
        else:
            _mnist(src, gz=kind == "idx-gz")
            files = sorted(src.iterdir())
        for f in files:
            for k, (what, raw) in enumerate(fuzzing.file_mutations(f.read_bytes(), rng, 6)):
                d = work / f"{kind}-{f.name}-{k}"
                shutil.copytree(src, d)
                target = d / f.relative_to(src)
                target.write_bytes(raw)
                jobs.append(fuzzing.Job(d.name, "dataset", str(target), f"{f.name}: {what}",
                                        True, dataset="cifar10" if kind == "cifar" else "mnist",
                                        family=f"dataset-{kind}"))
                jobs[-1].path = str(d)  # the worker loads the folder; errors name the file in it
    results = fuzzing.run_jobs(jobs, str(tmp_path / "worker"), job_timeout=60)
    by_id = {j.id: j for j in jobs}
    problems = []
    counts: dict[str, dict[str, int]] = {}
    for j in jobs:
        res = results[j.id]
        c = counts.setdefault(j.family, {})
        outcome = res.get("outcome", "?") + ("-plain" if j.plain and j.kind == "checkpoint" else "")
        c[outcome] = c.get(outcome, 0) + 1
        if j.pristine == "" and j.kind == "checkpoint":
            assert res["outcome"] == "done", res
            continue
        pristine = results[by_id[j.pristine].id].get("digest") if j.pristine else None
        why = _check_outcome(j, res, pristine)
        if os.environ.get("SWAMP_FUZZ_VERBOSE") and res.get("outcome") == "done" and not j.plain:
            print("completed unchanged:", j.id, j.what)
        if why:
            problems.append(f"{j.id} [{j.what}]: {why}")
    summary = {"jobs": len(jobs), **counts}
    print("fuzz:", json.dumps(summary))
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert not problems, f"{len(problems)} of {len(jobs)} mutations misbehaved:\n" + \
        "\n".join(problems[:25])
    assert len(jobs) >= 300


def test_fuzz_harness_sees_signals_and_hangs(tmp_path):
    """The watcher itself: a worker killed by a signal and one that hangs are findings."""
    job = fuzzing.Job("x", "dataset", str(tmp_path), "probe", dataset="mnist")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    orig = fuzzing.WORKER
    try:
        fuzzing.WORKER = ("import json, os, signal, sys, time\n"
                          "job = json.load(open(sys.argv[1]))[0]\n"
                          "open(sys.argv[2], 'a').write(json.dumps({'start': job['id']}) + '\\n')\n"
                          "os.kill(os.getpid(), signal.SIGSEGV)\n")
        res = fuzzing.run_jobs([job], str(tmp_path / "w1"), env=env)
        assert res["x"]["outcome"] == "signal" and res["x"]["code"] == -signal.SIGSEGV
        fuzzing.WORKER = fuzzing.WORKER.replace("os.kill(os.getpid(), signal.SIGSEGV)",
                                                "time.sleep(60)")
        res = fuzzing.run_jobs([job], str(tmp_path / "w2"), job_timeout=1, env=env)
        assert res["x"]["outcome"] == "hang"
    finally:
        fuzzing.WORKER = orig
