"""benchkit.py -- what bench.py measures with, kept out of its way so its timed loops read in one screen.

Inside, exactly:
    synth_utterance(num_samples, rng)     speech-like synthetic audio (voiced syllables, fricatives, pauses)
    generate_la_files(folder, n, split)   n LA-like FLAC files + their CM protocol in the official layout (idempotent)
    PeakMemory(device)                    peak memory of a block: CUDA max allocated, or RSS + workers' private memory
                                          sampled from /proc (helpers _resident_bytes, _private_bytes, _children)
    sync(device)                          torch.cuda.synchronize where there is one
    link_tree(folder, protocols, sources, total)   an LA-shaped tree of hard links to a few real files
    LA_FILES                              the official CM protocol sizes per split
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cli import atomic_write
from corpora import SPLITS, LALayout, spread_entries
from data import SAMPLE_RATE
from metrics import ASV_SCORES_DIR, ASV_SCORES_FILE

LA_FILES = {"train": 25_380, "dev": 24_844, "eval": 71_237}  # official CM protocol lines


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


def _resident_bytes(pid: int | str) -> int:
    """Resident set of a process from /proc/PID/statm (microseconds a read), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _private_bytes(pid: int | str) -> int:
    """Private (unshared) memory of a process, Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, 0 if gone.

    A forked worker maps all of its parent's pages copy-on-write; its resident set counts them again, its private
    memory only the pages it really has of its own (its tensors, the pages it wrote). ~15 ms a read with torch's
    mappings, so the children are read less often than the parent.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("Private_Clean", "Private_Dirty")))
    except (OSError, IndexError, ValueError):
        return 0


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

    CUDA: torch.cuda.max_memory_allocated. CPU: the resident set of this process plus the private memory of its
    children (DataLoader or --check workers: what they hold of their own; the pages they share with this process,
    copy-on-write or library, are not counted twice), sampled from /proc every `every` seconds (children every
    5 x `every`); elsewhere the lifetime max RSS.
    """

    def __init__(self, device: torch.device, every: float = 0.05):
        self.device, self.every, self.peak = device, every, 0
        self.proc = Path("/proc/self/statm").exists()
        self._stop = threading.Event()
        self._kids: dict[str, int] = {}
        self._n = 0

    def sample(self) -> int:
        pid = os.getpid()
        if self.proc:
            if self._n % 5 == 0:
                self._kids = {k: _private_bytes(k) for k in _children(pid)}
            self._n += 1
            return _resident_bytes(pid) + sum(self._kids.values())
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


# ----------------------------------------------------------------------------- an LA-shaped tree of hard links


def link_tree(
    folder: str | os.PathLike, protocols: str | os.PathLike, sources: list[Path], total: int | None
) -> LALayout:
    """An LA tree under `folder/LA` whose CM protocols hold `total` official lines (all: None), split as LA is.

    Every listed utterance is a hard link to one of `sources` (real audio: it repeats), the ASV protocols and
    scores are linked from `protocols`, so evaluate.py's t-DCF runs too. Idempotent; links are made only for files
    not there yet.
    """
    layout = LALayout(Path(folder) / "LA")
    protocols = Path(protocols)
    share = {s: LA_FILES[s] / sum(LA_FILES.values()) for s in SPLITS}
    k = 0
    for split in SPLITS:
        name = layout.protocol_path(split).name
        lines = [ln for ln in (protocols / name).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if total is not None:
            lines = spread_entries(lines, max(2, round(total * share[split])))
        audio = layout.audio_dir(split)
        audio.mkdir(parents=True, exist_ok=True)
        present = {d.name for d in os.scandir(audio)}
        for line in lines:
            utt = line.split()[1]
            if f"{utt}.flac" not in present:
                os.link(sources[k % len(sources)], audio / f"{utt}.flac")
            k += 1
        with atomic_write(layout.protocol_path(split)) as f:
            f.write("\n".join(lines) + "\n")
    asv = layout.root / ASV_SCORES_DIR
    asv.mkdir(parents=True, exist_ok=True)
    for p in protocols.glob(ASV_SCORES_FILE.format(split="*")):
        if not (asv / p.name).exists():
            os.link(p, asv / p.name)
    return layout
