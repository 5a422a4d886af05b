"""tune.py -- the precision and memory format of a run, chosen by measuring the real step on this machine.

`--precision auto` and the memory format (`--channels-last` not given) are settled the way cudnn.benchmark settles
convolution algorithms: a few steps of each candidate at the run's real shapes, through the step the run takes
(`model.waves_to_logits`, plus the backward pass when training or explaining), the fastest kept. The choice and its
timings are printed in one line at start and cached per machine, so that later runs pay nothing (an STC training
step on a 2-core AMD EPYC with AVX512-BF16, 2026-12-02):

    settings: bf16 + channels_last (measured per train step of 4 x 77,870 samples: fp32/cl 1.68 s, fp32 1.8 s,
      bf16/cl 1 s, bf16 1.49 s; ...; cached in ~/.cache/lcnn/tune.json)

Candidates: channels_last on / off x fp32, plus bf16 where the device computes it natively (`native_bf16`) and
`BF16_AUTO` lets auto choose it for the run's mode. An explicit flag wins and takes its dimension out of the
measurement; with both flags given nothing is measured.

Cost: each candidate gets one warm-up step and timed steps until `REPEATS` or `TIMED_S` seconds of them; one already
`GIVE_UP` x slower than the best is dropped after its first. No candidate starts after the budget: `BUDGET_S` (45 s:
an STC training step on a 2-core CPU is 2-6 s, its first warm-up twice that, and two candidates need both; an STC
CPU epoch takes hours), cut to `JOB_SHARE` of the job when the caller says how many steps it will take (never below
`MIN_BUDGET_S`; evaluate.py --files, train.py), so a short job keeps the unmeasured rule rather than pay for a
measurement. A measurement that could not try every candidate is used but not cached.

The cache: JSON at $LCNN_TUNE_CACHE, else $XDG_CACHE_HOME/lcnn/tune.json (~/.cache/lcnn/tune.json), keyed by the
CPU model or GPU name, the torch version, torch's thread count, the device type, the mode, the batch shape, the
model's input and head, and the candidate list. Written atomically; a damaged file is ignored with one note and
rewritten. LCNN_TUNE=off measures nothing: auto then follows the unmeasured rules (`model.use_bf16`,
`model.use_channels_last`), as the test suite does for deterministic numbers.

Not tuned, on purpose: torch's thread count (it is already the physical cores, what oneDNN wants, and a candidate
per count would multiply the measurement) and the scoring batch (it trades memory for speed, which a timing cannot
weigh, and under bf16 oneDNN's results depend on the batch).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cli import atomic_write
from model import PRECISIONS, release_cpu_memory, use_bf16, use_channels_last, waves_to_logits

MODES = ("train", "score", "explain")
# Where --precision auto may choose bf16 (if native and measured faster), per mode: the one switch of the rule.
# Training: CUDA keeps the bf16 autocast it always had by default; on native-bf16 CPUs bf16 training is a candidate
# since the fp32-vs-bf16 study over seeds (`bench.py --what science`, README "Does bf16 change the science?"): best
# mini dev EER equal within seed noise for the tiny recipe and an STC-shaped model. Scoring: bf16 wherever it is native
# (scores of one checkpoint move by ~1e-2 at most, the EER not at all in that study).
# Explaining (the input gradients and Grad-CAM of explain.py): fp32 on the CPU -- the study cleared bf16 for what a
# model learns and scores, not for the gradients a map is made of; CUDA keeps the bf16 it always had there.
BF16_AUTO = {"train": ("cuda", "cpu"), "score": ("cuda", "cpu"), "explain": ("cuda",)}

REPEATS = 3  # at most this many timed steps per candidate (after one warm-up); the fastest of them counts
TIMED_S = 1.0  # ... and no more timed steps once they add up to this (long steps vary little)
GIVE_UP = 1.5  # a candidate this much slower than the best after one timed step is not timed further
MARGIN = 0.05  # a candidate replaces an earlier one (the unmeasured rule's choice first) only if 5 % faster
BUDGET_S = 45.0  # no candidate starts after this many seconds of measuring
JOB_SHARE = 0.05  # ... nor after this share of the job's estimated time (its steps x the first timed step)
MIN_BUDGET_S = 2.0  # ... but a measurement may always take this long (then it is cached: later runs pay nothing)
CACHE_VERSION = 1


# ----------------------------------------------------------------------------- what the machine does natively


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo ('flags' on x86, 'Features' on ARM); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matmuls and convolutions run in hardware, so bf16 autocast can be faster than fp32.

    CUDA: `torch.cuda.is_bf16_supported(including_emulation=False)` (Ampere and later). CPU: AVX512-BF16 or AMX-BF16
    (x86), or the BF16 extension (ARM), from /proc/cpuinfo where it exists, else from torch's own CPU probe; x86 also
    needs torch's kernels built for AVX512 (`torch.backends.cpu.get_cpu_capability()`). Elsewhere (MPS): False,
    never measured. Without native support torch emulates bf16 (much slower than fp32), so it is no candidate.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    flags = _cpu_flags()
    if flags:
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        return "bf16" in flags  # aarch64 FEAT_BF16
    try:  # no /proc (macOS, Windows): torch's cpuinfo probe (private API; absent in old versions)
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def machine_name(device: torch.device) -> str:
    """The CPU model (and core count) or the GPU name: where a measurement holds."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((ln.partition(":")[2].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} x {os.cpu_count()}"


