"""Mutation fuzzing of the files swamp_ext reads: checkpoints and dataset files.

The parent (a test) makes damaged copies of pristine files; a worker process opens each of them as
a user would (resumes the run, loads the dataset) and reports how it ended: a completed run (with a
digest of what it returned), or an exception (type and message). The parent watches the worker:
a signal (segfault, SIGBUS, abort) or a job that does not end in time is a finding, and the
worker is restarted on the jobs after it. Nothing here knows what the engine will answer: the
expectations come from the mutation (see `Job.plain`) and from a resume of the untouched file.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

# ---- the worker -------------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys, traceback
    import torch
    torch.set_num_threads(1)
    import swamp_ext
    from swamp_ext import Config, datasets, run_imp

    def digest(res):
        h = hashlib.sha256()
        for k in sorted(res.masks):
            h.update(k.encode()); h.update(res.masks[k].numpy().tobytes())
        state = res.state_dict()
        for k in sorted(state):
            h.update(k.encode()); h.update(state[k].contiguous().numpy().tobytes())
        for r in res.rounds:
            d = {k: getattr(r, k) for k in dir(r) if not k.startswith("_") and k != "seconds"}
            h.update(repr(sorted((k, v) for k, v in d.items() if not callable(v))).encode())
        return h.hexdigest()

    jobs = json.load(open(sys.argv[1]))
    out = open(sys.argv[2], "a")
    data = {}
    for job in jobs:
        out.write(json.dumps({"start": job["id"]}) + "\\n"); out.flush()
        try:
            if job["kind"] == "checkpoint":
                if "digits" not in data:
                    data["digits"] = datasets.load("digits")
                res = run_imp(Config(**job["config"]), data["digits"], progress=False,
                              checkpoint_dir=job["path"], checkpoint_every=1)
                result = {"outcome": "done", "digest": digest(res)}
            else:
                ds = datasets.load(job["dataset"], root=job["path"])
                h = hashlib.sha256()
                for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
                    h.update(t.contiguous().numpy().tobytes())
                result = {"outcome": "done", "digest": h.hexdigest()}
        except Exception as e:
            result = {"outcome": "error", "type": type(e).__name__, "message": str(e)[:2000],
                      "where": traceback.format_exc()[-1500:]}
        result["id"] = job["id"]
        out.write(json.dumps(result) + "\\n"); out.flush()
    """
)


@dataclass
class Job:
    id: str
    kind: str  # "checkpoint" or "dataset"
    path: str  # the checkpoint folder, or the dataset root
    what: str  # the mutation, in words
    plain: bool = False  # it hit plain tensor values no check can tell from real ones
    pristine: str = ""  # id of the job with the untouched file (checkpoints)
    config: Optional[dict] = None
    dataset: str = ""
    family: str = ""  # for the summary


