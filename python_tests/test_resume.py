"""Fault injection: runs killed, interrupted, resumed, corrupted and starved of disk space.

A child process trains with checkpoints; the parent kills it at chosen points and resumes. The
resumed result must be bitwise the one of a run never interrupted.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import swamp_ext
from swamp_ext import Config, datasets, run_imp

CFG = dict(model="conv4_small", method="swamp", particles=2, rounds=3, epochs=4, rewind_epochs=1,
           batch_size=64, lr=0.05, seed=11)

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import swamp_ext
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a full "disk" gives EFBIG, not a kill
    # Ctrl-C raises KeyboardInterrupt even where the tests run as a background job (whose
    # children start with SIGINT ignored, and Python then installs no handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = swamp_ext.Config(**json.loads(sys.argv[1]))
    data = swamp_ext.datasets.load("digits")
    if len(sys.argv) > 4:  # fault injection through the documented test seam
        import swamp_ext.testing
        swamp_ext.testing.crash_in_checkpoint_write(int(sys.argv[4]))
    pause_at = os.environ.get("SWAMP_TEST_PAUSE_AT")
    full_at = os.environ.get("SWAMP_TEST_FULL_AT")  # the kind of file that finds the disk full
    import contextlib, resource
    @contextlib.contextmanager
    def disk_full(limit=1000):  # a file may not grow past `limit` bytes: EFBIG
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
    def second_call_fails(module, name):  # the call for round 1 finds the disk full
        real, calls = getattr(module, name), []
        def wrapped(*a, **k):
            calls.append(1)
            with disk_full() if len(calls) == 2 else contextlib.nullcontext():
                return real(*a, **k)
        setattr(module, name, wrapped)
    import swamp_ext.running
    if full_at == "results.json":
        second_call_fails(swamp_ext.running, "write_json")
    elif full_at == "round file":
        second_call_fails(swamp_ext.running._rounds, "write_round")
    def report(line):
        print(line, flush=True)
        if pause_at and line.startswith(pause_at):
            # the parent acts here (a kill, a Ctrl-C): the child cannot outrun it; bounded, so
            # a signal that never arrives fails the test instead of hanging it
            for _ in range(2400):
                time.sleep(0.05)
            print("NO SIGNAL WITHIN 120 s", flush=True)
            os._exit(3)
    def prog(p):
        report(f"EPOCH {p.round} {p.particle} {p.epoch}")
        if full_at == "checkpoint" and (p.round, p.particle, p.epoch) == (1, 0, 2):
            # the next checkpoint does not fit
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    def rnd(r):
        report(f"ROUND {r.round}")
    every = int(os.environ.get("SWAMP_TEST_CHECKPOINT_EVERY", "1"))
    steps = int(os.environ.get("SWAMP_TEST_CHECKPOINT_STEPS", "0"))
    try:
        res = swamp_ext.run_imp(cfg, data, checkpoint_dir=sys.argv[2], checkpoint_every=every,
                                checkpoint_every_steps=steps, progress=prog, on_round=rnd)
        # results.json fits, the model does not
        with disk_full(200_000) if full_at == "model" else contextlib.nullcontext():
            res.save(sys.argv[2])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    except OSError as e:
        print(f"ERROR {type(e).__name__} OSError errno={e.errno} file={e.filename} : {e}",
              flush=True)
        sys.exit(1)
    except Exception as e:
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    torch.save({"masks": res.masks, "state": res.state_dict(),
                "rounds": [(r.test_acc, r.test_nll, r.ensemble_acc, r.ensemble_nll, r.particle_nll,
                            r.sparsity, r.train_loss, r.layer_density) for r in res.rounds]},
               sys.argv[3])
    print("DONE", flush=True)
    """
)


def child_cmd(tmp_path, cfg, ckpt, out, crash_in_write=None):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    extra = [] if crash_in_write is None else [str(crash_in_write)]
    return [sys.executable, str(script), json.dumps(cfg), str(ckpt), str(out)] + extra


def child_env(**extra):
    # the parent's thread count: the child's runs compare bitwise with the parent's
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env.update(extra)
    return env


