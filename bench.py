"""bench.py -- speed and memory of the loops users run, against a naive pipeline timed in the same run.

    python bench.py --what train|score|all                  # CPU: a few minutes; ours vs naive, ratios, % of peak
    python bench.py --what scale [--sizes 1000,5000,25000,all]   # the full LA size on this machine (hard links)
    python bench.py --device cuda --what gpu                # one prepared GPU check, <= 8 minutes on an H100/H200

What is timed is what users run: `train.train_one_epoch` over `train.make_loaders` / `train.make_model` (the
functions behind train.py) and `evaluate.score_split` + `evaluate.report_split` (behind evaluate.py), with the flags
of the stc recipe. The naive reference is what course repositories do: the Dataset applies the STFT to each item in
the DataLoader workers, float32, NCHW tensors, plain Adam, the default allocator, no caching.

Every measurement runs in a child process of its own (`--task`), so that one pipeline's allocator settings, cuDNN
state and resident memory never leak into another's numbers. Peak memory: torch.cuda.max_memory_allocated on CUDA;
on the CPU the resident set of the child plus the private memory of its workers, sampled from /proc (`PeakMemory`).

The compute limit: FLOPs per sample of the LCNN (torch.utils.flop_counter; convolutions and matmuls) over the matmul
peak of the precision a row runs in, each measured in the same run (fp32 and bf16 on the CPU; TF32 and bf16 on CUDA),
so "of limit" means the same on every row. The row "ours (defaults)" is the pipeline with no flags: precision and
memory format as `tune.choose_settings` measures them on this machine (the choice is printed under the table).
Generated audio, trees and the memory probe are in benchkit.py.

Audio: training and scoring files are generated LA-like FLAC files (`synth_utterance`: lognormal lengths, mean
~3.5 s); `--what scale` and the GPU check's 71,237-file set are hard links to a few files, so the audio repeats
(decoding costs the same per file; the page cache holds the few distinct files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchkit import PeakMemory, generate_la_files, link_tree, sync
from cli import (
    ArgumentParser,
    add_common_args,
    atomic_write,
    check_output_path,
    default_num_workers,
    format_seconds,
    resolve_device,
    run_cli,
)
from corpora import (
    SPLITS,
    LALayout,
    find_la_root,
    read_cm_protocol,
    spread_entries,
)
from data import (
    ASVspoof2019LA,
    add_input_args,
    collate,
    make_frontend,
)
from model import (
    add_model_args,
    bonafide_score,
    build_model,
)

HERE = Path(__file__).resolve().parent
LA_EVAL_FILES = 71_237
STC_MODEL = {"dropout": 0.75, "head": "linear"}  # the stc recipe's model; --num-frames changes only the input length
RESULT_TAG = "BENCH_RESULT "
DEFAULTS = "ours (defaults)"  # the row of the pipeline as users get it: no flags, the measured choice


# ----------------------------------------------------------------------------- the compute limit


def flops_per_sample(n_bins: int, num_frames: int) -> dict[str, float]:
    """LCNN FLOPs per sample (convolutions and matmuls, torch.utils.flop_counter): forward, and a training step
    (forward + backward; the first convolution needs no input gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model({"in_bins": n_bins, "num_frames": num_frames, **STC_MODEL}).train()
    x, y = torch.randn(2, 1, n_bins, num_frames), torch.tensor([0, 1])  # BatchNorm trains on two items at least
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(model(x), y).backward()
    return {"forward": fwd.get_total_flops() / 2, "train": step.get_total_flops() / 2}


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, seconds: float = 2.0):
    """Measured matmul rate in FLOP/s: n x n x n products back to back for `seconds` (2 n^3 FLOPs each)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=c)
    sync(device)
    done, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds or done < 3:
        torch.mm(a, b, out=c)
        done += 1
        if device.type == "cuda" and done % 8:
            continue
        sync(device)
    sync(device)
    return 2 * n**3 * done / (time.monotonic() - t0)


# ----------------------------------------------------------------------------- measurements (each in a child process)


def _train_args(root: str, n: int, batch_size: int, device: str, frontend: str, num_frames: int, num_workers: int | None,
                precision: str, channels_last: bool | None, cache: bool, out: str, recipe: str = "stc"):  # fmt: skip
    """train.py's flags for a benchmark run: the recipe, n training files, the benchmark's loader settings."""
    import train

    argv = ["--data-root", root, "--recipe", recipe, "--frontend", frontend, "--num-frames", str(num_frames),
            "--batch-size", str(batch_size), "--limit-train", str(n),
            "--limit-dev", "2", "--device", device, "--precision", precision, "--out", out, "--log-every", "1e9",
            "--seed", "0"]  # fmt: skip
    argv += ["--cache-audio"] if cache else []
    argv += [] if num_workers is None else ["--num-workers", str(num_workers)]  # None: cli.default_num_workers
    argv += [] if channels_last is None else (["--channels-last"] if channels_last else ["--no-channels-last"])
    return train.parse_args(argv)


def _train_setup(*flags, **kw):
    """A training task's flags (`_train_args`), its device with train.py's backend set-up, and its front-end."""
    from model import configure_backend

    args = _train_args(*flags, **kw)
    dev = resolve_device(args.device)
    configure_backend(dev)
    return args, dev, make_frontend(args.frontend).to(dev)


def task_train_ours(root: str, n: int, batch_size: int, device: str, frontend: str = "stft", num_frames: int = 600,
                    num_workers: int | None = None, precision: str = "auto", channels_last: bool | None = None,
                    cache: bool = False, compile: bool = False, epochs: int = 2, recipe: str = "stc") -> dict:  # fmt: skip
    """`train.train_one_epoch` as train.py runs it: `epochs` epochs over n files, the last one timed (the first
    ones warm up workers, cuDNN autotuning and the allocator)."""
    import train

    with tempfile.TemporaryDirectory(prefix="bench_run_") as out:
        args, dev, fe = _train_setup(root, n, batch_size, device, frontend, num_frames, num_workers, precision,
                                     channels_last, cache, out, recipe)  # fmt: skip
        torch.manual_seed(0)
        loader, _, generator = train.make_loaders(args, fe, dev)
        settings = train.choose_run_settings(args, fe, dev, epochs * len(loader))  # as train.py does
        model, optimizer, _ = train.make_model(args, fe.n_bins, dev)
        if compile:
            model = torch.compile(model)
        with PeakMemory(dev) as mem:
            for epoch in range(1, epochs + 1):
                loader.sampler.set_epoch(epoch)
                generator.manual_seed(epoch)
                result = train.train_one_epoch(model, fe, loader, optimizer, dev, args, epoch, 0)
    return {"samples": result["n_files"], "seconds": result["seconds"], "peak_bytes": mem.peak, "memory": mem.label,
            "loss": result["train_loss"], **settings_fields(settings)}  # fmt: skip


def task_train_settle(root: str, n: int, batch_size: int, device: str, frontend: str = "stft", num_frames: int = 600,
                      num_workers: int | None = None, precision: str = "auto", channels_last: bool | None = None,
                      cache: bool = False, recipe: str = "stc", **_) -> dict:  # fmt: skip
    """The measured choice of a training row (`train.choose_run_settings`), settled in a process of its own before the
    timed one: users pay it once per machine and shapes, and the candidates' memory, which the allocator keeps,
    must not count as the timed run's peak (it read 4.14 GiB in-process against 3.28 GiB after)."""
    import train

    with tempfile.TemporaryDirectory(prefix="bench_run_") as out:
        args, dev, fe = _train_setup(root, n, batch_size, device, frontend, num_frames, num_workers, precision,
                                     channels_last, cache, out, recipe)  # fmt: skip
        # no job bound: a benchmark's few steps would leave candidates unmeasured and the choice uncached, while a
        # real run's thousands of steps allow them all
        settings = train.choose_run_settings(args, fe, dev)
    return {"measured_s": settings.cost_s, **settings_fields(settings)}


