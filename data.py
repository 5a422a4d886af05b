"""data.py -- ASVspoof 2019 LA as users have it on disk: protocols, layouts, audio, front-ends, Dataset.

    python data.py --data-root ROOT --check [--split S] [--json] [--deep]
    python data.py --data-root ROOT --show LA_T_4179989 --out item.png
    python data.py --download --to DIR [--source datashare|kaggle]

Conventions used by every script of the collection:
  * label 1 = bona fide, 0 = spoof, so a model's two outputs are [spoof, bona fide];
  * audio is read with soundfile (FLAC and WAV; torchaudio 2.9's `load` needs TorchCodec and FFmpeg, which are
    not on these machines), downmixed to mono and resampled to 16 kHz; all DSP is torch/torchaudio;
  * features are (B, 1, F, T) tensors made on any device by a front-end module from fixed-length waveforms.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

SAMPLE_RATE = 16_000
LABEL_SPOOF, LABEL_BONAFIDE = 0, 1
SPLITS = ("train", "dev", "eval")
PROTOCOL_FILES = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
ASV_SCORES_DIR = "ASVspoof2019_LA_asv_scores"


# ----------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class ProtocolEntry:
    """One line of an official CM protocol: `SPEAKER UTT_ID - SYSTEM KEY`."""

    speaker: str  # LA_0079
    utt_id: str  # LA_T_1138215
    system: str  # "-" for bona fide, A01..A19 for spoofs
    key: str  # "bonafide" | "spoof"

    @property
    def label(self) -> int:
        return LABEL_BONAFIDE if self.key == "bonafide" else LABEL_SPOOF


def parse_protocol_line(line: str, where: str) -> ProtocolEntry:
    """Parse one CM protocol line; `where` ("file line N") prefixes any error."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"{where}: expected 5 fields (speaker utt_id - system key), got {len(fields)}: {line.strip()!r}"
        )
    speaker, utt_id, _env, system, key = fields
    if key not in ("bonafide", "spoof"):
        raise ValueError(f"{where}: key must be 'bonafide' or 'spoof', got {key!r}: {line.strip()!r}")
    is_attack = len(system) == 3 and system[0] == "A" and system[1:].isdigit()
    if (key == "bonafide" and system != "-") or (key == "spoof" and not is_attack):
        raise ValueError(
            f"{where}: system must be '-' for bonafide and A01..A19 for spoof, got {system!r} with key {key!r}"
        )
    return ProtocolEntry(speaker, utt_id, system, key)


def read_cm_protocol(path: str | os.PathLike) -> list[ProtocolEntry]:
    """Read an official ASVspoof 2019 LA CM protocol into records, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (names file, line number, the line and what was expected) or a repeated utt id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CM protocol not found: {path}")
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            entry = parse_protocol_line(line, f"{path.name} line {number}")
            if entry.utt_id in seen:
                raise ValueError(f"{path.name} line {number}: utt id {entry.utt_id} already on line {seen[entry.utt_id]}")
            seen[entry.utt_id] = number
            entries.append(entry)
    if not entries:
        raise ValueError(f"{path}: the protocol is empty")
    return entries


# ----------------------------------------------------------------------------- on-disk layouts


@dataclass(frozen=True)
class LALayout:
    """The official `LA/` folder: protocols, per-split `flac/` folders and the organisers' ASV scores."""

    root: Path

    def protocol_path(self, split: str) -> Path:
        check_split(split)
        return self.root / PROTOCOL_DIR / PROTOCOL_FILES[split]

    def audio_dir(self, split: str) -> Path:
        check_split(split)
        return self.root / f"ASVspoof2019_LA_{split}" / "flac"

    def audio_path(self, split: str, utt_id: str) -> Path:
        return self.audio_dir(split) / f"{utt_id}.flac"

    def asv_scores_path(self, split: str) -> Path:
        return self.root / ASV_SCORES_DIR / f"ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt"

    def protocol(self, split: str) -> list[ProtocolEntry]:
        return read_cm_protocol(self.protocol_path(split))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def find_la_root(data_root: str | os.PathLike | None) -> LALayout:
    """Locate the official `LA/` folder from what a user points at.

    Accepts the `LA/` folder itself, its parent (official LA.zip extracted), or the Kaggle copy whose
    `LA/LA/` nesting is doubled.

    Raises:
        FileNotFoundError: one message listing every place looked in.
    """
    if data_root is None:
        raise FileNotFoundError("no --data-root given: point it at the ASVspoof 2019 LA folder (or its parent)")
    base = Path(data_root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"--data-root {base} does not exist")
    candidates = [base, base / "LA", base / "LA" / "LA"]
    for candidate in candidates:
        if (candidate / PROTOCOL_DIR).is_dir():
            return LALayout(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"--data-root {base} has no {PROTOCOL_DIR}/ (looked in {looked}): expected the official LA layout "
        "or the Kaggle copy; point --data-root at the folder that holds it"
    )


