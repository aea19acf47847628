"""What a shared cluster does to a run (issue 42): stop signals (SIGTERM, SIGUSR1) saved at a step
boundary and resumed bitwise on every particle path and with Dataset workers, checkpoints every N
steps resumed mid-epoch after a SIGKILL, a disk that fills at each kind of file, an interrupted
folder read by show / load_run, and a CLI whose expected errors are one line.

Every fault is injected at a known point (the run waits there, or the fault is armed by the
run's own callback): nothing depends on timing.
"""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from test_resume import assert_same as assert_same_saved
from test_resume import child_env, load, run_child, uninterrupted
from test_torch_data import Pairs, assert_same

import swamp_ext
from swamp_ext import Config, datasets, run_imp
from swamp_ext.errors import STOPPED_EXIT_STATUS
from swamp_ext.run_folder.progress import RunNotFinishedError, checkpoint_progress

SMALL = dict(model="lenet_300_100", method="swamp", particles=2, rounds=3, epochs=3,
             rewind_epochs=1, batch_size=64, lr=0.05, seed=5)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def stop_at(sig, round_, particle, epoch):
    """A progress callback that sends `sig` to this process at the end of that epoch."""
    def prog(p):
        if (p.round, p.particle, p.epoch) == (round_, particle, epoch):
            os.kill(os.getpid(), sig)
    return prog


# ---- stop signals on every particle path ------------------------------------------------------

@pytest.mark.parametrize("mode", ["sequential", "threads", "stacked"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_saves_and_the_same_call_resumes_bitwise(digits, tmp_path, mode, sig):
    cfg = Config(**SMALL, particle_mode=mode)
    ref = run_imp(cfg, digits, progress=False)
    before = signal.getsignal(sig)
    seen = []

    def prog(p):
        seen.append((p.round, p.particle, p.epoch))
        stop_at(sig, 1, 0, 2)(p)

    with pytest.raises(swamp_ext.RunStopped) as err:
        run_imp(cfg, digits, progress=prog, checkpoint_dir=tmp_path)
    e = err.value
    assert isinstance(e, SystemExit) and not isinstance(e, Exception)  # `except Exception` passes
    assert e.code == STOPPED_EXIT_STATUS == 75 and e.signal == sig
    assert e.signal_name == sig.name and e.folder == str(tmp_path)
    assert sig.name in str(e) and "resume" in str(e)
    assert signal.getsignal(sig) == before  # the caller's handler is back
    # it stopped at the next step boundary: no later epoch was reported (particles trained side
    # by side report an epoch together)
    assert max(seen) == (1, 1 if mode != "sequential" else 0, 2), seen[-3:]
    prog_ = checkpoint_progress(str(tmp_path))
    assert prog_.rounds_done == 1 and prog_.training >= 1 and prog_.step is not None
    resumed = run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path)
    assert_same(ref, resumed)


def test_stop_signals_can_be_chosen_or_turned_off(digits, tmp_path):
    cfg = Config(**dict(SMALL, rounds=1, epochs=2, method="imp"))
    # a signal not in the list keeps its own effect: here a handler of the caller's
    got = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
    try:
        res = run_imp(cfg, digits, progress=stop_at(signal.SIGUSR2, 0, 0, 2),
                      checkpoint_dir=tmp_path / "a")
        assert got == [signal.SIGUSR2] and len(res.rounds) == 1
        with pytest.raises(swamp_ext.RunStopped) as err:
            run_imp(cfg, digits, progress=stop_at(signal.SIGUSR2, 0, 0, 2),
                    checkpoint_dir=tmp_path / "b", stop_signals=["usr2"])
        assert err.value.signal_name == "SIGUSR2" and got == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, old)
    for bad, match in [("SIGKILL", "cannot be caught"), ("SIGINT", "Ctrl-C"),
                       ("SIGNOPE", "not a signal"), ([15, True], "not a signal")]:
        with pytest.raises(ValueError, match=f"stop_signals: .*{match}"):
            run_imp(cfg, digits, progress=False, stop_signals=bad)


def test_a_stop_without_a_folder_says_nothing_was_saved(digits):
    cfg = Config(**dict(SMALL, rounds=1, epochs=2, method="imp"))
    with pytest.raises(swamp_ext.RunStopped, match="nothing was saved") as err:
        run_imp(cfg, digits, progress=stop_at(signal.SIGTERM, 0, 0, 2))
    assert err.value.folder is None


