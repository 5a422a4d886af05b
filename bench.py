"""bench.py -- training and scoring speed and memory, against a naive pipeline run in the same script.

    python bench.py --device cpu --what all                       # small N: a few minutes on a 2-core CPU
    python bench.py --device cuda --what train --n 12800          # target >= 3,000 samples/s (863 x 600)
    python bench.py --device cuda --what score --n 71237 --files-dir /tmp/la_bench   # target <= 120 s end to end

Naive pipeline (what course repositories do): the Dataset applies the front-end to each item in the DataLoader
workers, float32, contiguous (NCHW) tensors, no caching: every file is decoded again at every epoch.
Ours: workers only crop/pad waveforms (decoded once and cached as int16 when training), the front-end runs per
batch on the device, the model runs in channels_last, under bf16 autocast on CUDA, scoring under inference_mode.

Training uses the `stc` recipe's model (LCNN on 863 x 600 log-power STFT, dropout 0.75, cross-entropy, Adam) on a
pool of generated files sampled with replacement. Scoring goes end to end through evaluate.py's functions
(checkpoint load, decode, score, score file written and checked, EER, DET plot) on N generated FLAC files of
realistic LA length (lognormal, mean ~3.5 s) in the official layout; the naive scorer runs on a subset.

Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the resident set of this process plus the anonymous
resident memory of its DataLoader workers, sampled every 50 ms from /proc (`PeakMemory`).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

import evaluate
from data import (
    SAMPLE_RATE,
    ASVspoof2019LA,
    LALayout,
    atomic_write,
    collate,
    make_frontend,
    resolve_device,
    run_cli,
)
from model import build_model

LA_EVAL_FILES = 71_237
# The stc recipe's model; --frames changes only the input length.
STC_MODEL = {"dropout": 0.75, "head": "linear"}


# ----------------------------------------------------------------------------- synthetic LA-like audio


def synth_utterance(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like audio: voiced syllables (harmonics of a gliding f0 shaped by three formants), fricative noise
    bursts and pauses, between short silences, over a little background noise.

    Not speech, but it decodes, compresses and fills the spectrum the way LA files do, which is what the
    benchmark needs. Returns (num_samples,) float32 in [-1, 1].
    """
    out = rng.normal(0, 3e-4, num_samples)  # background noise floor
    pos = int(rng.uniform(0.1, 0.4) * sample_rate)  # leading silence
    end = num_samples - int(rng.uniform(0.1, 0.3) * sample_rate)
    while pos < end:
        n = min(int(rng.uniform(0.08, 0.3) * sample_rate), end - pos)
        kind = rng.choice(3, p=(0.65, 0.2, 0.15))  # voiced, fricative, pause
        if kind == 0 and n > 0:
            t = np.arange(n) / sample_rate
            f0 = rng.uniform(90, 240) * (1 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-3))  # (n,) gliding
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            formants = np.array([rng.uniform(300, 900), rng.uniform(900, 2400), rng.uniform(2400, 3500)])
            k = np.arange(1, int(7000 / f0.max()) + 1)  # harmonics below 7 kHz
            gain = np.exp(-(((k[:, None] * f0.mean() - formants[None, :]) / 200) ** 2)).sum(1) + 0.02  # (K,)
            seg = (gain[:, None] * np.sin(k[:, None] * phase[None, :])).sum(0) / gain.sum()
        elif kind == 1 and n > 0:
            spec = np.fft.rfft(rng.normal(0, 1, n))
            freqs = np.fft.rfftfreq(n, 1 / sample_rate)
            spec[freqs < rng.uniform(2000, 4000)] = 0  # high-pass: /s/, /f/-like
            seg = np.fft.irfft(spec, n) * 0.3
        else:
            seg = np.zeros(n)
        out[pos : pos + n] += seg * np.hanning(n) * rng.uniform(0.1, 0.5)
        pos += n
    return np.clip(out, -1, 1).astype(np.float32)