# ----------------------------------------------------------------------------- the result


@dataclass
class Settings:
    """How a run computes: bf16 autocast or not, channels_last or not, and how that was decided.

    Attributes:
        bf16, channels_last: the choice.
        source: "measured", "cache", "flags" (nothing left to choose) or "off" (LCNN_TUNE=off: the unmeasured rules).
        timings: candidate label ("fp32/cl", "bf16", ...) -> seconds per step, the fastest timed step.
        cost_s: seconds spent measuring now (0 from the cache or the flags).
        cached: the choice came from the cache file.
        notes: what the reader should know (a candidate left out and why, a budget cut, a damaged cache).
        shape: (batch, samples) measured at; mode: "train", "score" or "explain"; cache_path: the cache file.
    """

    bf16: bool
    channels_last: bool
    source: str
    timings: dict[str, float] = field(default_factory=dict)
    cost_s: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)
    shape: tuple[int, int] = (0, 0)
    mode: str = "score"
    cache_path: Path | None = None

    @property
    def precision(self) -> str:
        """'bf16' or 'fp32': the explicit --precision that reproduces the choice."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def label(self) -> str:
        return f"{self.precision}{' + channels_last' if self.channels_last else ''}"

    def describe(self) -> str:
        """The one line printed at start."""
        b, n = self.shape
        times = ", ".join(f"{k} {v:.3g} s" for k, v in self.timings.items())
        parts = []
        if self.source == "measured":
            parts.append(f"measured per {self.mode} step of {b} x {n:,} samples: {times}; {self.cost_s:.1f} s")
        elif self.source == "cache":
            parts.append(f"cached, measured before per {self.mode} step of {b} x {n:,} samples: {times}; 0 s now")
        elif self.source == "flags":
            parts.append("from the flags, nothing measured")
        else:
            parts.append("LCNN_TUNE=off: the unmeasured rules, nothing measured")
        parts += self.notes
        if self.source == "cache":
            parts.append(f"from {self.cache_path}")
        elif self.source == "measured":
            parts.append(f"cached in {self.cache_path}" if self.cached else "not cached")
        return f"settings: {self.label} ({'; '.join(parts)})"


def candidate_label(bf16: bool, channels_last: bool) -> str:
    return f"{'bf16' if bf16 else 'fp32'}{'/cl' if channels_last else ''}"


# ----------------------------------------------------------------------------- the cache


def cache_path() -> Path:
    """$LCNN_TUNE_CACHE, else $XDG_CACHE_HOME/lcnn/tune.json, else ~/.cache/lcnn/tune.json."""
    if os.environ.get("LCNN_TUNE_CACHE"):
        return Path(os.environ["LCNN_TUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lcnn" / "tune.json"


def read_cache(path: Path, notes: list[str]) -> dict:
    """The cache's entries ({key: entry}); {} when absent, and {} plus a note when damaged (never an error)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data["entries"], dict):
            raise ValueError("not a tune cache of version 1")
        return data["entries"]
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        notes.append(f"the cache {path} is damaged ({type(e).__name__}), ignored and rewritten")
        return {}


def write_cache(path: Path, key: str, entry: dict, notes: list[str]) -> bool:
    """Add one entry to the cache file (read again first: another run may have added its own). False on failure."""
    entries = read_cache(path, [])
    entries[key] = entry
    try:
        with atomic_write(path) as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1)
        return True
    except OSError as e:
        notes.append(f"the cache {path} could not be written ({type(e).__name__}: {e.strerror or e})")
        return False