# ---- Dataset feeders: the signal arrives mid-epoch, while a worker fetches --------------------

class SignalsOnce(Pairs):
    """Sends SIGTERM to the run's process (and to the fetching process: a scheduler signals the
    whole process group) at the first fetch once `trip` exists."""

    def __init__(self, x, y, trip, main_pid):
        super().__init__(x, y)
        self.trip, self.main_pid = trip, main_pid

    def __getitem__(self, i):
        if os.path.exists(self.trip):
            os.unlink(self.trip)
            os.kill(self.main_pid, signal.SIGTERM)
            if os.getpid() != self.main_pid:
                os.kill(os.getpid(), signal.SIGTERM)  # a worker: it must survive this
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_with_dataset_workers_resumes_bitwise(digits, tmp_path, workers):
    cfg = Config(**SMALL, particle_mode="sequential")
    test = Pairs(digits.x_test, digits.y_test)
    ref = run_imp(cfg, datasets.from_torch(Pairs(digits.x_train, digits.y_train), test,
                                           num_workers=workers), progress=False)
    trip = tmp_path / "trip"

    def arm(p):  # arms the dataset at the end of round 1, particle 0, epoch 2
        if (p.round, p.particle, p.epoch) == (1, 0, 2):
            trip.touch()

    train = SignalsOnce(digits.x_train, digits.y_train, str(trip), os.getpid())
    ckpt = tmp_path / "ckpt"
    with pytest.raises(swamp_ext.RunStopped):
        run_imp(cfg, datasets.from_torch(train, test, num_workers=workers), progress=arm,
                checkpoint_dir=ckpt)
    assert not trip.exists()  # the signal was sent from inside a fetch
    prog = checkpoint_progress(str(ckpt))
    assert prog.rounds_done == 1 and prog.particles_done == 0 and prog.training == 1
    # stopped inside epoch 3, a step or a few (the workers' prefetch) after the signal
    assert 2 * prog.steps_per_epoch < prog.step < 3 * prog.steps_per_epoch, prog
    resumed = run_imp(cfg, datasets.from_torch(Pairs(digits.x_train, digits.y_train), test,
                                               num_workers=workers),
                      progress=False, checkpoint_dir=ckpt)
    assert_same(ref, resumed)


# ---- checkpoints every N steps: a SIGKILL mid-epoch loses at most N steps -----------------------

CHILD_CFG = dict(SMALL, particle_mode="sequential")


@pytest.fixture(scope="module")
def child_reference(tmp_path_factory):
    return uninterrupted(tmp_path_factory, CHILD_CFG)


def test_step_checkpoints_resume_mid_epoch_after_sigkill(tmp_path, child_reference):
    ckpt = tmp_path / "ckpt"
    env = child_env(SWAMP_TEST_CHECKPOINT_EVERY="0", SWAMP_TEST_CHECKPOINT_STEPS="5")
    rc, lines = run_child(tmp_path, CHILD_CFG, ckpt, tmp_path / "out.pt", kill_at="EPOCH 1 0 3",
                          env=env)
    assert rc == -signal.SIGKILL, lines
    prog = checkpoint_progress(str(ckpt))
    # the last step checkpoint before the end of epoch 3 (every 5 steps from the rewind point,
    # the end of epoch 1), not an epoch end
    spe = prog.steps_per_epoch
    assert prog.rounds_done == 1 and prog.training == 1
    assert prog.step % spe != 0 and (prog.step - spe) % 5 == 0, prog
    assert 3 * spe - 5 < prog.step < 3 * spe, prog
    rc, lines = run_child(tmp_path, CHILD_CFG, ckpt, tmp_path / "out.pt", env=env)
    assert rc == 0, lines
    assert lines[0].startswith("EPOCH 1 0 3"), "resumed inside epoch 3, not from its start"
    assert_same_saved(load(tmp_path / "out.pt"), child_reference)


def test_checkpoint_every_steps_is_checked(digits):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="checkpoint_every_steps"):
            run_imp(Config(**SMALL), digits, checkpoint_every_steps=bad)


# ---- a disk that fills at each kind of file ---------------------------------------------------