def _write_one(job: tuple[str, int, int, int]) -> None:
    path, num_samples, seed, index = job
    import soundfile as sf

    rng = np.random.default_rng([seed, index])
    tmp = f"{path}.tmp"
    sf.write(tmp, synth_utterance(num_samples, rng), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def generate_la_files(
    folder: str | os.PathLike, n: int, split: str = "eval", seed: int = 0, workers: int | None = None
) -> LALayout:
    """Write n FLAC files of realistic LA length and their CM protocol into `folder/LA` (official layout).

    Lengths are lognormal with mean ~3.5 s (clipped to 1..12 s); about 10 % bona fide (as LA eval), spoofs cycle
    through the split's attacks. Idempotent: files already there are kept, and the protocol is written last, so
    an interrupted generation is completed by the next call.

    Returns:
        The LALayout of `folder/LA`.
    """
    if n < 2:
        raise ValueError(f"--n must be at least 2 (one bona fide and one spoof file), got {n}")
    layout = LALayout(Path(folder) / "LA")
    audio_dir = layout.audio_dir(split)
    audio_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(3.5) - 0.35**2 / 2, 0.35, n), 1.0, 12.0)
    attacks = [f"A{a:02d}" for a in (range(7, 20) if split == "eval" else range(1, 7))]
    prefix = {"train": "T", "dev": "D", "eval": "E"}[split]
    lines, jobs = [], []
    present = {p.name for p in os.scandir(audio_dir)}
    for i in range(n):
        utt = f"LA_{prefix}_{1_000_000 + i}"
        bona = i % 10 == 0
        system, key = ("-", "bonafide") if bona else (attacks[i % len(attacks)], "spoof")
        lines.append(f"LA_{i % 67:04d} {utt} - {system} {key}\n")
        if f"{utt}.flac" not in present:
            jobs.append((str(audio_dir / f"{utt}.flac"), int(seconds[i] * SAMPLE_RATE), seed, i))
    if jobs:
        t0 = time.monotonic()
        workers = workers or os.cpu_count() or 1
        if workers > 1 and len(jobs) > 8:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, jobs, chunksize=64))
        else:
            for job in jobs:
                _write_one(job)
        print(f"generated {len(jobs):,} FLAC files in {audio_dir} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    protocol = layout.protocol_path(split)
    protocol.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(protocol) as f:
        f.write("".join(lines))
    return layout


# ----------------------------------------------------------------------------- timing and memory


def _statm_bytes(pid: int | str) -> tuple[int, int]:
    """(resident, resident anonymous) bytes of a process from /proc/PID/statm, (0, 0) if it is gone.

    statm costs microseconds; smaps_rollup's PSS would split shared pages fairly but costs ~15 ms per read with
    torch's mappings, enough for the sampler itself to slow a 2-core benchmark down.
    """
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
    except OSError:
        return 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    resident, shared = int(fields[1]) * page, int(fields[2]) * page
    return resident, resident - shared


def _children(pid: int) -> list[str]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += f.read().split()
    except OSError:
        pass
    return kids


class PeakMemory:
    """Peak memory of the block it wraps.

    CUDA: torch.cuda.max_memory_allocated. CPU: the resident set of this process plus the anonymous resident
    memory of its children (DataLoader workers: their tensors and heaps; the libraries they share with this
    process are not counted twice), sampled every `every` seconds from /proc; elsewhere the lifetime max RSS.
    """

    def __init__(self, device: torch.device, every: float = 0.05):
        self.device, self.every, self.peak = device, every, 0
        self.proc = Path("/proc/self/statm").exists()
        self._stop = threading.Event()

    def sample(self) -> int:
        pid = os.getpid()
        if self.proc:
            return _statm_bytes(pid)[0] + sum(_statm_bytes(k)[1] for k in _children(pid))
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.sample())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.sample()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.sample())

    @property
    def label(self) -> str:
        return "GPU alloc" if self.device.type == "cuda" else ("RSS+workers" if self.proc else "max RSS")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- training