def run_jobs(jobs: list[Job], workdir: str, job_timeout: float = 60.0,
             env: Optional[dict] = None) -> dict[str, dict]:
    """Runs the jobs in worker processes; returns id -> result. A worker that dies of a signal or
    overruns a job is recorded against that job ({"outcome": "signal"/"hang"}) and replaced."""
    os.makedirs(workdir, exist_ok=True)
    script = os.path.join(workdir, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    results: dict[str, dict] = {}
    todo = list(jobs)
    round_no = 0
    while todo:
        round_no += 1
        spec = os.path.join(workdir, f"jobs{round_no}.json")
        out_path = os.path.join(workdir, f"results{round_no}.jsonl")
        with open(spec, "w") as f:
            json.dump([asdict(j) for j in todo], f)
        open(out_path, "w").close()
        proc = subprocess.Popen([sys.executable, script, spec, out_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env or dict(os.environ, OMP_NUM_THREADS="1"))
        current, started = None, time.monotonic()
        seen = 0
        failure = None
        while True:
            rc = proc.poll()
            with open(out_path) as f:
                lines = f.read().splitlines()
            for line in lines[seen:]:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # a line being written
                seen += 1
                if "start" in rec:
                    current, started = rec["start"], time.monotonic()
                else:
                    results[rec["id"]] = rec
                    current = None
            if rc is not None:
                if rc != 0 and current is not None:
                    failure = {"id": current, "outcome": "signal" if rc < 0 else "exit",
                               "code": rc, "stderr": proc.stderr.read().decode()[-2000:]}
                break
            if current is not None and time.monotonic() - started > job_timeout:
                proc.kill()
                proc.wait()
                failure = {"id": current, "outcome": "hang", "seconds": job_timeout}
                break
            time.sleep(0.02)
        if proc.stderr is not None:
            proc.stderr.close()
        if failure is not None:
            results[failure["id"]] = failure
        todo = [j for j in todo if j.id not in results]
        if failure is None and todo:  # the worker ended without reaching them
            for j in todo:
                results[j.id] = {"id": j.id, "outcome": "lost", "code": proc.returncode}
            todo = []
    return results


# ---- mutations of checkpoint content (tensor level: the file stays well-formed) ---------------
PLAIN_PREFIXES = ("ticket/", "final/", "done/", "cur/model/", "cur/momentum/", "cur/swa/")


def _is_model_value(key: str) -> bool:
    return key.startswith(PLAIN_PREFIXES) and not key.endswith("/loss")


def plain_key(key: str) -> bool:
    """Entries whose values no check can tell from real ones: model weights and statistics,
    momentum, SWA averages, losses, timings, generator states."""
    return (_is_model_value(key) or key.endswith("order/generator") or key.endswith("loss")
            or key == "meta/round_seconds")


def tensor_mutations(m: dict[str, torch.Tensor], rng: random.Random
                     ) -> list[tuple[str, dict[str, torch.Tensor], bool]]:
    """(what, mutated map, plain) for every entry of the checkpoint map `m`: structural damage
    (missing, renamed, extra entries, wrong dtype or shape) and value damage chosen by the entry's
    kind (counters, floats, text, masks, permutations, model tensors)."""
    out: list[tuple[str, dict[str, torch.Tensor], bool]] = []

    def put(what: str, key: str, value: Optional[torch.Tensor], plain: bool = False,
            new_key: Optional[str] = None) -> None:
        mm = dict(m)
        if value is None:
            del mm[key]
        if new_key is not None:
            mm[new_key] = m[key] if value is None else value
        elif value is not None:
            mm[key] = value
        out.append((f"{key}: {what}", mm, plain))

    for key in sorted(m):
        t = m[key]
        put("removed", key, None)
        if rng.random() < 0.3:
            put("renamed", key, None, new_key=key + "x")
        if t.dtype == torch.int64 and t.dim() == 0:
            v = int(t)
            for nv in (v + 1, v - 1, -1, -(2 ** 62), 2 ** 62):
                if nv != v:  # a model's own counters (batch norm's) are plain values
                    put(f"{v} -> {nv}", key, torch.tensor(nv), plain=_is_model_value(key))
            put("as float64", key, t.double())
            put("as a vector", key, t.reshape(1))
        elif t.dtype == torch.float64 and t.dim() == 0:
            v = float(t)
            for nv in (float("nan"), float("inf"), -1e300):
                # a finite loss is any value a user's loss function could give
                put(f"{v} -> {nv}", key, torch.tensor(nv, dtype=torch.float64),
                    plain=key.endswith("loss") and nv == -1e300)
            put(f"{v} -> {v * 3 + 1}", key, torch.tensor(v * 3 + 1, dtype=torch.float64),
                plain=key.endswith("loss") or key == "meta/round_seconds")
        elif t.dtype == torch.uint8 and t.dim() == 1 and key.endswith("order/generator"):
            g = t.clone()
            i = rng.randrange(g.numel())
            g[i] ^= 1 << rng.randrange(8)
            put(f"bit flip at byte {i}", key, g, plain=True)
            put("truncated", key, t[: t.numel() // 2].clone())
        elif t.dtype == torch.uint8 and t.dim() == 1:  # text
            b = bytes(t.tolist())
            if b:
                i = rng.randrange(len(b))
                flipped = bytearray(b)
                flipped[i] ^= 1 << rng.randrange(7)
                put(f"text bit flip at {i}", key, torch.tensor(list(flipped), dtype=torch.uint8))
                digits = [k for k, c in enumerate(b) if chr(c).isdigit()]
                if digits:
                    k = rng.choice(digits)
                    d = bytearray(b)
                    d[k] = ord(str((int(chr(b[k])) + 1) % 10))
                    put(f"digit changed at {k}", key, torch.tensor(list(d), dtype=torch.uint8))
                put("cut in half", key, t[: t.numel() // 2].clone())
            put("non-UTF-8 bytes", key, torch.tensor(list(b + b"\xff\xfe\x00"), dtype=torch.uint8))
        elif t.dtype == torch.bool:  # a mask
            flat = t.flatten()
            kept = flat.nonzero().flatten().tolist()
            pruned = (~flat).nonzero().flatten().tolist()
            if pruned:
                f = flat.clone()
                f[rng.choice(pruned)] = True
                put("one pruned weight revived", key, f.view_as(t))
            if kept:
                f = flat.clone()
                f[rng.choice(kept)] = False
                put("one kept weight pruned", key, f.view_as(t))
            if kept and pruned:
                f = flat.clone()
                f[rng.choice(kept)], f[rng.choice(pruned)] = False, True
                put("a kept and a pruned weight swapped", key, f.view_as(t))
            put("as uint8", key, t.to(torch.uint8))
            put("wrong shape", key, flat[:-1].clone())
        elif t.dtype == torch.int64 and key.endswith("order/perm"):
            p = t.clone()
            i, j = rng.sample(range(p.numel()), 2)
            p[i], p[j] = int(t[j]), int(t[i])
            put("two entries swapped (still a permutation)", key, p, plain=True)
            p = t.clone()
            p[i] = p.numel() + 5
            put("an index out of range", key, p)
            p = t.clone()
            p[i] = p[j]
            put("a duplicate index", key, p)
            put("wrong length", key, t[:-3].clone())
        elif t.is_floating_point():
            if not _is_model_value(key):
                continue
            if rng.random() < 0.25:  # plain values: a sample is enough
                put("scaled by 1.5", key, t * 1.5, plain=True)
            f = t.clone().flatten()
            f[rng.randrange(f.numel())] = float("nan")
            put("a NaN", key, f.view_as(t))
            put("as float64", key, t.double())
            put("wrong shape", key, t.flatten()[:-1].clone())
        else:  # other integer tensors (model buffers)
            put("as float64", key, t.double())
    out.append(("an extra entry", {**m, "junk/extra": torch.zeros(3)}, False))
    return out


# ---- mutations of the file's bytes ------------------------------------------------------------
def byte_ranges(path: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """The checkpoint body's header end and every entry's byte range in the file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + n])
    start = 8 + n
    return start, {k: (start + v["data_offsets"][0], start + v["data_offsets"][1])
                   for k, v in header.items() if k != "__metadata__"}


def byte_mutations(path: str, rng: random.Random, count: int
                   ) -> list[tuple[str, bytes, bool, bool]]:
    """(what, new bytes, reseal, plain) for `count` damaged copies of the file at `path`."""
    with open(path, "rb") as f:
        raw = f.read()
    start, ranges = byte_ranges(path)
    out = []
    for _ in range(count):
        kind = rng.choice(["flip", "flip", "flip", "truncate", "append", "zero"])
        reseal = rng.random() < 0.7
        b = bytearray(raw)
        plain = False
        if kind == "flip":
            i = rng.randrange(len(raw) - 24)
            b[i] ^= 1 << rng.randrange(8)
            hit = [k for k, (s, e) in ranges.items() if s <= i < e]
            what = f"bit flip at byte {i} ({hit[0] if hit else 'header'})"
            plain = bool(hit) and plain_key(hit[0])
        elif kind == "truncate":
            cut = rng.randrange(len(raw))
            b = b[:cut]
            what = f"truncated to {cut} bytes"
            reseal = reseal and cut >= 24
        elif kind == "append":
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            what = "bytes appended"
        else:
            i = rng.randrange(len(raw) - 24)
            n = min(rng.randrange(1, 64), len(raw) - 24 - i)
            b[i: i + n] = bytes(n)
            hit = [k for k, (s, e) in ranges.items() if s < i + n and i < e]
            what = f"{n} bytes zeroed at {i} ({', '.join(hit) if hit else 'header'})"
            plain = i >= start and bool(hit) and all(plain_key(k) for k in hit)
        out.append((what, bytes(b), reseal, plain))
    return out


def file_mutations(raw: bytes, rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """Damaged copies of a data file: bit flips, zeroed runs, truncation, appended bytes."""
    out = []
    for _ in range(count):
        kind = rng.choice(["flip", "flip", "zero", "truncate", "append"])
        b = bytearray(raw)
        if kind == "flip":
            i = rng.randrange(min(len(raw), 64)) if rng.random() < 0.5 else rng.randrange(len(raw))
            b[i] ^= 1 << rng.randrange(8)
            what = f"bit flip at byte {i}"
        elif kind == "zero":
            i = rng.randrange(len(raw))
            b[i: i + 16] = bytes(len(b[i: i + 16]))
            what = f"zeroed at {i}"
        elif kind == "truncate":
            cut = rng.randrange(len(raw))
            b = b[:cut]
            what = f"truncated to {cut}"
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
            what = "bytes appended"
        out.append((what, bytes(b)))
    return out