@pytest.mark.parametrize("kind", ["checkpoint", "results.json", "round file", "model"])
def test_a_full_disk_at_each_kind_of_file(tmp_path, child_reference, kind):
    ckpt = tmp_path / "ckpt"
    env = child_env(SWAMP_TEST_FULL_AT=kind)
    rc, lines = run_child(tmp_path, CHILD_CFG, ckpt, tmp_path / "out.pt", env=env)
    assert rc == 1, lines
    err = next(line for line in lines if line.startswith("ERROR"))
    # an OSError subclass with errno and the file; the message names what was kept
    assert err.startswith(f"ERROR FileWriteError OSError errno={errno.EFBIG} "), err
    name = {"checkpoint": "checkpoint.swamp", "results.json": "results.json",
            "round file": "round_001.safetensors", "model": "model.safetensors"}[kind]
    assert f"file={ckpt / 'rounds' / name if kind == 'round file' else ckpt / name} " in err, err
    assert "disk full" in err and "previous file, if any, is unchanged" in err
    assert not list(ckpt.glob("**/*.tmp")), "a temporary file was left behind"
    # what was written before is whole
    done = json.loads((ckpt / "results.json").read_text())["rounds"]
    assert [r["round"] for r in done] == list(range(len(done)))
    assert checkpoint_progress(str(ckpt)) is not None
    rc, lines = run_child(tmp_path, CHILD_CFG, ckpt, tmp_path / "out.pt")
    assert rc == 0, lines
    assert_same_saved(load(tmp_path / "out.pt"), child_reference)
    if kind == "model":
        assert swamp_ext.load_run(ckpt).round(2).record.round == 2


# ---- an interrupted folder ------------------------------------------------------------------

def test_an_interrupted_folder_says_where_it_stands(digits, tmp_path):
    cfg = Config(**SMALL, particle_mode="sequential")
    with pytest.raises(swamp_ext.RunStopped):
        run_imp(cfg, digits, progress=stop_at(signal.SIGTERM, 0, 1, 2), checkpoint_dir=tmp_path,
                checkpoint_every=0, checkpoint_every_steps=7)
    with pytest.raises(RunNotFinishedError) as err:
        swamp_ext.load_run(tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    p = err.value.progress
    assert (p.rounds_done, p.particles, p.particles_done, p.training) == (0, 2, 1, 1)
    assert p.step == 2 * p.steps_per_epoch and p.total_steps == 3 * p.steps_per_epoch
    msg = str(err.value)
    assert "no finished round yet" in msg and "particle 1 at step" in msg
    assert "epoch 2 of 3" in msg and f"--out {tmp_path}" in msg
    out = subprocess.run([sys.executable, "-m", "swamp_ext", "show", str(tmp_path)],
                         capture_output=True, text=True, env=child_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no finished round yet" in out.stdout and "particle 1 at step" in out.stdout
    # once a round is done: the table, and the round in progress under it
    with pytest.raises(swamp_ext.RunStopped):
        run_imp(cfg, digits, progress=stop_at(signal.SIGTERM, 1, 0, 2), checkpoint_dir=tmp_path)
    shown = swamp_ext.report.show(swamp_ext.load_run(tmp_path), str(tmp_path))
    assert "in progress: " in shown and "in round 1 (of 3 rounds), 0 of 2" in shown, shown
    run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path)
    assert "in progress" not in swamp_ext.report.show(swamp_ext.load_run(tmp_path))


# ---- the CLI: one line per expected error, a status per kind, the traceback with --debug ------

CLI_RUN = ["run", "--dataset", "digits", "--model", "lenet_300_100", "--rounds", "2",
           "--epochs", "2", "--particles", "2", "--method", "swamp", "--batch-size", "64",
           "--no-progress"]


def cli(args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "swamp_ext", *args], capture_output=True,
                          text=True, env=child_env(), timeout=timeout, **kw)