def cache_key(device: torch.device, mode: str, shape: tuple[int, int], model: nn.Module, frontend: nn.Module,
              candidates: list[tuple[bool, bool]]) -> str:  # fmt: skip
    """What the best choice depends on, as one JSON string."""
    inner = getattr(model, "module", model)  # a DDP wrapper's model
    return json.dumps({
        "machine": machine_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": device.type, "mode": mode, "shape": list(shape),
        "model": [type(inner).__name__, getattr(inner, "in_bins", None), getattr(inner, "num_frames", None),
                  getattr(inner, "head", None)],
        "frontend": [type(frontend).__name__, getattr(frontend, "n_bins", None)],
        "candidates": [candidate_label(*c) for c in candidates],
    }, sort_keys=True)  # fmt: skip


# ----------------------------------------------------------------------------- the measurement


def make_step(model: nn.Module, frontend: nn.Module, device: torch.device, shape: tuple[int, int], mode: str,
              bf16: bool, channels_last: bool) -> Callable[[], None]:  # fmt: skip
    """One step of the run at `shape` = (batch, samples), on a throwaway copy of the model: train = featurize +
    classify + cross-entropy + backward (no optimiser step); explain = the same in eval mode (the maps' gradient
    passes); score = the forward under inference_mode."""
    net = copy.deepcopy(getattr(model, "module", model)).to(device)
    net = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    net.train(mode == "train")  # explain: eval mode (BatchNorm statistics, no dropout), gradients on
    gen = torch.Generator().manual_seed(0)
    waves = (0.1 * torch.randn(shape, generator=gen)).to(device)  # (B, N)
    labels = (torch.arange(shape[0]) % 2).to(device)  # (B,) both classes
    margin = {"labels": labels, "lamb": 0.0} if getattr(net, "head", "linear") == "asoftmax" else {}

    def step() -> None:
        if mode in ("train", "explain"):
            F.cross_entropy(waves_to_logits(net, frontend, waves, bf16, channels_last, **margin), labels).backward()
            net.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                waves_to_logits(net, frontend, waves, bf16, channels_last)

    return step