def run_child(tmp_path, cfg, ckpt, out, kill_at=None, sig=signal.SIGKILL, env=None, limit=None,
              crash_in_write=None):
    """Runs the child; with kill_at, sends `sig` when a line starting with it is printed."""
    pre = None
    if limit is not None:
        def pre():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = dict(env or child_env())
    if kill_at is not None:  # the child waits at that line until the signal arrives
        env["SWAMP_TEST_PAUSE_AT"] = kill_at
    p = subprocess.Popen(child_cmd(tmp_path, cfg, ckpt, out, crash_in_write),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=tmp_path, preexec_fn=pre)
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip())
        if kill_at is not None and line.startswith(kill_at):
            p.send_signal(sig)
            kill_at = None
    p.wait(timeout=600)
    return p.returncode, lines


def load(path):
    return torch.load(path, weights_only=True)


def assert_same(a, b):
    assert a["rounds"] == b["rounds"]
    assert a["masks"].keys() == b["masks"].keys()
    for k in a["masks"]:
        assert torch.equal(a["masks"][k], b["masks"][k]), k
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k


def uninterrupted(tmp_path_factory, cfg):
    """What the child saves for `cfg` run once, never interrupted: the reference of a resume."""
    d = tmp_path_factory.mktemp("ref")
    rc, lines = run_child(d, cfg, d / "ckpt", d / "ref.pt")
    assert rc == 0, lines
    return load(d / "ref.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return uninterrupted(tmp_path_factory, CFG)


def test_checkpointing_does_not_change_the_result(reference):
    res = run_imp(Config(**CFG), datasets.load("digits"), progress=False)
    got = {"masks": res.masks, "state": res.state_dict(),
           "rounds": [(r.test_acc, r.test_nll, r.ensemble_acc, r.ensemble_nll, r.particle_nll,
                       r.sparsity, r.train_loss, r.layer_density) for r in res.rounds]}
    assert_same(got, reference)


@pytest.mark.parametrize("kill_at", [
    "EPOCH -1 0 1",   # while training the ticket
    "EPOCH 0 0 3",    # inside the first particle
    "EPOCH 1 1 2",    # inside the second particle of round 1
    "ROUND 0",        # between rounds
    "EPOCH 2 1 4",    # the very end
])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference, kill_at):
    ckpt = tmp_path / "ckpt"
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt", kill_at=kill_at)
    assert rc == -signal.SIGKILL, lines
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert_same(load(tmp_path / "out.pt"), reference)
    if kill_at.startswith("EPOCH 1"):
        # round 0 was not trained again
        assert not any(line.startswith("EPOCH 0 ") for line in lines)
    results = json.loads((ckpt / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]


@pytest.mark.parametrize("nth_write", [2, 5])
def test_crash_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, reference, nth_write):
    ckpt = tmp_path / "ckpt"
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt", crash_in_write=nth_write)
    assert rc == 86, lines  # died half-way through writing checkpoint.swamp.tmp
    assert (ckpt / "checkpoint.swamp.tmp").exists()
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert_same(load(tmp_path / "out.pt"), reference)


def test_ctrl_c_stops_promptly_after_saving_and_resumes(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt", kill_at="EPOCH 1 0 2",
                          sig=signal.SIGINT)
    assert rc == 130 and lines[-1] == "INTERRUPTED", lines
    # it stopped within a step or two of the signal: no further epoch was reported (particles
    # trained side by side report the same epoch together: particle 1's may come after it)
    last = lines[-2].split()
    assert last[:2] == ["EPOCH", "1"] and last[3] == "2", lines[-3:]
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert lines[0].startswith("EPOCH 1 0 "), "resumed inside the particle, not from its start"
    assert_same(load(tmp_path / "out.pt"), reference)