# ----------------------------------------------------------------------------- audio


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read any file soundfile can (FLAC, WAV, ...) as a mono float32 waveform at `sample_rate`.

    Returns:
        (N,) float32 tensor in [-1, 1].

    Raises:
        FileNotFoundError, RuntimeError (unreadable or truncated), ValueError (empty) -- each naming the file.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError with libsndfile's text
        raise RuntimeError(f"{path}: cannot decode audio ({e})") from e
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    wave = torch.from_numpy(audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0])
    if sr != sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, sr, sample_rate)
    return wave.contiguous()


def fix_length(
    wave: torch.Tensor, num_samples: int, pad: str = "repeat", random_crop: bool = False
) -> torch.Tensor:
    """Crop or pad a waveform to exactly `num_samples`, as the papers do.

    Long inputs are cropped (a random window when `random_crop`, else from the start); short inputs are padded
    by repeating the signal (STC, NII) or with zeros at the end (`pad="zeros"`, the seed recipe).

    Args:
        wave: (N,) waveform.
    Returns:
        (num_samples,) waveform.
    """
    n = wave.shape[-1]
    if n >= num_samples:
        start = int(torch.randint(0, n - num_samples + 1, ())) if random_crop else 0
        return wave[start : start + num_samples]
    if pad == "repeat":
        return wave.repeat((num_samples + n - 1) // n)[:num_samples]
    if pad == "zeros":
        return torch.nn.functional.pad(wave, (0, num_samples - n))
    raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")


def augment_waveform(wave: torch.Tensor, noise_std: float = 0.005) -> torch.Tensor:
    """The seed recipe's augmentation: unchanged, volume +25 % or additive Gaussian noise, each with p = 1/3.

    Uses torch's global generator, so DataLoader worker seeding makes it reproducible.
    """
    choice = int(torch.randint(0, 3, ()))
    if choice == 1:
        return wave * 1.25
    if choice == 2:
        return wave + noise_std * torch.randn_like(wave)
    return wave


# ----------------------------------------------------------------------------- front-ends


class STFTFrontEnd(nn.Module):
    """Log-power STFT of the STC LCNN (Lavrentyeva et al., Interspeech 2019, arXiv:1904.05576).

    Blackman window, n_fft = win_length = 1724 samples, hop 130 samples (8.1 ms at 16 kHz): 863 frequency bins.
    600 frames come from (600 - 1) * 130 = 77,870 samples (centred frames). Works on a batch on any device.
    """

    name = "stft"

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 1724,
        win_length: int = 1724,
        hop_length: int = 130,
        eps: float = 1e-7,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.win_length, self.hop_length, self.eps = (
            sample_rate, n_fft, win_length, hop_length, eps,
        )
        self.register_buffer("window", torch.blackman_window(win_length), persistent=False)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def num_samples(self, num_frames: int) -> int:
        """Waveform length that gives exactly `num_frames` frames."""
        return (num_frames - 1) * self.hop_length

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) or (N,) waveform -> (B, F, T) power spectrogram |X|^2 (float32 even under autocast)."""
        wave = wave.float().reshape(-1, wave.shape[-1])
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, self.win_length, self.window, center=True, return_complex=True
        )  # (B, F, T)
        return spec.real.square() + spec.imag.square()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform -> (B, 1, F, T) log-power features."""
        return torch.log(self.power(wave) + self.eps).unsqueeze(1)

    def frame_times(self, num_frames: int) -> np.ndarray:
        """Centre time of each frame, in seconds."""
        return np.arange(num_frames) * self.hop_length / self.sample_rate

    def bin_frequencies(self) -> np.ndarray:
        """Frequency of each bin, in Hz."""
        return np.linspace(0, self.sample_rate / 2, self.n_bins)