def time_step(step: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of `step` takes, the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure(candidates: list[tuple[bool, bool]], make: Callable[[bool, bool], Callable[[], None]],
            device: torch.device, budget_s: float, job_steps: int | None = None) -> tuple[dict[str, float], list[str], float]:  # fmt: skip
    """Time every candidate: one warm-up, then timed steps until REPEATS or TIMED_S, dropped after one when GIVE_UP x
    slower than the best so far. No candidate starts after `budget_s`, nor after JOB_SHARE of the job (`job_steps` x
    the first timed step, at least MIN_BUDGET_S). Returns (label -> fastest step in seconds, labels left out, budget)."""
    start, timings, left_out = time.perf_counter(), {}, []
    for i, cand in enumerate(candidates):
        spent = time.perf_counter() - start
        if timings and spent >= budget_s:
            left_out += [candidate_label(*c) for c in candidates[i:]]
            break
        share = (budget_s - spent) / (len(candidates) - i)  # this candidate's part of what is left
        best_so_far = min(timings.values(), default=float("inf"))
        t_cand, step = time.perf_counter(), make(*cand)
        time_step(step, device)  # warm-up: oneDNN primitives, cuDNN autotuning, the allocator
        times = [time_step(step, device)]
        if job_steps is not None and not timings:  # the job's size is known now: bound the measurement by it
            budget_s = min(budget_s, max(MIN_BUDGET_S, JOB_SHARE * job_steps * times[0]))
        while len(times) < REPEATS and sum(times) < TIMED_S and time.perf_counter() - t_cand < share:
            if min(times) > GIVE_UP * best_so_far:
                break
            times.append(time_step(step, device))
        timings[candidate_label(*cand)] = min(times)
        del step
        if device.type == "cpu":  # the tuned allocator would keep each candidate's blocks: +1 GiB at STC fp32 batch 4
            release_cpu_memory()
    return timings, left_out, budget_s


def pick(candidates: list[tuple[bool, bool]], timings: dict[str, float]) -> tuple[bool, bool]:
    """The fastest measured candidate; an earlier one (the unmeasured rule's choice is first) keeps its place unless
    a later one is MARGIN faster, so timing noise does not flip the choice between equals."""
    best = None
    for cand in candidates:
        t = timings.get(candidate_label(*cand))
        if t is not None and (best is None or t < (1 - MARGIN) * timings[candidate_label(*best)]):
            best = cand
    return best


# ----------------------------------------------------------------------------- the choice


def choose_settings(
    model: nn.Module,
    frontend: nn.Module,
    device: torch.device,
    shape: tuple[int, int],
    mode: str,
    precision: str = "auto",
    channels_last: bool | None = None,
    budget_s: float = BUDGET_S,
    job_steps: int | None = None,
) -> Settings:
    """bf16 or not and channels_last or not for a run: from the flags, the cache, or a measurement of the real step.

    Args:
        model: the LCNN (or its DDP wrapper); measured on a throwaway copy, never changed.
        frontend: the run's front-end on `device`.
        device: where the run computes.
        shape: (batch, samples) of the run's batches.
        mode: "train" (forward + backward), "explain" (the same in eval mode) or "score" (forward under
            inference_mode).
        precision: --precision ("auto", "fp32", "bf16"); "fp32" / "bf16" win.
        channels_last: --channels-last / --no-channels-last (True / False) win; None = measured.
        budget_s: no candidate starts after this many seconds of measuring.
        job_steps: steps the job will take at `shape`, when known: the measurement then stays within JOB_SHARE of it.
    Returns:
        Settings (print `describe()` at start).
    Raises:
        ValueError: an unknown precision or mode.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    shape = (int(shape[0]), int(shape[1]))
    notes: list[str] = []
    fallback = (use_bf16(precision, device), use_channels_last(channels_last, device))  # the unmeasured rules
    if os.environ.get("LCNN_TUNE", "").lower() in ("0", "off", "no", "false"):
        return Settings(*fallback, "off", shape=shape, mode=mode)
    if precision != "auto":
        precisions = [precision == "bf16"]
    elif device.type in BF16_AUTO[mode] and native_bf16(device):
        precisions = [fallback[0], not fallback[0]]  # the unmeasured rule's choice first
    else:
        precisions = [False]
        if not native_bf16(device):
            notes.append(f"bf16 not tried: not native on this {device.type}")
        else:
            doing = {"train": "training", "score": "scoring", "explain": "explaining"}[mode]
            notes.append(f"bf16 not tried for {doing} on the {device.type}: "
                         "not allowed there by tune.BF16_AUTO; --precision bf16 forces it")  # fmt: skip
    layouts = [fallback[1]] if channels_last is not None else [fallback[1], not fallback[1]]
    candidates = [(p, c) for p in precisions for c in layouts]
    if len(candidates) == 1:
        return Settings(*candidates[0], "flags", shape=shape, mode=mode, notes=notes)

    path = cache_path()
    key = cache_key(device, mode, shape, model, frontend, candidates)
    entry = read_cache(path, notes).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("timings"), dict):
        try:
            labels = [candidate_label(*c) for c in candidates]
            timings = {k: float(entry["timings"][k]) for k in labels if k in entry["timings"]}
            chosen = (bool(entry["bf16"]), bool(entry["channels_last"]))
        except (KeyError, TypeError, ValueError):
            notes.append(f"the cache {path} has a damaged entry for this run, ignored and rewritten")
        else:
            return Settings(
                *chosen, "cache", timings, cached=True, notes=notes, shape=shape, mode=mode, cache_path=path
            )

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's RNG streams untouched
        timings, left_out, budget_s = measure(
            candidates, lambda p, c: make_step(model, frontend, device, shape, mode, p, c), device, budget_s, job_steps
        )
    cost = time.perf_counter() - t0
    chosen = pick(candidates, timings)
    cached = False
    if left_out:
        notes.append(f"{', '.join(left_out)} not measured within the {budget_s:g} s budget")
    else:
        entry = {"bf16": chosen[0], "channels_last": chosen[1], "timings": timings, "cost_s": round(cost, 2),
                 "when": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        cached = write_cache(path, key, entry, notes)
    return Settings(*chosen, "measured", timings, cost, cached, notes, shape, mode, path)


def log(settings: Settings, stream=None) -> None:
    """Print the settings line (stdout unless `stream`), flushed."""
    print(settings.describe(), file=stream or sys.stdout, flush=True)