def bench_train(
    pipeline: str,
    layout: LALayout,
    split: str,
    n: int,
    batch_size: int,
    device: torch.device,
    num_frames: int = 600,
    frontend: str = "stft",
    num_workers: int = 2,
    warmup: int = 1,
) -> dict:
    """Training throughput of one pipeline: forward, cross-entropy, backward and Adam step on random crops.

    Args:
        pipeline: "naive" or "ours" (module docstring).
        layout, split: the files to train on (sampled with replacement).
        n: samples to time, after `warmup` batches that are not timed (worker start-up, cuDNN autotuning).
        batch_size, device, num_frames, frontend, num_workers: as the flags.

    Returns:
        {"pipeline", "what", "samples", "seconds", "samples_per_s", "peak_bytes", "memory"}.
    """
    if pipeline not in ("naive", "ours"):
        raise ValueError(f"pipeline must be 'naive' or 'ours', got {pipeline!r}")
    torch.manual_seed(0)
    fe = make_frontend(frontend)
    ours, cuda = pipeline == "ours", device.type == "cuda"
    steps = max(1, math.ceil(n / batch_size))
    ds = ASVspoof2019LA(layout, split, fe.num_samples(num_frames), frontend=None if ours else fe,
                        random_crop=True, cache=ours)  # fmt: skip
    sampler = RandomSampler(ds, replacement=True, num_samples=(steps + warmup) * batch_size)
    loader = DataLoader(ds, batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                        pin_memory=ours and cuda, drop_last=True,
                        prefetch_factor=4 if num_workers > 0 else None)  # fmt: skip
    model = build_model({"in_bins": fe.n_bins, "num_frames": num_frames, **STC_MODEL}).to(device).train()
    if ours:
        model = model.to(memory_format=torch.channels_last)
        fe = fe.to(device)
        torch.backends.cudnn.benchmark = cuda
    else:
        torch.backends.cudnn.benchmark = False  # course repositories leave it off
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, **({"fused": True} if ours and cuda else {}))

    def step(batch: dict) -> None:
        y = batch["label"].to(device, non_blocking=ours)
        if ours:
            x = fe(batch["x"].to(device, non_blocking=True))  # (B, 1, F, T) made on the device
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = batch["x"].to(device)  # (B, 1, F, T) made in the workers
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ours and cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    it = iter(loader)
    with PeakMemory(device) as mem:
        for _ in range(warmup):
            step(next(it))
        sync(device)
        t0 = time.monotonic()
        done = 0
        for batch in it:
            step(batch)
            done += batch["label"].shape[0]
        sync(device)
        seconds = time.monotonic() - t0
    del it, loader
    return {"pipeline": pipeline, "what": "train", "samples": done, "seconds": seconds,
            "samples_per_s": done / seconds, "peak_bytes": mem.peak, "memory": mem.label}  # fmt: skip


# ----------------------------------------------------------------------------- scoring


def save_bench_checkpoint(path: Path, num_frames: int, frontend: str = "stft") -> Path:
    """A randomly initialised stc-model checkpoint with train.py's keys (speed does not depend on the weights)."""
    torch.manual_seed(0)
    fe = make_frontend(frontend)
    model = build_model({"in_bins": fe.n_bins, "num_frames": num_frames, **STC_MODEL})
    ckpt = {"model": model.state_dict(), "model_args": model.model_args(),
            "args": {"frontend": frontend, "num_frames": num_frames, "pad": "repeat", "recipe": "stc"},
            "epoch": 0}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def bench_score_ours(
    ckpt: Path, layout: LALayout, out: Path, device: torch.device, batch_size: int, num_workers: int
) -> dict:
    """End to end through evaluate.py: load the checkpoint, score the eval split, write and check the score file,
    EER and per-attack table, DET plot. Wall time from the start of loading to the written plot."""
    for stale in (out, *evaluate.partial_paths(out)):
        stale.unlink(missing_ok=True)  # time a full run, not a resume
    with PeakMemory(device) as mem:
        t0 = time.monotonic()
        scorer = evaluate.load_scorer(ckpt, device)
        res = evaluate.score_split(scorer, layout, "eval", out, batch_size, num_workers, progress=False)
        result = evaluate.report_split(res.scores, layout, "eval", out.with_name(f"{out.stem}_det.png"))
        seconds = time.monotonic() - t0
    return {"pipeline": "ours", "what": "score", "samples": len(res.scores), "seconds": seconds,
            "samples_per_s": len(res.scores) / seconds, "peak_bytes": mem.peak, "memory": mem.label,
            "eer": result["eer"], "loop_per_s": res.files_per_s}  # fmt: skip


