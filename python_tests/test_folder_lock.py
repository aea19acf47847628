"""One writer per run folder: a second run into a held folder stops at once naming the holder; a
lock left by a dead process is taken over; one naming another machine only with force."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import swamp_ext
from swamp_ext import Config, datasets, run_imp
from swamp_ext.run_folder.lock import LOCK_NAME, FolderInUseError, RunFolderLock

CFG = dict(model="lenet_300_100", rounds=2, epochs=2, seed=1)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def test_a_second_writer_is_refused_at_once_and_the_first_is_unharmed(tmp_path, digits):
    folder = str(tmp_path)
    with RunFolderLock(folder):  # the first writer, here
        t0 = time.perf_counter()
        with pytest.raises(FolderInUseError, match=rf"{folder} is in use by another run \(host "
                           rf".*, pid {os.getpid()}, started ") as e:
            run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=folder)
        assert time.perf_counter() - t0 < 1.0
        assert e.value.holder["pid"] == os.getpid() and e.value.folder == folder
        assert not os.path.exists(tmp_path / "checkpoint.swamp")  # the refused run wrote nothing
    # released: the run goes ahead, and leaves no holder behind
    res = run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=folder)
    assert len(res.rounds) == 2 and (tmp_path / LOCK_NAME).read_text() == ""
    assert len(swamp_ext.load_run(folder).rounds) == 2


# a child that holds the folder, says so, and waits (no race: the test acts once it has said)
HOLDER = textwrap.dedent("""
    import sys, time
    from swamp_ext.run_folder.lock import RunFolderLock
    with RunFolderLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_lock_of_a_killed_run_is_taken_over_and_the_cli_refuses_a_held_folder(tmp_path,
                                                                                digits):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-m", "swamp_ext", "run", "--model", "lenet_300_100",
                            "--dataset", "digits", "--rounds", "2", "--epochs", "2", "--out",
                            str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("swamp-ext: error: run folder") and "Traceback" not in r.stderr
        assert f"pid {child.pid}" in r.stderr
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["pid"] == child.pid  # the dead process's record is still there
    res = run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=tmp_path)
    assert len(res.rounds) == 2


def test_a_lock_naming_another_machine_needs_force(tmp_path, digits):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "node-elsewhere-17", "pid": 4242,
                                                  "started": time.time()}))
    with pytest.raises(FolderInUseError, match="another machine .*node-elsewhere-17.*force=True"):
        run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=tmp_path)
    res = run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=tmp_path, force=True)
    assert len(res.rounds) == 2


def test_every_file_a_run_writes_has_the_umasks_permissions(tmp_path, digits):
    old = os.umask(0o027)
    try:
        res = run_imp(Config(**CFG), digits, progress=False, checkpoint_dir=tmp_path / "run")
        res.save(tmp_path / "run" / "out")
    finally:
        os.umask(old)
    files = [os.path.join(root, f) for root, _, fs in os.walk(tmp_path / "run") for f in fs]
    assert any(f.endswith("model.safetensors") for f in files) and len(files) >= 6, files
    for f in files:  # as open(path, 0o666) under umask 027 gives
        assert os.stat(f).st_mode & 0o777 == 0o640, (f, oct(os.stat(f).st_mode))
    from safetensors.torch import load_file  # the file is still what the safetensors package reads

    loaded = load_file(str(tmp_path / "run" / "out" / "model.safetensors"))
    assert set(loaded) >= {f"mask.{k}" for k in res.masks}