class LogMelFrontEnd(STFTFrontEnd):
    """The seed recipe's log-mel: n_fft 512, Hann window 320, hop 160, 20 mel bands, log(x + eps)."""

    name = "mel"

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 512,
        win_length: int = 320,
        hop_length: int = 160,
        n_mels: int = 20,
        eps: float = 1e-6,
    ):
        super().__init__(sample_rate, n_fft, win_length, hop_length, eps)
        import torchaudio.functional as AF

        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)  # (F, M)
        self.register_buffer("fbanks", fb, persistent=False)

    @property
    def n_bins(self) -> int:
        return self.n_mels

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform -> (B, M, T) mel power."""
        return torch.matmul(super().power(wave).transpose(1, 2), self.fbanks).transpose(1, 2)

    def bin_frequencies(self) -> np.ndarray:
        """Centre frequency of each mel band, in Hz (HTK mel scale, as torchaudio's default)."""
        mel = np.linspace(0, 2595 * np.log10(1 + self.sample_rate / 2 / 700), self.n_mels + 2)[1:-1]
        return 700 * (10 ** (mel / 2595) - 1)


FRONTENDS: dict[str, type[STFTFrontEnd]] = {"stft": STFTFrontEnd, "mel": LogMelFrontEnd}


def make_frontend(name: str) -> STFTFrontEnd:
    """Front-end by its `--frontend` name."""
    if name not in FRONTENDS:
        raise ValueError(f"--frontend must be one of {', '.join(FRONTENDS)}, got {name!r}")
    return FRONTENDS[name]()


# ----------------------------------------------------------------------------- Dataset


class ASVspoof2019LA(Dataset):
    """One split of ASVspoof 2019 LA.

    Item i -> (x, label, utt_id, system, speaker), where x is the front-end's (1, F, T) features or, with
    `frontend=None`, the fixed-length (num_samples,) waveform so that features are computed on the GPU per batch.

    Args:
        data_root: anything `find_la_root` accepts, or an `LALayout`.
        split: "train", "dev" or "eval".
        num_samples: fixed waveform length (`frontend.num_samples(num_frames)`).
        frontend: module applied per item, or None to return waveforms.
        pad: "repeat" (STC, NII) or "zeros" (seed recipe) for short files.
        random_crop: a random window of long files (training) instead of the start (evaluation).
        augment: the seed recipe's augmentation (training only).
        cache: decode every file once at construction and keep it as int16 in memory (LA train: ~2.7 GB).
        skip_bad: protocol lines whose audio is missing are skipped and counted in `self.skipped` instead of
            raising; an unreadable file met later yields None (drop it with `collate`).
        entries: use these protocol entries instead of the split's protocol (e.g. a subset).
    """

    def __init__(
        self,
        data_root: str | os.PathLike | LALayout,
        split: str,
        num_samples: int,
        frontend: nn.Module | None = None,
        pad: str = "repeat",
        random_crop: bool = False,
        augment: bool = False,
        cache: bool = False,
        skip_bad: bool = False,
        entries: Sequence[ProtocolEntry] | None = None,
    ):
        self.layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
        self.split, self.num_samples, self.frontend = split, num_samples, frontend
        self.pad, self.random_crop, self.augment, self.skip_bad = pad, random_crop, augment, skip_bad
        entries = list(entries) if entries is not None else self.layout.protocol(split)
        audio_dir = self.layout.audio_dir(split)
        present = {p.name for p in os.scandir(audio_dir)} if audio_dir.is_dir() else set()
        missing = [e for e in entries if f"{e.utt_id}.flac" not in present]
        if missing and not skip_bad:
            shown = ", ".join(e.utt_id for e in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(entries)} {split} files listed in {self.layout.protocol_path(split).name} "
                f"are missing from {audio_dir} (first: {shown}); fix the tree or pass --skip-bad"
            )
        missing_ids = {e.utt_id for e in missing}
        self.entries = [e for e in entries if e.utt_id not in missing_ids]
        self.skipped = [str(self.layout.audio_path(split, e.utt_id)) for e in missing]
        self.cached: list[np.ndarray | None] | None = None
        if cache:
            self.cached = decode_all([self.path(i) for i in range(len(self))], skip_bad=skip_bad)

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, i: int) -> Path:
        return self.layout.audio_path(self.split, self.entries[i].utt_id)

    def waveform(self, i: int) -> torch.Tensor | None:
        """The whole decoded file (N,), or None when unreadable and `skip_bad`."""
        if self.cached is not None:
            pcm = self.cached[i]
            return None if pcm is None else torch.from_numpy(pcm.astype(np.float32) / 32768.0)
        try:
            return load_audio(self.path(i))
        except (RuntimeError, ValueError, FileNotFoundError):
            if self.skip_bad:
                return None
            raise

    def __getitem__(self, i: int):
        e = self.entries[i]
        wave = self.waveform(i)
        if wave is None:
            return None
        wave = fix_length(wave, self.num_samples, self.pad, self.random_crop)
        if self.augment:
            wave = augment_waveform(wave)
        x = wave if self.frontend is None else self.frontend(wave.unsqueeze(0))[0]  # (N,) or (1, F, T)
        return x, e.label, e.utt_id, e.system, e.speaker