def settings_fields(settings) -> dict:
    """What a result row says about the precision and memory format it ran with (`tune.Settings`)."""
    return {"bf16": settings.bf16, "channels_last": settings.channels_last, "settings": settings.describe(),
            "tune_s": settings.cost_s}  # fmt: skip


def task_train_naive(root: str, n: int, batch_size: int, device: str, frontend: str = "stft", num_frames: int = 600,
                     num_workers: int = 2, epochs: int = 2) -> dict:  # fmt: skip
    """The course-repo training loop: STFT per item in the workers, float32 NCHW, plain Adam, every file decoded
    again each epoch. Same files, batch, epochs (the last one timed) as `task_train_ours`."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = False  # course repositories leave it off
    fe = make_frontend(frontend)
    layout = find_la_root(root)
    entries = spread_entries(layout.protocol("train"), n)
    ds = ASVspoof2019LA(layout, "train", fe.num_samples(num_frames), frontend=fe, random_crop=True, entries=entries)
    model = build_model({"in_bins": fe.n_bins, "num_frames": num_frames, **STC_MODEL}).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    with PeakMemory(dev) as mem:
        for _ in range(epochs):
            loader = DataLoader(ds, batch_size, shuffle=True, num_workers=num_workers, collate_fn=collate,
                                drop_last=len(ds) % batch_size == 1)  # fmt: skip
            t0, done = time.monotonic(), 0
            for batch in loader:
                x, y = batch["x"].to(dev), batch["label"].to(dev)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += len(y)
            sync(dev)
            seconds = time.monotonic() - t0
    return {"samples": done, "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label, "bf16": False,
            "channels_last": False}  # fmt: skip


def save_bench_checkpoint(path: Path, num_frames: int, frontend: str = "stft", recipe: str = "stc") -> Path:
    """A randomly initialised LCNN checkpoint with train.py's keys (speed does not depend on the weights)."""
    torch.manual_seed(0)
    fe = make_frontend(frontend)
    dropout = 0.75 if recipe == "stc" else 0.1
    model = build_model({"in_bins": fe.n_bins, "num_frames": num_frames, "dropout": dropout, "head": "linear"})
    ckpt = {"model": model.state_dict(), "model_args": model.model_args(),
            "args": {"frontend": frontend, "num_frames": num_frames, "pad": "repeat", "recipe": recipe},
            "epoch": 0}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        torch.save(ckpt, f)
    return path


