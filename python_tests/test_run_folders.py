"""Run folders read as strictly as checkpoints: crafted results.json, round files and analysis
files give one ValueError (or FileNotFoundError) naming the file and the field, from load_run and
from the CLI a clean non-zero exit: never a hang, a MemoryError, a RecursionError or a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import swamp_ext
from swamp_ext import Config, datasets, load_run, run_imp


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    cfg = Config(model="lenet_300_100", method="swamp", particles=2, rounds=2, epochs=2,
                 batch_size=64, seed=1)
    run_imp(cfg, datasets.load("digits"), progress=False, checkpoint_dir=d, keep_particles=True)
    return d


def crafted(run_dir, tmp_path, edit):
    d = tmp_path / "crafted"
    shutil.copytree(run_dir, d)
    saved = json.loads((d / "results.json").read_text())
    edit(saved)
    (d / "results.json").write_text(json.dumps(saved))
    return d


def _out_of_bounds(f: dict):
    """A value of field f that its kind or bounds refuse (written here from the kind)."""
    if f["kind"] == "count":
        return int(f["hi"]) + 1 if f["hi"] < 2**62 else "many"
    if f["kind"] in ("figure", "optional_figure"):
        return f["hi"] + 1 if f["hi"] < float("inf") else "a word"
    if f["kind"] == "per_particle":
        return [f["hi"] + 1 if f["hi"] < float("inf") else "x"] * 2
    return {"fc1.weight": f["hi"] + 1}


@pytest.mark.parametrize("f", swamp_ext._C.round_fields(), ids=lambda f: f["name"])
def test_every_field_of_the_round_record_is_checked_by_its_kind_and_bounds(run_dir, tmp_path, f):
    """The strict reader follows the core's one list of the round record's fields: a value out of
    a field's bounds (or of the wrong type) is refused naming that field, and a required field
    that is missing is named too."""
    d = crafted(run_dir, tmp_path, lambda s: s["rounds"][0].update({f["name"]: _out_of_bounds(f)}))
    with pytest.raises(ValueError, match=rf"rounds\[0\]\.{f['name']}"):
        load_run(d)
    if f["required"]:
        d2 = crafted(run_dir, tmp_path / "missing", lambda s: s["rounds"][0].pop(f["name"]))
        with pytest.raises(ValueError, match=rf"rounds\[0\] lacks .*{f['name']}"):
            load_run(d2)


def test_the_python_record_follows_the_cores_field_list(run_dir):
    import dataclasses

    names = [f.name for f in dataclasses.fields(swamp_ext.RoundRecord)]
    assert names == [f["name"] for f in swamp_ext._C.round_fields()]
    assert list(json.loads((run_dir / "results.json").read_text())["rounds"][0]) == names


def test_a_well_formed_folder_loads(run_dir):
    res = load_run(run_dir)
    assert len(res.rounds) == 2 and res.round(1).particles


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["rounds"][0].update(test_acc="high"), "rounds[0].test_acc"),
    (lambda s: s["rounds"][1].update(test_acc=1.5), "rounds[1].test_acc"),
    (lambda s: s["rounds"][0].update(sparsity=[0.1]), "rounds[0].sparsity"),
    (lambda s: s.update(num_classes="ten"), "num_classes"),
    (lambda s: s["rounds"][1].update(round=5), "rounds[1].round"),
    (lambda s: s["rounds"][1].update(sparsity=0.0, remaining=1), "rounds[1].sparsity"),
    (lambda s: s["rounds"][0].update(particles=10**12), "rounds[0].particles"),
    (lambda s: s["rounds"][0].update(particle_acc=[0.5]), "rounds[0].particle_acc"),
    (lambda s: s["rounds"][0].pop("train_loss"), "rounds[0]"),
    (lambda s: s["rounds"][0]["layer_density"].update(fc1=2.0), "layer_density"),
    (lambda s: s["config"].update(lr="fast"), "config"),
])
def test_bad_fields_are_named(run_dir, tmp_path, edit, field):
    d = crafted(run_dir, tmp_path, edit)
    with pytest.raises(ValueError) as e:
        load_run(d)
    assert "results.json" in str(e.value) and field in str(e.value), str(e.value)


def test_nan_deep_and_huge_files_are_refused_by_name(run_dir, tmp_path):
    d = crafted(run_dir, tmp_path, lambda s: None)
    text = (d / "results.json").read_text().replace('"train_loss": ', '"train_loss": NaN, "x": ', 1)
    (d / "results.json").write_text(text)
    with pytest.raises(ValueError, match="NaN"):
        load_run(d)
    (d / "results.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nests deeper"):
        load_run(d)
    with open(d / "results.json", "wb") as f:
        f.truncate(swamp_ext.run_folder.strict.MAX_JSON_BYTES + 10)
    with pytest.raises(ValueError, match="larger than"):
        load_run(d)


def test_a_fifo_or_a_device_is_never_read(run_dir, tmp_path):
    d = crafted(run_dir, tmp_path, lambda s: None)
    os.remove(d / "results.json")
    os.mkfifo(d / "results.json")
    with pytest.raises(ValueError, match="FIFO"):
        load_run(d)  # returns at once: a FIFO is refused before it is opened for reading
    os.remove(d / "results.json")
    os.symlink("/dev/zero", d / "results.json")
    with pytest.raises(ValueError, match="device"):
        load_run(d)


def test_a_round_file_claiming_too_many_particles_is_refused(run_dir, tmp_path):
    from swamp_ext import _C
    from swamp_ext.run_folder.rounds import round_path

    d = crafted(run_dir, tmp_path, lambda s: None)
    path = round_path(d, 1)
    tensors, meta = _C.io.load_safetensors(path)
    meta = dict(meta)
    meta["particles"] = str(10**12)
    _C.io.save_safetensors(path, dict(tensors), meta)
    with pytest.raises(ValueError, match="claims 1000000000000 particles"):
        load_run(d).round(1)


def test_the_cli_exits_cleanly_on_a_crafted_folder(run_dir, tmp_path):
    d = crafted(run_dir, tmp_path, lambda s: s.update(num_classes="ten"))
    for cmd in (["show", str(d)], ["compare", str(d)]):
        p = subprocess.run([sys.executable, "-m", "swamp_ext", *cmd], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert "num_classes" in p.stderr + p.stdout


def test_a_recipe_file_that_is_a_fifo_or_too_deep_is_refused(tmp_path):
    from swamp_ext import recipes

    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        recipes.load_file(str(fifo))
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match="deep.toml"):
        recipes.load_file(str(deep))


def test_crafted_csr_metadata_is_refused_by_name(run_dir, tmp_path):
    from swamp_ext import _C, export

    path = tmp_path / "m.csr"
    export.export(load_run(run_dir), path, fmt="csr")
    tensors, meta = _C.io.load_safetensors(str(path))
    for bad, match in (("[" * 100_000 + "]" * 100_000, "malformed metadata"),
                       ('{"fc1.weight": "big"}', "sparse_shapes"),
                       ('{"fc1.weight": [300, 1000000000000]}', "fc1.weight")):
        m = dict(meta)
        m["sparse_shapes"] = bad
        _C.io.save_safetensors(str(path), dict(tensors), m)
        with pytest.raises(ValueError, match=match):
            export.load_csr(path)


def _mutations(saved, rng):
    """Random edits of a results.json value: values of other types, out of range, deleted."""
    import copy

    values = [None, True, -1, 0, 2**70, 1e308, -0.5, 1.5, "x", [], {}, [1, 2], {"a": 1}]
    s = copy.deepcopy(saved)
    for _ in range(rng.randint(1, 3)):
        node, path = s, []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[key]
        else:
            parent[key] = rng.choice(values)
    return s


def test_fuzzed_results_files_load_or_are_refused_by_name(run_dir, tmp_path):
    import random

    rng = random.Random(0)
    base = json.loads((run_dir / "results.json").read_text())
    d = crafted(run_dir, tmp_path, lambda s: None)
    refused = 0
    for _ in range(300):
        (d / "results.json").write_text(json.dumps(_mutations(base, rng)))
        try:
            load_run(d)
        except ValueError as e:
            assert "results.json" in str(e) or "round_" in str(e), str(e)
            refused += 1
        except FileNotFoundError as e:  # a mutated round index names a round not kept
            assert "round" in str(e)
    print(f"\nresults.json fuzz: {refused} of 300 mutations refused, the rest loaded")
    assert refused > 150  # most mutations break a field; every refusal names the file


FUZZ_WORKER = """
import json, os, sys
import torch
torch.set_num_threads(1)
import swamp_ext
from swamp_ext import export, load_run, report
from swamp_ext.run_folder.rounds import read_round