def decode_all(paths: Sequence[Path], skip_bad: bool = False, workers: int | None = None) -> list[np.ndarray | None]:
    """Decode files in parallel threads into int16 arrays (half the memory of float32), with a progress line."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path) -> np.ndarray | None:
        try:
            wave = load_audio(path)
        except (RuntimeError, ValueError, FileNotFoundError):
            if skip_bad:
                return None
            raise
        return (wave.clamp(-1, 32767 / 32768) * 32768).round().to(torch.int16).numpy()

    progress = Progress(len(paths), "decode")
    out = []
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for pcm in pool.map(one, paths):
            out.append(pcm)
            progress.update(1)
    progress.close()
    return out


def collate(batch: list) -> dict | None:
    """Stack dataset items into a batch dict, dropping the None items of unreadable files (`n_bad` counts them)."""
    good = [b for b in batch if b is not None]
    if not good:
        return {"n_bad": len(batch), "x": None}
    xs, labels, utt_ids, systems, speakers = zip(*good)
    return {
        "x": torch.stack(xs),  # (B, N) or (B, 1, F, T)
        "label": torch.tensor(labels, dtype=torch.long),
        "utt_id": list(utt_ids),
        "system": list(systems),
        "speaker": list(speakers),
        "n_bad": len(batch) - len(good),
    }


# ----------------------------------------------------------------------------- progress and shared CLI


class Progress:
    """A one-line progress report with rate and ETA, rewritten in place on a terminal (stderr)."""

    def __init__(self, total: int, label: str, unit: str = "files", stream=None, every: float = 1.0):
        import time

        self.total, self.label, self.unit, self.done = total, label, unit, 0
        self.stream = stream or sys.stderr
        self.every, self.start = every, time.monotonic()
        self.last = -1e9
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, extra: str = "") -> str:
        import time

        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / max(self.total, 1)
        eta_s = "?" if eta == float("inf") else format_seconds(eta)
        return (
            f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) {rate:.1f} {self.unit}/s "
            f"elapsed {format_seconds(elapsed)} ETA {eta_s}{extra}"
        )

    def update(self, n: int = 1, extra: str = "") -> None:
        import time

        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            end = "\r" if self.tty else "\n"
            print(self.line(extra), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every script shares: same name, same meaning, same default everywhere."""
    g = parser.add_argument_group("shared")
    g.add_argument("--data-root", default=os.environ.get("ASVSPOOF_ROOT"),
                   help="ASVspoof 2019 LA folder, its parent, or the Kaggle copy (default: $ASVSPOOF_ROOT)")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--batch-size", type=int, default=64, help="items per batch (per process under torchrun)")
    g.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--frontend", choices=sorted(FRONTENDS), default="stft",
                   help="stft: STC log-power STFT (863 bins); mel: seed recipe 20-band log-mel")
    g.add_argument("--num-frames", type=int, default=600, help="fixed number of feature frames per item")
    g.add_argument("--pad", choices=("repeat", "zeros"), default="repeat", help="how short files are padded")
    g.add_argument("--skip-bad", action="store_true", help="skip missing/unreadable audio (counted) instead of failing")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    return device


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main(); a user error ends as one line on stderr and exit status 1 (--debug: traceback)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