def one_error_line(p, status):
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    errs = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(errs) == 1 and errs[0].startswith("swamp-ext: error: "), p.stderr
    return errs[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "run"
    p = cli([*CLI_RUN, "--out", str(d)])
    assert p.returncode == 0, p.stderr
    return d


def test_no_expected_cli_error_prints_a_traceback(tmp_path, finished_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["show", str(tmp_path / "missing")], 2, "not a swamp_ext run folder"),
        (["compare", str(a_file)], 2, "not a swamp_ext run folder"),
        (["export", str(finished_run), "-o", str(tmp_path / "m.st"), "--round", "9"], 2,
         "round 9"),
        (["export", str(finished_run), "-o", str(a_file / "m.st")], 1,
         f"cannot write {a_file / 'm.st'}: its folder {a_file} cannot be created"),
        (["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "p.png")], 2, "missing"),
        ([*CLI_RUN, "--lr", "-1"], 2, "lr"),
        ([*CLI_RUN, "--out", str(a_file)], 2, "--out"),
    ]
    for args, status, words in cases:
        line = one_error_line(cli(args), status)
        assert words in line, (args, line)
    p = cli(["show", str(tmp_path / "missing"), "--debug"])
    assert p.returncode == 1 and "Traceback" in p.stderr and "FileNotFoundError" in p.stderr


def test_cli_disk_full_is_one_line_and_the_folder_survives(tmp_path):
    out = tmp_path / "run"

    def limit():  # a 20 kB "disk" per file: the first checkpoint does not fit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    line = one_error_line(cli([*CLI_RUN, "--out", str(out)], preexec_fn=limit), 1)
    assert "cannot write checkpoint" in line and "disk full" in line
    assert cli([*CLI_RUN, "--out", str(out)]).returncode == 0


def test_cli_sigterm_exits_75_with_one_line_and_resumes(tmp_path, finished_run):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "swamp_ext", *CLI_RUN, "--epochs", "4",
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=child_env())
    # the first round's line comes after round 0's checkpoint: the signal lands in round 1
    for line in p.stdout:
        if line.startswith("round") or line.lstrip().startswith("0 "):
            break
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 75, (stdout, stderr)
    errs = [s for s in stderr.splitlines() if s.strip()]
    assert errs == [errs[0]] and "stopped by SIGTERM" in errs[0] and str(out) in errs[0], stderr
    assert "Traceback" not in stderr
    again = cli([*CLI_RUN, "--epochs", "4", "--out", str(out)])
    assert again.returncode == 0 and "resuming from the checkpoint" in again.stdout


# ---- under torchrun ---------------------------------------------------------------------------

needs_dist = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed not available")
DIST_RUN = ["run", "--dataset", "digits", "--model", "lenet_300_100", "--method", "swamp",
            "--particles", "2", "--epochs", "3", "--rounds", "3", "--seed", "4", "--no-progress",
            "--dist-timeout", "60"]


def dist_env():
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")


def torchrun(args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "swamp_ext", *args]


HOLDER = (
    "import sys, time\n"
    "from swamp_ext.run_folder.lock import RunFolderLock\n"
    "with RunFolderLock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(300)\n")


@needs_dist
def test_a_torchrun_job_into_a_held_folder_is_refused_and_writes_nothing(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=dist_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run(torchrun([*DIST_RUN, "--out", str(tmp_path)]), capture_output=True,
                           text=True, env=dist_env(), timeout=300)
        assert p.returncode != 0
        refusal = [s for s in p.stderr.splitlines() if "is in use by another run" in s]
        assert refusal and f"pid {holder.pid}" in refusal[0], p.stderr[-3000:]
        assert refusal[0].startswith("swamp-ext: error: run folder")
        assert not (tmp_path / "checkpoint.swamp").exists()
        assert holder.poll() is None  # the holder is unharmed, its record intact
        assert json.loads((tmp_path / ".swamp.lock").read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


@needs_dist
def test_sigterm_to_torchrun_stops_every_rank_and_the_job_resumes(tmp_path):
    ref = subprocess.run(torchrun([*DIST_RUN, "--out", str(tmp_path / "ref")]),
                         capture_output=True, text=True, env=dist_env(), timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    p = subprocess.Popen(torchrun([*DIST_RUN, "--out", str(out)]), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dist_env())
    for line in p.stdout:  # round 0 is done and checkpointed: the signal lands in round 1
        if line.split()[:2] == ["round", "0"]:
            break
    p.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
    _, stderr = p.communicate(timeout=300)
    assert p.returncode != 0
    # each rank says it in one line (torchrun's own agent reports the signal after them)
    stopped = [s for s in stderr.splitlines() if "swamp-ext: error: stopped by SIGTERM" in s]
    assert stopped, stderr[-3000:]
    assert checkpoint_progress(str(out)).rounds_done >= 1
    again = subprocess.run(torchrun([*DIST_RUN, "--out", str(out)]), capture_output=True,
                           text=True, env=dist_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    a = json.loads((tmp_path / "ref" / "results.json").read_text())["rounds"]
    b = json.loads((out / "results.json").read_text())["rounds"]
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in a] == \
        [{k: v for k, v in r.items() if k not in strip} for r in b]