def task_score_ours(ckpt: str, root: str, out: str, device: str, batch_size: int | None = None,
                    num_workers: int | None = None, precision: str = "auto", split: str = "eval", report: bool = True,
                    channels_last: bool | None = None) -> dict:  # fmt: skip
    """evaluate.py end to end: load the checkpoint, score the split, write and check the score file, EER, min
    t-DCF when ASV scores are there, per-attack table, DET plot. Wall time from loading to the written plot."""
    import evaluate

    out = Path(out)
    for stale in (out, *evaluate.partial_paths(out)):
        stale.unlink(missing_ok=True)  # time a full run, not a resume
    dev = resolve_device(device)
    batch_size = batch_size or (64 if dev.type == "cuda" else 8)  # evaluate.py's defaults
    num_workers = default_num_workers(num_workers, dev)
    # the measured choice (tune.choose_settings) is settled first, outside the timed run: users pay it once per
    # machine and shapes, then read it from the cache -- the timed run is the second run, as users run it
    warm = evaluate.load_scorer(ckpt, dev, precision, channels_last=channels_last, batch_size=batch_size)
    measured_s = warm.settings.cost_s if warm.settings else 0.0
    del warm
    with PeakMemory(dev) as mem:
        t0 = time.monotonic()
        scorer = evaluate.load_scorer(ckpt, dev, precision, channels_last=channels_last, batch_size=batch_size)
        res = evaluate.score_split(scorer, root, split, out, batch_size, num_workers, progress=False)
        eer = None
        if report:
            eer = evaluate.report_split(res.scores, root, split, out.with_name(f"{out.stem}_det.png"))["eer"]
        seconds = time.monotonic() - t0
    return {"samples": len(res.scores), "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label,
            "eer": eer, "loop_per_s": res.files_per_s, "measured_s": measured_s,
            **settings_fields(scorer.settings)}  # fmt: skip