out = []
for job in json.load(open(sys.argv[1])):
    try:
        if job["kind"] == "round":
            read_round(job["dir"], 1)
        elif job["kind"] == "csr":
            export.load_csr(job["path"])
        else:  # an analysis file: show lists it, plot draws it
            report._saved_analyses(job["dir"])
            swamp_ext.run_folder.strict.read_json(job["path"], allow_nan=True)
        out.append([job["id"], "ok", ""])
    except (ValueError, FileNotFoundError) as e:
        out.append([job["id"], type(e).__name__, str(e)[:300]])
    except Exception as e:  # a finding: any other exception type
        out.append([job["id"], "BAD " + type(e).__name__, str(e)[:300]])
json.dump(out, open(sys.argv[2], "w"))
"""


def _mutate_bytes(raw: bytes, rng) -> bytes:
    b = bytearray(raw)
    kind = rng.randrange(3)
    if kind == 0 and b:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # truncate
        b = b[:rng.randrange(len(b) + 1)]
    else:  # overwrite a header byte (the first kilobyte holds safetensors' JSON header)
        i = rng.randrange(min(len(b), 1024))
        b[i] = rng.choice(b'0123456789[]{}",:-e')
    return bytes(b)


def test_fuzzed_round_csr_and_analysis_files_are_refused_by_name(run_dir, tmp_path):
    import random

    from swamp_ext import analysis, export
    from swamp_ext.run_folder.rounds import round_path

    rng = random.Random(1)
    res = load_run(run_dir)
    export.export(res, tmp_path / "m.csr", fmt="csr")
    adir = tmp_path / "an"
    (adir / "analysis").mkdir(parents=True)
    paths = analysis.barrier(res, datasets.load("digits"), 1, points=3, train=False)
    saved = {"run": str(run_dir), "between": "particles",
             "paths": [p.to_json() for p in paths]}
    (adir / "analysis" / "barrier_r1.json").write_text(json.dumps(saved))
    with open(round_path(run_dir, 1), "rb") as f:
        round_raw = f.read()
    csr_raw = (tmp_path / "m.csr").read_bytes()
    an_raw = (adir / "analysis" / "barrier_r1.json").read_bytes()
    jobs = []
    for i in range(240):
        kind = ("round", "csr", "analysis")[i % 3]
        d = tmp_path / f"job{i}"
        if kind == "round":
            shutil.copytree(run_dir, d)
            path = round_path(d, 1)
            raw = round_raw
        elif kind == "csr":
            d.mkdir()
            path = d / "m.csr"
            raw = csr_raw
        else:
            (d / "analysis").mkdir(parents=True)
            path = d / "analysis" / "barrier_r1.json"
            raw = an_raw
        with open(path, "wb") as f:
            f.write(_mutate_bytes(raw, rng))
        jobs.append({"id": i, "kind": kind, "dir": str(d), "path": str(path)})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "worker.py").write_text(FUZZ_WORKER)
    p = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "jobs.json"),
                        str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]  # no signal, no hang
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == len(jobs)
    bad = [o for o in out if o[1].startswith("BAD")]
    assert not bad, bad[:5]
    kinds = {}
    for (_i, outcome, msg), job in zip(out, jobs):
        kinds.setdefault(job["kind"], []).append(outcome)
        if outcome != "ok":
            assert os.path.basename(job["path"]) in msg or job["dir"] in msg, (job, msg)
    print("\nrun-folder fuzz:", {k: {o: v.count(o) for o in set(v)} for k, v in kinds.items()})
    assert all("ValueError" in v for v in kinds.values())  # every kind was refused sometimes