def test_full_disk_reports_the_file_and_keeps_the_last_checkpoint(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    # the first checkpoint (ticket + masks) fits, the larger mid-particle one does not
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt", limit=1_500_000)
    assert rc == 1, lines
    assert "cannot write checkpoint" in lines[-1] and "checkpoint.swamp" in lines[-1], lines[-1]
    assert "disk full" in lines[-1]
    assert (ckpt / "checkpoint.swamp").exists() and not (ckpt / "checkpoint.swamp.tmp").exists()
    rc, lines = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert_same(load(tmp_path / "out.pt"), reference)


@pytest.fixture
def partial_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, _ = run_child(tmp_path, CFG, ckpt, tmp_path / "out.pt", kill_at="ROUND 0")
    assert rc == -signal.SIGKILL
    return ckpt


def test_other_config_is_refused_naming_the_fields(partial_checkpoint):
    data = datasets.load("digits")
    other = Config(**dict(CFG, lr=0.07, particles=3))
    with pytest.raises(ValueError, match=r"different configuration:(.|\n)*particles: checkpoint 2, "
                                         r"now 3(.|\n)*lr: checkpoint 0.05"):
        run_imp(other, data, checkpoint_dir=partial_checkpoint, progress=False)
    before = (partial_checkpoint / "checkpoint.swamp").read_bytes()
    with pytest.raises(ValueError, match="different data"):
        small = datasets.from_arrays(data.x_train[:500], data.y_train[:500], data.x_test,
                                     data.y_test, num_classes=10, name="digits")
        run_imp(Config(**CFG), small, checkpoint_dir=partial_checkpoint, progress=False)
    with pytest.raises(ValueError, match="different data"):
        perm = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))
        shuffled = datasets.from_arrays(data.x_train[perm], data.y_train[perm], data.x_test,
                                        data.y_test, num_classes=10, name="digits")
        run_imp(Config(**CFG), shuffled, checkpoint_dir=partial_checkpoint, progress=False)
    assert (partial_checkpoint / "checkpoint.swamp").read_bytes() == before  # untouched
    res = run_imp(Config(**dict(CFG, rounds=1)), data, checkpoint_dir=partial_checkpoint,
                  progress=False, fresh=True)
    assert len(res.rounds) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_checkpoint_is_detected_and_never_loaded(partial_checkpoint, damage):
    path = partial_checkpoint / "checkpoint.swamp"
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncate":
        raw = raw[: len(raw) - 1000]
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="checksum|truncated|length") as err:
        run_imp(Config(**CFG), datasets.load("digits"), checkpoint_dir=partial_checkpoint,
                progress=False)
    assert "checkpoint.swamp" in str(err.value)
    assert path.read_bytes() == bytes(raw)


def test_extending_a_finished_run_equals_running_longer(tmp_path):
    data = datasets.load("digits")
    cfg = dict(CFG, model="lenet_300_100", rounds=2)
    run_imp(Config(**cfg), data, checkpoint_dir=tmp_path, progress=False)
    again = run_imp(Config(**cfg), data, checkpoint_dir=tmp_path, progress=False)
    assert len(again.rounds) == 2  # nothing retrained: the finished run comes back
    longer = run_imp(Config(**dict(cfg, rounds=3)), data, checkpoint_dir=tmp_path, progress=False)
    direct = run_imp(Config(**dict(cfg, rounds=3)), data, progress=False)
    assert [r.test_acc for r in longer.rounds] == [r.test_acc for r in direct.rounds]
    for k in direct.masks:
        assert torch.equal(longer.masks[k], direct.masks[k])
    with pytest.raises(ValueError, match="at least 3 rounds"):
        run_imp(Config(**dict(cfg, rounds=1)), data, checkpoint_dir=tmp_path, progress=False)


def _fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# the line order in which the previous swamp_ext wrote a round record into a checkpoint (counts,
# then figures, then the per-particle and per-layer lines)
PREVIOUS_ROUND_ORDER = ["round", "particles", "remaining", "prunable", "skipped_steps", "processes",
                        "processes_per_particle", "sparsity", "sparsity_all", "test_acc",
                        "test_nll", "ensemble_acc", "ensemble_nll", "train_loss", "seconds",
                        "test_ece", "ensemble_ece", "particle_acc", "particle_nll", "layer"]