@torch.no_grad()
def bench_score_naive(
    ckpt: Path, layout: LALayout, n: int, out: Path, device: torch.device, batch_size: int, num_workers: int
) -> dict:
    """The course-repo scorer on the first n files: per-item STFT in workers, float32, no_grad, a plain write."""
    torch.backends.cudnn.benchmark = False  # course repositories leave it off
    with PeakMemory(device) as mem:
        t0 = time.monotonic()
        ckpt_dict = torch.load(ckpt, map_location="cpu", weights_only=True)
        model = build_model(ckpt_dict["model_args"])
        model.load_state_dict(ckpt_dict["model"])
        model = model.to(device).eval()
        fe = make_frontend(ckpt_dict["args"]["frontend"])
        entries = layout.protocol("eval")[:n]
        ds = ASVspoof2019LA(layout, "eval", fe.num_samples(model.num_frames), frontend=fe, entries=entries)
        loader = DataLoader(ds, batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
        with open(out, "w") as f:
            for batch in loader:
                logits = model(batch["x"].to(device)).cpu()
                for utt, system, s in zip(batch["utt_id"], batch["system"], (logits[:, 1] - logits[:, 0]).tolist()):
                    f.write(f"{utt} {system} {'bonafide' if system == '-' else 'spoof'} {s}\n")
        seconds = time.monotonic() - t0
    return {"pipeline": "naive", "what": "score", "samples": len(ds), "seconds": seconds,
            "samples_per_s": len(ds) / seconds, "peak_bytes": mem.peak, "memory": mem.label}  # fmt: skip


# ----------------------------------------------------------------------------- report


def format_table(rows: list[dict], device: torch.device) -> str:
    """One line per pipeline: samples/s, peak memory, ratio against the naive pipeline of the same task."""
    naive = {r["what"]: r["samples_per_s"] for r in rows if r["pipeline"] == "naive"}
    lines = [f"device: {describe_device(device)}",
             f"{'task':<6} {'pipeline':<8} {'items':>7} {'seconds':>9} {'samples/s':>10} {'peak memory':>22} {'vs naive':>9}"]  # fmt: skip
    for r in rows:
        ratio = r["samples_per_s"] / naive[r["what"]] if r["what"] in naive else float("nan")
        memory = f"{r['peak_bytes'] / 2**30:.2f} GiB {r['memory']}"
        lines.append(
            f"{r['what']:<6} {r['pipeline']:<8} {r['samples']:>7,} {r['seconds']:>9.2f} {r['samples_per_s']:>10.2f} "
            f"{memory:>22} {ratio:>8.2f}x"
        )
        if r["what"] == "score" and r["pipeline"] == "ours":
            lines.append(
                f"       ours end to end (load, score, write + check, EER, DET); its scoring loop alone: "
                f"{r['loop_per_s']:.2f} files/s. LA eval ({LA_EVAL_FILES:,} files) at the end-to-end rate: "
                f"{LA_EVAL_FILES / r['samples_per_s']:,.0f} s"
            )
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1")
    parser.add_argument("--what", choices=("train", "score", "all"), default="all", help="which benchmark to run")
    parser.add_argument(
        "--n", type=int, help="training samples / files to score (default: cpu 8 / 64, cuda 12,800 / 71,237)"
    )
    parser.add_argument("--naive-n", type=int, help="files the naive scorer runs on (default: cpu 16, cuda 4,096)")
    parser.add_argument("--batch-size", type=int, help="training batch (default: cpu 4, cuda 64); scoring uses 4x it")
    parser.add_argument("--frames", type=int, default=600, help="feature frames per item (863 x frames STFT)")
    parser.add_argument("--frontend", choices=("stft", "mel"), default="stft", help="stft: the stc recipe")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers")
    parser.add_argument(
        "--files-dir", type=Path, help="where generated files go and are reused (default: a temp dir, removed)"
    )
    parser.add_argument("--train-pool", type=int, default=256, help="generated files the training samples come from")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (64 if cuda else 4)
    n_train = args.n or (12_800 if cuda else 8)
    n_score = args.n or (LA_EVAL_FILES if cuda else 64)
    naive_n = min(args.naive_n or (4096 if cuda else 16), n_score)
    folder = args.files_dir or Path(tempfile.mkdtemp(prefix="lcnn_bench_"))
    rows = []
    try:
        if args.what in ("train", "all"):
            layout = generate_la_files(folder / "train_pool", args.train_pool, "train")
            for pipeline in ("naive", "ours"):
                rows.append(bench_train(pipeline, layout, "train", n_train, batch, device, args.frames,
                                        args.frontend, args.num_workers))  # fmt: skip
                print(format_table(rows, device).splitlines()[-1], file=sys.stderr)
        if args.what in ("score", "all"):
            layout = generate_la_files(folder / "score", n_score, "eval")
            ckpt = save_bench_checkpoint(folder / "score" / "bench_ckpt.pt", args.frames, args.frontend)
            out = folder / "score" / "scores_eval.txt"
            rows.append(bench_score_naive(ckpt, layout, naive_n, out.with_name("naive_scores.txt"), device,
                                          4 * batch, args.num_workers))  # fmt: skip
            rows.append(bench_score_ours(ckpt, layout, out, device, 4 * batch, args.num_workers))
    finally:
        if args.files_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(format_table(rows, device))
    return 0


if __name__ == "__main__":
    run_cli(main)