@torch.no_grad()
def task_score_naive(ckpt: str, root: str, n: int, out: str, device: str, batch_size: int, num_workers: int) -> dict:
    """The course-repo scorer on the first n eval files: per-item STFT in workers, float32, no_grad, a plain write."""
    dev = resolve_device(device)
    torch.backends.cudnn.benchmark = False  # course repositories leave it off
    with PeakMemory(dev) as mem:
        t0 = time.monotonic()
        ckpt_dict = torch.load(ckpt, map_location="cpu", weights_only=True)
        model = build_model(ckpt_dict["model_args"])
        model.load_state_dict(ckpt_dict["model"])
        model = model.to(dev).eval()
        fe = make_frontend(ckpt_dict["args"]["frontend"])
        layout = find_la_root(root)
        entries = layout.protocol("eval")[:n]
        ds = ASVspoof2019LA(layout, "eval", fe.num_samples(model.num_frames), frontend=fe, entries=entries)
        loader = DataLoader(ds, batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
        with open(out, "w") as f:
            for batch in loader:
                logits = model(batch["x"].to(dev)).cpu()
                for utt, system, s in zip(batch["utt_id"], batch["system"], bonafide_score(logits).tolist()):
                    f.write(f"{utt} {system} {'bonafide' if system == '-' else 'spoof'} {s}\n")
        seconds = time.monotonic() - t0
    return {"samples": len(ds), "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label, "bf16": False,
            "channels_last": False}  # fmt: skip


def task_check(root: str, workers: int | None = None) -> dict:
    """`python data.py --check` of the whole tree (headers and file ends, every split)."""
    import data

    dev = torch.device("cpu")
    with PeakMemory(dev) as mem:
        t0 = time.monotonic()
        report = data.check_dataset(root, workers=workers, progress=False)
        seconds = time.monotonic() - t0
    files = sum(s["files"] for s in report["splits"].values())
    return {"samples": files, "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label,
            "problems": report["problems"]}  # fmt: skip


def task_datasets(root: str) -> dict:
    """Construction of the three split Datasets as train.py / evaluate.py make them (waveform items)."""
    dev = torch.device("cpu")
    fe = make_frontend("mel")
    with PeakMemory(dev) as mem:
        t0 = time.monotonic()
        sets = [ASVspoof2019LA(root, split, fe.num_samples(600)) for split in SPLITS]
        seconds = time.monotonic() - t0
    return {"samples": sum(map(len, sets)), "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label}


def task_train_epoch(root: str, num_workers: int | None = None, device: str = "cpu") -> dict:
    """One training epoch of the tiny recipe over the whole train split (`train.train_one_epoch`, no dev scoring)."""
    n = len(read_cm_protocol(find_la_root(root).protocol_path("train")))
    return task_train_ours(root, n, 32, device, "mel", 600, num_workers, epochs=1, recipe="tiny")


def task_loader(root: str, n: int, batch_size: int, num_workers: int | None, cache: bool, device: str) -> dict:
    """The training loader alone (decode, crop, collate, copy to the device): files/s the model could be fed."""
    import train

    with tempfile.TemporaryDirectory(prefix="bench_run_") as out:
        args = _train_args(root, n, batch_size, device, "stft", 600, num_workers, "auto", None, cache, out)
        dev = resolve_device(device)
        fe = make_frontend("stft")
        loader, _, _ = train.make_loaders(args, fe, dev)
        with PeakMemory(dev) as mem:
            for epoch in (1, 2):  # the second epoch is timed
                loader.sampler.set_epoch(epoch)
                t0, done = time.monotonic(), 0
                for batch in train.batches(loader):
                    batch["x"].to(dev, non_blocking=True)
                    done += len(batch["label"])
                sync(dev)
                seconds = time.monotonic() - t0
    return {"samples": done, "seconds": seconds, "peak_bytes": mem.peak, "memory": mem.label}


def task_real_run(root: str, out: str, device: str, epochs: int = 3, recipe: str = "stc", extra: list | None = None):
    """train.py on a real tree: `epochs` epochs uninterrupted, then the same run stopped after epochs - 1 and
    resumed; returns both histories' dev EERs (equal up to cuDNN's non-deterministic kernels)."""
    import train

    extra = extra or []
    base = ["--data-root", root, "--recipe", recipe, "--device", device, "--log-every", "1e9", *extra]
    t0 = time.monotonic()
    full = train.train(train.parse_args([*base, "--epochs", str(epochs), "--out", f"{out}/full"]))
    seconds = time.monotonic() - t0
    train.train(train.parse_args([*base, "--epochs", str(epochs - 1), "--out", f"{out}/resumed"]))
    resumed = train.train(train.parse_args(["--resume", f"{out}/resumed", "--epochs", str(epochs)]))
    n = full[-1]["n_train"] * epochs
    return {"samples": n, "seconds": seconds, "peak_bytes": 0, "memory": "-",
            "dev_eer": [h["dev_eer"] for h in full], "dev_eer_resumed": [h["dev_eer"] for h in resumed]}  # fmt: skip


TASKS = {"train_ours": task_train_ours, "train_settle": task_train_settle, "train_naive": task_train_naive,
         "score_ours": task_score_ours, "score_naive": task_score_naive, "check": task_check, "datasets": task_datasets,
         "train_epoch": task_train_epoch, "loader": task_loader, "real_run": task_real_run}  # fmt: skip


def run_task(name: str, quiet: bool = True, **kwargs) -> dict:
    """Run TASKS[name](**kwargs) in a fresh Python process; returns its result dict (with "task" and "wall_s").

    Raises:
        RuntimeError: the child failed (its last lines of stderr are in the message).
    """
    cmd = [sys.executable, str(HERE / "bench.py"), "--task", name, "--task-args", json.dumps(kwargs)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True,
                          cwd=HERE)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
        raise RuntimeError(f"bench task {name} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result.update(task=name, wall_s=time.monotonic() - t0)
    return result


def child_main(name: str, task_args: str) -> int:
    """`bench.py --task NAME --task-args JSON`: run one measurement, print its result as one tagged JSON line."""
    if name not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {name!r}")
    result = TASKS[name](**json.loads(task_args))
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- reports


def rate(r: dict) -> float:
    return r["samples"] / max(r["seconds"], 1e-9)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_table(rows: list[dict], device_text: str, peak: dict[str, float], flops: dict[str, float]) -> str:
    """One line per pipeline: samples/s, peak memory, ratio against naive, share of its own precision's limit."""
    naive = {r["what"]: rate(r) for r in rows if r["pipeline"] == "naive"}
    naive_mem = {r["what"]: r["peak_bytes"] for r in rows if r["pipeline"] == "naive"}
    lines = [f"device: {device_text}"]
    lines += [f"matmul peak ({k}): {v / 1e9:,.0f} GFLOP/s" for k, v in peak.items()]
    limits = "; ".join(f"{k} {peak_limit(peak, flops, 'train', k == 'bf16'):.2f} training samples/s, "
                       f"{peak_limit(peak, flops, 'forward', k == 'bf16'):.2f} forwards/s" for k in peak)  # fmt: skip
    lines.append(f"LCNN FLOPs per sample: {flops['train'] / 1e9:.1f} G training step, {flops['forward'] / 1e9:.1f} G "
                 f"forward -> compute limit {limits}")  # fmt: skip
    lines.append("of limit: a row's rate over the limit of the precision it ran in (its matmul peak / FLOPs)")
    head = (f"{'task':<6} {'pipeline':<24} {'runs as':<8} {'items':>6} {'seconds':>8} {'samples/s':>10} "
            f"{'peak memory':>22} {'vs naive':>9} {'mem vs naive':>12} {'of limit':>9}")  # fmt: skip
    lines += [head, "-" * len(head)]
    for r in rows:
        ratio = rate(r) / naive[r["what"]] if r["what"] in naive else float("nan")
        mem_ratio = r["peak_bytes"] / naive_mem[r["what"]] if naive_mem.get(r["what"]) else float("nan")
        kind = "train" if r["what"] == "train" else "forward"
        share = rate(r) / peak_limit(peak, flops, kind, r.get("bf16", False))
        memory = f"{gib(r['peak_bytes'])} {r['memory']}"
        runs_as = f"{'bf16' if r.get('bf16') else 'fp32'}{'/cl' if r.get('channels_last') else ''}"
        lines.append(f"{r['what']:<6} {r['pipeline']:<24} {runs_as:<8} {r['samples']:>6,} {r['seconds']:>8.2f} "
                     f"{rate(r):>10.2f} {memory:>22} {ratio:>8.2f}x {mem_ratio:>11.2f}x {share:>8.0%}")  # fmt: skip
        if r["what"] == "score" and r["pipeline"].startswith("ours"):
            lines.append(f"       end to end (load, score, write + check, EER, DET); its scoring loop alone "
                         f"{r['loop_per_s']:.2f} files/s; LA eval ({LA_EVAL_FILES:,} files) at the end-to-end rate: "
                         f"{format_seconds(LA_EVAL_FILES / rate(r))}")  # fmt: skip
        if r["pipeline"] == DEFAULTS:
            lines.append(f"       {DEFAULTS} chose {r['settings']}")
    return "\n".join(lines)


def peak_limit(peak: dict[str, float], flops: dict[str, float], kind: str, bf16: bool = False) -> float:
    """Samples/s at the measured matmul rate of the row's precision (bf16, else fp32 on the CPU / TF32 on CUDA):
    the compute limit of a training step or a forward in that precision."""
    rate_ = peak["bf16"] if bf16 else peak.get("fp32", peak.get("tf32"))
    return rate_ / flops[kind]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def measure_peak(device: torch.device) -> dict[str, float]:
    """The matmul peak of each precision a row may run in, measured in this run: fp32 and bf16 on the CPU (bf16 is
    emulated, and slow, where the CPU has no native bf16); TF32 and bf16 on CUDA."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        return {"tf32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    return {"fp32": matmul_peak(device), "bf16": matmul_peak(device, torch.bfloat16)}


# ----------------------------------------------------------------------------- the benchmarks


def bench_train_and_score(args, device: torch.device, folder: Path) -> list[dict]:
    """--what train / score / all: ours vs naive, each in its own process, on generated files."""
    cuda = device.type == "cuda"
    rows = []
    common = dict(device=str(device), frontend=args.frontend, num_frames=args.num_frames, num_workers=args.num_workers)
    if args.what in ("train", "all"):
        n = args.n or (12_800 if cuda else 16)
        batch = args.batch_size or (64 if cuda else 4)
        pool = folder / "train_pool"
        generate_la_files(pool, max(2, min(n, args.train_pool)), "train")
        generate_la_files(pool, 2, "dev")
        root = str(pool / "LA")
        naive = {**common, "num_workers": args.num_workers if args.num_workers is not None else os.cpu_count() or 1}
        rows.append(dict(pipeline="naive", what="train", **run_task("train_naive", root=root, n=n, batch_size=batch,
                                                                     **naive)))  # fmt: skip
        print(format_row(rows[-1]), file=sys.stderr)
        # the defaults (no flags: the measured choice), then fixed settings: fp32 + channels_last, the CPU's
        # choice before issue 20, and one change at a time from it
        fixed = {"precision": "fp32", "channels_last": True}
        variants = [(DEFAULTS, {"precision": args.precision, "channels_last": args.channels_last})]
        if not cuda:
            variants += [("ours --precision fp32", fixed), ("ours --cache-audio", {**fixed, "cache": True}),
                         ("ours --no-channels-last", {**fixed, "channels_last": False}),
                         ("ours --precision bf16", {**fixed, "precision": "bf16"})]  # fmt: skip
        for label, extra in variants:
            kw = {**common, **extra}
            settled = run_task("train_settle", root=root, n=n, batch_size=batch, **kw) if label == DEFAULTS else {}
            rows.append(dict(pipeline=label, what="train", **run_task("train_ours", root=root, n=n, batch_size=batch,
                                                                       **kw)))  # fmt: skip
            if settled:
                rows[-1]["measured_s"] = settled["measured_s"]
            print(format_row(rows[-1]), file=sys.stderr)
    if args.what in ("score", "all"):
        n = args.n or (LA_EVAL_FILES if cuda else 48)
        naive_n = min(args.naive_n or (4096 if cuda else 16), n)
        score = folder / "score"
        generate_la_files(score, n, "eval")
        ckpt = save_bench_checkpoint(score / "bench_ckpt.pt", args.num_frames, args.frontend)
        root = str(score / "LA")
        rows.append(dict(pipeline="naive", what="score", **run_task(
            "score_naive", ckpt=str(ckpt), root=root, n=naive_n, out=str(score / "naive_scores.txt"),
            device=str(device), batch_size=args.batch_size or (64 if cuda else 8),
            num_workers=args.num_workers if args.num_workers is not None else os.cpu_count() or 1)))  # fmt: skip
        print(format_row(rows[-1]), file=sys.stderr)
        variants = [(DEFAULTS, args.precision)] + ([] if cuda else [("ours --precision fp32", "fp32")])
        for label, precision in variants:
            rows.append(dict(pipeline=label, what="score", **run_task(
                "score_ours", ckpt=str(ckpt), root=root, out=str(score / "scores_eval.txt"), device=str(device),
                batch_size=args.batch_size, num_workers=args.num_workers, precision=precision,
                channels_last=args.channels_last if label == DEFAULTS else True)))  # fmt: skip
            print(format_row(rows[-1]), file=sys.stderr)
    return rows


def bench_metrics(protocols: Path) -> str | None:
    """metrics.py's cost on LA eval's 71,237 trials (the B01 baseline scores and the organisers' ASV scores under
    --protocols): reading both files, the EER, the min t-DCF, the whole report. None when the files are absent."""
    import metrics

    cm = protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt"
    asv_path = protocols / metrics.ASV_SCORES_FILE.format(split="eval")
    if not (cm.is_file() and asv_path.is_file()):
        return None
    t0 = time.perf_counter()
    scores, asv = metrics.read_score_file(cm), metrics.read_asv_scores(asv_path)
    t1 = time.perf_counter()
    metrics.compute_eer(scores.bonafide_scores, scores.spoof_scores)
    t2 = time.perf_counter()
    metrics.compute_min_tdcf(scores.bonafide_scores, scores.spoof_scores, asv)
    t3 = time.perf_counter()
    metrics.evaluate_scores(scores, asv)
    t4 = time.perf_counter()
    return (f"metrics on {len(scores):,} eval scores (B01): read CM + ASV files {t1 - t0:.3f} s, EER {t2 - t1:.4f} s, "
            f"min t-DCF {t3 - t2:.4f} s, whole report (with per-attack EERs) {t4 - t3:.4f} s")  # fmt: skip


def format_row(r: dict) -> str:
    chose = f"; {r['settings']}" if r["pipeline"] == DEFAULTS else ""
    return (f"  {r['what']} {r['pipeline']}: {rate(r):.2f} samples/s, peak {gib(r['peak_bytes'])} "
            f"({r['wall_s']:.0f} s){chose}")  # fmt: skip


def parse_sizes(text: str) -> list[int | None]:
    """'1000,5000,all' -> [1000, 5000, None]."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) >= 10:
            sizes.append(int(part))
        else:
            raise ValueError(f"--sizes: {part!r} is neither a file count >= 10 nor 'all' (e.g. 1000,5000,25000,all)")
    return sizes


def bench_scale(args, folder: Path) -> list[dict]:
    """--what scale: data.py --check, Dataset construction, one tiny training epoch and split scoring at growing N.

    The trees are hard links to the real mini tree's audio (../shared/data or --scale-source), with the official
    protocols' lines (--protocols); the audio repeats.
    """
    source, protocols = Path(args.scale_source), Path(args.protocols)
    if not (protocols / "ASVspoof2019.LA.cm.eval.trl.txt").is_file():
        raise FileNotFoundError(f"--protocols {protocols}: no official CM protocols there (ASVspoof2019.LA.cm.*.txt)")
    sources = sorted(Path(source).rglob("*.flac"))
    if not sources:
        raise FileNotFoundError(f"--scale-source {source}: no .flac files to link to")
    ckpt = save_bench_checkpoint(folder / "scale_tiny.pt", 600, "mel", recipe="tiny")
    rows = []
    for size in parse_sizes(args.sizes):
        tree = folder / f"scale_{size or 'all'}"
        t0 = time.monotonic()
        layout = link_tree(tree, protocols, sources, size)
        n = sum(len(read_cm_protocol(layout.protocol_path(s))) for s in SPLITS)
        print(f"scale {n:,} files: tree linked in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        what = [("check", dict(root=str(layout.root))), ("datasets", dict(root=str(layout.root)))]
        if not args.skip_train:
            what.append(("train_epoch", dict(root=str(layout.root), num_workers=args.num_workers)))
        if not args.skip_score:
            what.append(("score_ours", dict(ckpt=str(ckpt), root=str(layout.root), out=str(tree / "scores.txt"),
                                            device="cpu", num_workers=args.num_workers, report=False)))  # fmt: skip
        for name, kw in what:
            r = run_task(name, **kw)
            rows.append(dict(size=n, step=name, **r))
            print(f"  {name}: {r['samples']:,} items in {r['seconds']:.1f} s, {1e3 * r['seconds'] / r['samples']:.3f} "
                  f"ms/item, peak {gib(r['peak_bytes'])}", file=sys.stderr)  # fmt: skip
    return rows


def format_scale(rows: list[dict]) -> str:
    names = {"check": "data.py --check", "datasets": "Dataset construction (3 splits)",
             "train_epoch": "tiny training epoch (train split)", "score_ours": "split scoring (eval, tiny model)"}  # fmt: skip
    head = f"{'files in tree':>13}  {'step':<34} {'items':>8} {'seconds':>9} {'ms/item':>9} {'peak memory':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['size']:>13,}  {names[r['step']]:<34} {r['samples']:>8,} {r['seconds']:>9.2f} "
                     f"{1e3 * r['seconds'] / max(r['samples'], 1):>9.3f} {gib(r['peak_bytes']):>12}")  # fmt: skip
    return "\n".join(lines)


def bench_gpu(args, device: torch.device, folder: Path) -> str:
    """--what gpu: the one prepared GPU check (<= 8 minutes on an H100/H200). See the module docstring."""
    quick = device.type != "cuda"  # the same steps at toy sizes, so CI runs every line of this function on a CPU
    n_train = args.n or (12_800 if not quick else 8)
    batch = args.batch_size or (64 if not quick else 2)
    frames = args.num_frames if not quick else 32
    fe_name = args.frontend if not quick else "mel"
    workers = default_num_workers(args.num_workers, device)
    n_eval = args.gpu_eval_files or (LA_EVAL_FILES if not quick else 40)
    pool = folder / "gpu_pool"
    generate_la_files(pool, 512 if not quick else 8, "train")
    generate_la_files(pool, 2, "dev")
    root = str(pool / "LA")
    peak = measure_peak(device)
    flops = flops_per_sample(make_frontend(fe_name).n_bins, frames)
    lines = [f"device: {describe_device(device)}", *[f"matmul peak ({k}): {v / 1e12:.1f} TFLOP/s" for k, v in peak.items()],
             f"LCNN {fe_name} {make_frontend(fe_name).n_bins} x {frames}: {flops['train'] / 1e9:.1f} GFLOP per training "
             f"sample, {flops['forward'] / 1e9:.1f} per forward", ""]  # fmt: skip
    common = dict(root=root, n=n_train, batch_size=batch, device=str(device), frontend=fe_name, num_frames=frames,
                  num_workers=workers, cache=True)  # fmt: skip

    def line(label: str, r: dict, kind: str = "train") -> str:
        share = rate(r) / peak_limit(peak, flops, kind, r["bf16"])
        limit = "bf16" if r["bf16"] else next(k for k in peak if k != "bf16")
        return (f"{label:<52} {rate(r):>10,.0f} /s  peak {gib(r['peak_bytes']):>10}  {share:>5.0%} of the "
                f"{limit} limit  ({r['wall_s']:.0f} s)")  # fmt: skip

    defaults = dict(common, precision=args.precision, channels_last=args.channels_last)
    steps = [("train, no flags (the measured choice), --cache-audio", "train_ours", defaults, "train"),
             ("train bf16, --cache-audio", "train_ours", dict(common, precision="bf16"), "train"),
             ("train fp32 (TF32), --cache-audio", "train_ours", dict(common, precision="fp32"), "train"),
             ("train bf16, --cache-audio, torch.compile", "train_ours", dict(common, precision="bf16", compile=True),
              "train")]  # fmt: skip
    for label, name, kw, kind in steps:
        try:
            r = run_task(name, **kw)
            lines.append(line(f"{label} (batch {batch})", r, kind))
            if kw is defaults:
                lines.append(f"  chose {r['settings']}")
        except RuntimeError as e:
            lines.append(f"{label}: failed: {str(e).splitlines()[-1]}")
        print(lines[-1], file=sys.stderr)
    for cache in (False, True):
        r = run_task("loader", root=root, n=n_train, batch_size=batch, num_workers=workers, cache=cache,
                     device=str(device))  # fmt: skip
        label = f"loader only, {workers} workers" + (", --cache-audio" if cache else "")
        lines.append(f"{label:<52} {rate(r):>10,.0f} files/s")
        print(lines[-1], file=sys.stderr)
    # an LA-eval-size set: hard links to a few generated files
    ev = folder / "gpu_eval"
    gen = generate_la_files(folder / "gpu_eval_src", 256 if not quick else 4, "eval")
    sources = sorted(gen.audio_dir("eval").glob("*.flac"))
    layout = LALayout(ev / "LA")
    layout.audio_dir("eval").mkdir(parents=True, exist_ok=True)
    lines_eval = [f"LA_{i % 67:04d} LA_E_{2_000_000 + i} - {'-' if i % 10 == 0 else f'A{7 + i % 13:02d}'} "
                  f"{'bonafide' if i % 10 == 0 else 'spoof'}" for i in range(n_eval)]  # fmt: skip
    present = {d.name for d in os.scandir(layout.audio_dir("eval"))}
    for i, ln in enumerate(lines_eval):
        name = f"{ln.split()[1]}.flac"
        if name not in present:
            os.link(sources[i % len(sources)], layout.audio_dir("eval") / name)
    layout.protocol_path("eval").parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(layout.protocol_path("eval")) as f:
        f.write("\n".join(lines_eval) + "\n")
    ckpt = save_bench_checkpoint(ev / "ckpt.pt", frames, fe_name)
    r = run_task("score_ours", ckpt=str(ckpt), root=str(layout.root), out=str(ev / "scores.txt"), device=str(device),
                 num_workers=workers, precision=args.precision, channels_last=args.channels_last)  # fmt: skip
    lines.append(line(f"score {n_eval:,} eval-size files end to end", r, "forward")
                 + f"; {r['seconds']:.1f} s in all")  # fmt: skip
    lines.append(f"  chose {r['settings']}")
    if not quick:
        lines.append("goals: >= 6,000 training samples/s (>= 3,000 at the least); LA eval end to end in <= 60 s")
    print(lines[-1], file=sys.stderr)
    demo = Path(args.real_root) if args.real_root else None
    if demo and demo.exists():
        extra = [] if not quick else ["--frontend", "mel", "--num-frames", "32", "--batch-size", "8",
                                      "--limit-train", "16", "--limit-dev", "8"]  # fmt: skip
        r = run_task("real_run", root=str(demo), out=str(folder / "gpu_real"), device=str(device), epochs=3,
                     extra=extra, quiet=False)  # fmt: skip
        same = all(abs(a - b) < 1e-6 for a, b in zip(r["dev_eer"], r["dev_eer_resumed"]))
        lines.append(f"real run on {demo}: 3 epochs in {r['seconds']:.0f} s, dev EER "
                     + " / ".join(f"{e:.2f}" for e in r["dev_eer"]) + " %; stopped at 2 and resumed: "
                     + " / ".join(f"{e:.2f}" for e in r["dev_eer_resumed"]) + (" % (identical)" if same else " %"))  # fmt: skip
    else:
        lines.append(f"real run: skipped, no real tree at --real-root {demo}")
    print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


# ----------------------------------------------------------------------------- bf16 against fp32: the science


def train_run(out: Path, root: str, precision: str, seed: int, extra: list[str]) -> dict:
    """One train.py run in a child process (its own threads, nothing shared); returns its last metrics record."""
    cmd = [sys.executable, str(HERE / "train.py"), "--data-root", root, "--out", str(out), "--seed", str(seed),
           "--precision", precision, "--device", "cpu", *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LCNN_TUNE": "off"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


# the models trained by --what science: the tiny recipe, and the STC recipe's LCNN (863-bin STFT, dropout 0.75,
# cross-entropy, random crops, repeat padding) at a shorter input and the tiny recipe's faster schedule, so that it
# learns on the mini tree's 279 files in minutes on a CPU (at 600 frames and lr 3e-4 / batch 64 it takes hours to
# leave chance)
SCIENCE_MODELS = {
    "tiny": ["--recipe", "tiny"],
    "stc-shaped (863 x 200, lr 1e-3, batch 16, 4 epochs)": ["--recipe", "stc", "--num-frames", "200", "--lr", "1e-3",
                                                           "--batch-size", "16", "--epochs", "4", "--patience", "0"],
}  # fmt: skip


def bench_science(args, folder: Path) -> str:
    """Does bf16 change the science? Best dev EER of fp32 and bf16 training over seeds (tiny recipe and an
    STC-shaped model at a shorter input), then the same checkpoint's dev scores in fp32 and bf16."""
    import evaluate
    import metrics

    root = args.science_root
    shapes = {k: v for k, v in SCIENCE_MODELS.items() if k.split()[0] in args.science_models}
    w = max(len(k) for k in shapes)  # the model column fits the longest label
    lines = [f"{describe_device(torch.device('cpu'))}; data {root}; seeds {args.seeds}",
             f"{'model':<{w}} {'seed':>4} {'fp32 best dev EER':>18} {'bf16 best dev EER':>18} {'difference':>11}"]  # fmt: skip
    ckpt = None
    for name, extra in shapes.items():
        diffs = []
        for seed in args.seeds:
            eer = {}
            for precision in ("fp32", "bf16"):
                out = folder / f"science_{name.split()[0]}_{precision}_{seed}"
                eer[precision] = train_run(out, root, precision, seed, extra)["best_dev_eer"]
                ckpt = ckpt or out / "best.pt"
            diffs.append(eer["bf16"] - eer["fp32"])
            lines.append(f"{name:<{w}} {seed:>4} {eer['fp32']:>17.2f}% {eer['bf16']:>17.2f}% {diffs[-1]:>+10.2f}")
        lines.append(f"{name:<{w}} mean |difference| {np.mean(np.abs(diffs)):.2f} EER points over {len(diffs)} seeds")
    device = torch.device("cpu")
    scores = {}
    for precision in ("fp32", "bf16"):
        scorer = evaluate.load_scorer(ckpt, device, precision, channels_last=True, budget_s=0)
        res = evaluate.score_split(scorer, root, "dev", folder / f"science_scores_{precision}.txt", 8, 0,
                                   progress=False)  # fmt: skip
        scores[precision] = res.scores
    a, b = scores["fp32"], scores["bf16"]
    eers = [100 * metrics.compute_eer(s.bonafide_scores, s.spoof_scores)[0] for s in (a, b)]
    lines.append(f"one checkpoint ({ckpt.parent.name}) on dev, {len(a)} files: max |score bf16 - fp32| "
                 f"{np.max(np.abs(a.score - b.score)):.4f} (scores span {np.ptp(a.score):.2f}), EER {eers[0]:.2f} % "
                 f"fp32 / {eers[1]:.2f} % bf16")  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    add_input_args(parser)
    add_model_args(parser)
    parser.set_defaults(batch_size=None)  # --num-workers None: ours follows cli.default_num_workers, naive uses cores
    g = parser.add_argument_group("bench.py")
    g.add_argument("--what", choices=("train", "score", "all", "scale", "gpu", "science"), default="all",
                   help="which benchmark (science: fp32 against bf16 training and scoring, dev EER over seeds)")  # fmt: skip
    g.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="--what science: training seeds")
    g.add_argument(
        "--science-models",
        nargs="+",
        choices=[k.split()[0] for k in SCIENCE_MODELS],
        default=[k.split()[0] for k in SCIENCE_MODELS],
        help="--what science: the models trained",
    )
    g.add_argument("--science-root", default=str(HERE.parent / "shared" / "data" / "asvspoof2019_la_mini" / "LA"),
                   help="--what science: the LA tree trained on (default: the real mini tree)")  # fmt: skip
    g.add_argument(
        "--n", type=int, help="training samples / files to score (default: cpu 16 / 48, cuda 12,800 / 71,237)"
    )
    g.add_argument("--naive-n", type=int, help="files the naive scorer runs on (default: cpu 16, cuda 4,096)")
    g.add_argument("--train-pool", type=int, default=256, help="generated files the training samples come from")
    g.add_argument("--files-dir", type=Path, help="where generated files and trees go and are reused (default: temp)")
    g.add_argument("--sizes", default="1000,5000,25000,all", help="--what scale: tree sizes in files ('all': 121,461)")
    shared = HERE.parent / "shared" / "data"
    g.add_argument("--protocols", default=str(shared / "protocols" / "asvspoof2019_la"),
                   help="folder of the official LA protocols (--what scale; --what score: the B01 and ASV eval scores "
                        "time metrics.py) (default: ../shared/data/protocols/...)")  # fmt: skip
    g.add_argument("--scale-source", default=str(shared / "asvspoof2019_la_mini" / "LA"),
                   help="--what scale: real audio the tree's files link to")  # fmt: skip
    g.add_argument("--skip-train", action="store_true", help="--what scale: leave out the training epoch")
    g.add_argument("--skip-score", action="store_true", help="--what scale: leave out the split scoring")
    g.add_argument("--gpu-eval-files", type=int, help="--what gpu: files in the eval-size set (default 71,237)")
    g.add_argument("--real-root", default=str(HERE / "demo_data" / "LA"),
                   help="--what gpu: real LA tree of the 3-epoch CUDA run (default: the embedded demo set)")  # fmt: skip
    g.add_argument("--json-out", type=Path, help="also write the rows as JSON")
    g.add_argument("--task", help=argparse.SUPPRESS)  # internal: one measurement in a child process
    g.add_argument("--task-args", default="{}", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.task:
        return child_main(args.task, args.task_args)
    device = resolve_device(args.device)
    if args.json_out:
        check_output_path(args.json_out, "--json-out")  # before minutes of benchmarking
    if args.n is not None and args.n < (10 if args.what == "score" else 2):
        raise ValueError(f"--n must be at least {10 if args.what == 'score' else 2} (an EER needs both classes and "
                         f"several distinct scores), got {args.n}")  # fmt: skip
    for flag, low in (("naive_n", 2), ("train_pool", 2), ("gpu_eval_files", 2), ("batch_size", 2)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least {low}, got {value}")
    folder = args.files_dir or Path(tempfile.mkdtemp(prefix="lcnn_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if args.what == "scale":
            rows = bench_scale(args, folder)
            text = f"{describe_device(torch.device('cpu'))}\n" + format_scale(rows)
        elif args.what == "gpu":
            rows, text = [], bench_gpu(args, device, folder)
        elif args.what == "science":
            rows, text = [], bench_science(args, folder)
        else:
            peak = measure_peak(device)
            flops = flops_per_sample(make_frontend(args.frontend).n_bins, args.num_frames)
            rows = bench_train_and_score(args, device, folder)
            text = format_table(rows, describe_device(device), peak, flops)
            if args.what in ("score", "all") and (line := bench_metrics(Path(args.protocols))):
                text += "\n" + line
    finally:
        if args.files_dir is None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print(text)
    if args.json_out:
        with atomic_write(args.json_out) as f:
            json.dump({"device": describe_device(device), "rows": rows, "text": text}, f, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