def test_a_checkpoint_of_the_previous_version_resumes(tmp_path):
    """The round records of a checkpoint written before the record's fields came from one list
    (another line order, its own check line) are read back: extending that run equals running
    longer."""
    data = datasets.load("digits")
    cfg = dict(CFG, model="lenet_300_100", rounds=2)
    run_imp(Config(**cfg), data, checkpoint_dir=tmp_path, progress=False)
    path = str(tmp_path / "checkpoint.swamp")
    tensors = swamp_ext._C.io.load_checkpoint_tensors(path)
    rewritten = 0
    for key in [k for k in tensors if k.startswith("result/")]:
        text = bytes(tensors[key].tolist()).decode()
        body = text[:text.rindex("\ncheck=")]
        lines = sorted(body.split("\n"), key=lambda ln: PREVIOUS_ROUND_ORDER.index(
            ln.split("=", 1)[0]))  # stable: the per-particle and per-layer lines keep their order
        old = "\n".join(lines)
        assert old != body  # the order did change
        old += f"\ncheck={_fnv1a(old.encode()):016x}"
        tensors[key] = torch.tensor(list(old.encode()), dtype=torch.uint8)
        rewritten += 1
    assert rewritten == 2
    swamp_ext._C.io.save_checkpoint_tensors(path, tensors)
    longer = run_imp(Config(**dict(cfg, rounds=3)), data, checkpoint_dir=tmp_path, progress=False)
    direct = run_imp(Config(**dict(cfg, rounds=3)), data, progress=False)
    assert [r.test_acc for r in longer.rounds] == [r.test_acc for r in direct.rounds]
    assert [r.layer_density for r in longer.rounds] == [r.layer_density for r in direct.rounds]
    for k in direct.masks:
        assert torch.equal(longer.masks[k], direct.masks[k])


def test_unwritable_checkpoint_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot write to checkpoint_dir .*cannot be created"):
        run_imp(Config(**CFG), datasets.load("digits"), checkpoint_dir=blocker / "sub",
                progress=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        run_imp(Config(**CFG), datasets.load("digits"), checkpoint_dir=tmp_path,
                checkpoint_every=-1, progress=False)


def test_divergence_keeps_completed_rounds(tmp_path):
    d = datasets.load("digits")
    data = datasets.from_arrays(d.x_train.clone(), d.y_train, d.x_test, d.y_test, num_classes=10)

    def poison(r):  # after round 0, make one training sample NaN: round 1 diverges
        if r.round == 0:
            data.x_train[:] = float("nan")

    cfg = Config(**dict(CFG, model="lenet_300_100"))
    with pytest.raises(swamp_ext.TrainingDivergedError, match=r"round 1, particle 0, step") as e:
        run_imp(cfg, data, checkpoint_dir=tmp_path, on_round=poison, progress=False)
    assert [r.round for r in e.value.rounds] == [0]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [0]


@pytest.mark.parametrize("mode, model", [("stacked", "conv4_small"), ("threads", "conv4_small"),
                                         ("threads", "lenet_300_100"),
                                         ("sequential", "lenet_300_100")])
def test_particle_group_with_sparse_layers_resumes_bitwise(tmp_path, mode, model):
    """A group of particles (stacked in one model, side by side in threads: one model per
    particle for conv4_small, one stacked model per lane for lenet_300_100, or one particle at a
    time on the sequential path, killed inside the second particle) with sparse linear
    layers, killed mid-training and resumed, gives the run never interrupted."""
    cfg = dict(CFG, model=model, particle_mode=mode, sparse_kernels="on", rounds=2,
               prune_ratio=0.6)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    rc, lines = run_child(ref_dir, cfg, ref_dir / "ckpt", ref_dir / "ref.pt")
    assert rc == 0, lines
    ckpt = tmp_path / "ckpt"
    rc, lines = run_child(tmp_path, cfg, ckpt, tmp_path / "out.pt", kill_at="EPOCH 1 1 2")
    assert rc == -signal.SIGKILL, lines
    rc, lines = run_child(tmp_path, cfg, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert not any(line.startswith("EPOCH 0 ") for line in lines)
    assert_same(load(tmp_path / "out.pt"), load(ref_dir / "ref.pt"))
