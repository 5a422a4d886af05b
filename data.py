"""data.py -- the data pipeline: audio I/O, crop/pad/augment, front-ends, the Dataset and its bad-file policy.

    python data.py --data-root ROOT --check [--split S] [--json] [--deep]
    python data.py --data-root DIR --check [--corpus la21|df21|itw|asv5|kaldi|folders|csv] [--subset S]
    python data.py --data-root ROOT --show LA_T_4179989 --out item.png
    python data.py --download --to DIR [--source datashare|kaggle|vocv4] [--url URL]   (download.py, then --check)

Inside, in pipeline order:
  * audio: `load_audio` (one small function per decode path: whole file, verified window, fast window; then
    resampling), `audio_info`, `audio_file`, `wav_shortfall`, `resample`;
  * crop/pad/augment: `fix_length`, `fix_window`, `augment_waveform`, `PADS`;
  * front-ends: `STFTFrontEnd` (STC), `LogMelFrontEnd` (seed recipe), `make_frontend`, `FRONTENDS`,
    `add_input_args` (--frontend, --num-frames, --pad), `describe_frontend`;
  * checking a tree: `Problem`, `find_missing`, `find_present`, `check_audio_file(s)`, `check_split_files`,
    `check_dataset`, `format_check_report` (--check);
  * checking any corpus: `find_missing_paths`, `check_corpus` (--check --corpus NAME);
  * the Dataset: `AudioDataset` (any corpus's entries) and `ASVspoof2019LA` on it, and the one policy for unreadable audio: `BadAudio`, `BadAudioError`,
    `count_bad`, `decode_all`, `collate`;
  * --show: `plot_item`; the command line.

Where the labels are (protocols, layouts, corpora) is corpora.py; the shared flags, progress and writes are cli.py.

Conventions used by every script of the collection:
  * label 1 = bona fide, 0 = spoof, so a model's two outputs are [spoof, bona fide];
  * audio is read with soundfile (FLAC and WAV; torchaudio 2.9's `load` needs TorchCodec and FFmpeg, which are
    not on these machines), downmixed to mono and resampled to 16 kHz; all DSP is torch/torchaudio;
  * features are (B, 1, F, T) tensors made on any device by a front-end module from fixed-length waveforms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cli import ArgumentParser, Progress, add_common_args, format_seconds, run_cli
from corpora import (
    SPLITS,
    Corpus,
    LALayout,
    Problem,
    ProtocolEntry,
    add_corpus_args,
    check_split,
    detect_corpus,
    find_la_root,
    find_unkeyed_audio,
    find_utterance,
    read_cm_protocol,
    read_corpus,
)

SAMPLE_RATE = 16_000
PADS = ("repeat", "zeros")  # how a file shorter than the input is padded: repeated (STC, NII) or with zeros (seed)


# ----------------------------------------------------------------------------- audio


def sound_file(path: Path):
    """soundfile.SoundFile of a path, also when its name is not valid UTF-8 (libsndfile takes bytes; soundfile
    encodes str paths as UTF-8, so such a name is opened through a Python file object)."""
    import soundfile as sf

    try:
        return sf.SoundFile(str(path))
    except UnicodeEncodeError:
        return sf.SoundFile(open(path, "rb"))  # noqa: SIM115  (closed with the SoundFile)


def audio_file(path: str | os.PathLike) -> Path:
    """The path of an audio file that exists, or FileNotFoundError saying what is there instead."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: is a folder, expected an audio file")
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: cannot read the audio file (permission denied); expected a readable file")
    return path


AUDIO_BLOCK = 1 << 16  # frames decoded at a time when a file is scanned


def wav_shortfall(path: Path) -> str | None:
    """The truncation a WAV header gives away, or None (not a WAV, or complete).

    libsndfile reads a WAV cut short (or one whose data chunk claims more than the file holds) as a shorter,
    valid file, so decoding cannot tell. The RIFF header can: its data chunk declares its size in bytes. A
    declared size of 0 or 0xFFFFFFFF (what streaming writers leave) means "unknown" and is not a problem.
    """
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None  # the decoder names what is wrong with an unreadable file
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            held = size - (pos + 8)
            if length not in (0, 0xFFFFFFFF) and held < length:
                return (f"truncated: the WAV header declares {length:,} bytes of audio, the file holds {held:,} "
                        f"({100 * held / length:.1f} %)")  # fmt: skip
            return None
        pos += 8 + length + (length & 1)  # chunks are word-aligned
    return None


def resample(wave: torch.Tensor, sr: int, target: int = SAMPLE_RATE) -> torch.Tensor:
    """torchaudio's band-limited resampling, with bounded memory for any rate.

    Its kernel grows with sr / gcd(sr, target): 16,001 Hz -> 16 kHz asked for 6-12 GB. A rate that is not a ratio
    of small integers to the target (sr / gcd > 1000) is first taken as the nearest multiple of 100 Hz: 16,001 Hz
    is read as 16,000 Hz, a 0.006 % change of speed and pitch, far below what a listener or the model resolves.
    """
    import math

    import torchaudio.functional as AF

    if sr // math.gcd(sr, target) > 1000:
        sr = max(100, round(sr / 100) * 100)
    return wave if sr == target else AF.resample(wave, sr, target)


class TruncatedAudio(RuntimeError):
    """Decoding stopped short of what the file's header promises."""


class NonFiniteAudio(ValueError):
    """A float file holds NaN or inf samples (one would turn every score and loss it touches into NaN)."""


class UnusableAudio(ValueError):
    """Audio that decodes but holds nothing to score: shorter than one analysis window, or digital silence."""


# The one rule for audio too short to score: at least one analysis window of the STC front-end (1,724 samples,
# 107.75 ms at 16 kHz, the longest window of the front-ends): a shorter clip holds no frame of real signal, and the
# model's verdict on its padding would be confident and meaningless (a 1 ms clip scored P(bona fide) 0.9995).
MIN_SAMPLES = 1724
# What every loop that reads audio catches for the bad-file policy (`BadAudio`): unreadable, truncated, empty,
# non-finite, too short or silent, missing or not readable (OSError: permissions, broken links).
AUDIO_ERRORS = (RuntimeError, ValueError, OSError)


def check_usable(frames: int, sr: int, target: int = SAMPLE_RATE) -> None:
    """UnusableAudio when a file of `frames` samples at `sr` Hz is shorter than MIN_SAMPLES at the target rate."""
    if 0 < frames * target / sr < MIN_SAMPLES:
        raise UnusableAudio(f"{1000 * frames / sr:.1f} ms of audio, shorter than one analysis window "
                            f"({MIN_SAMPLES:,} samples, {1000 * MIN_SAMPLES / target:.2f} ms at {target // 1000} kHz): "
                            "too short to score")  # fmt: skip


def check_not_silent(peak: float) -> None:
    """UnusableAudio for digital silence (every sample exactly 0): no signal to score."""
    if peak == 0:
        raise UnusableAudio("digital silence: every sample is 0, nothing to score")


def check_finite_block(block: np.ndarray, at: int, sr: int) -> None:
    """NonFiniteAudio naming the count and the first bad sample of a decoded (N, C) block starting at sample `at`."""
    bad = ~np.isfinite(block)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1))) + at
        raise NonFiniteAudio(f"{int(bad.sum()):,} sample(s) are NaN or inf (first at sample {first:,}, "
                             f"{first / sr:.3f} s); expected finite audio in [-1, 1]")  # fmt: skip


def decode_whole(f) -> np.ndarray:
    """Decode path 1 -- the whole file: (N, C) float32, checked finite, complete and not silent."""
    audio = f.read(dtype="float32", always_2d=True)
    check_finite_block(audio, 0, f.samplerate)
    if audio.size:
        check_not_silent(float(np.abs(audio).max()))
    if f.frames and audio.shape[0] < f.frames:
        raise TruncatedAudio(f"truncated: decoding stops {f.frames - audio.shape[0]:,} samples short of the "
                             f"{f.frames:,} the header promises")  # fmt: skip
    return audio


def decode_window_verified(f, start: int, num_samples: int) -> np.ndarray:
    """Decode path 2 -- a window, with every block of the file decoded and checked (memory: one block + the window)."""
    parts, pos, total, peak = [], 0, f.frames, 0.0
    while pos < total:
        block = f.read(AUDIO_BLOCK, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            raise TruncatedAudio(f"truncated: decoding stops {total - pos:,} samples short of the "
                                 f"{total:,} the header promises")  # fmt: skip
        check_finite_block(block, pos, f.samplerate)
        peak = max(peak, float(np.abs(block).max()))
        lo, hi = max(start - pos, 0), min(start + num_samples - pos, block.shape[0])
        if lo < hi:
            parts.append(block[lo:hi])
        pos += block.shape[0]
    check_not_silent(peak)
    return np.concatenate(parts)


def decode_window_fast(f, start: int, num_samples: int) -> np.ndarray:
    """Decode path 3 -- a window only (seek and read): for files already verified, e.g. by the Dataset."""
    f.seek(start)
    audio = f.read(num_samples, dtype="float32", always_2d=True)
    check_finite_block(audio, start, f.samplerate)
    return audio


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    num_samples: int | None = None,
    random_crop: bool = False,
    offset: int = 0,
    verify: bool = True,
) -> torch.Tensor:
    """Read any file soundfile can (FLAC, WAV, ...) as a mono float32 waveform at `sample_rate`.

    With `num_samples`, only a window of that length is returned (shorter when the file is shorter): from `offset`,
    or at a random offset when `random_crop` (the draw `fix_length` makes, from torch's global generator). A file
    at `sample_rate` then keeps only that window in memory; a file at another rate is decoded whole and resampled
    first (`resample`). With `verify` (the default) the whole file is decoded either way -- in blocks, so memory
    stays flat -- and a file truncated, damaged or non-finite anywhere is refused, not scored on its first seconds.

    Returns:
        (N,) float32 tensor in [-1, 1].

    Raises:
        FileNotFoundError, PermissionError, RuntimeError (unreadable or truncated), ValueError (empty, NaN / inf
        samples, or `UnusableAudio`: shorter than MIN_SAMPLES or digital silence) -- each naming the file.
    """
    path = audio_file(path)
    if verify and (short := wav_shortfall(path)):
        raise TruncatedAudio(f"{path}: {short}")
    try:
        with sound_file(path) as f:
            sr, total = f.samplerate, f.frames
            check_usable(total, sr, sample_rate)
            if num_samples is None or sr != sample_rate or total <= num_samples:
                audio = decode_whole(f)
            else:
                start = int(torch.randint(0, total - num_samples + 1, ())) if random_crop else min(offset, total - 1)
                decode = decode_window_verified if verify else decode_window_fast
                audio = decode(f, start, num_samples)
    except (TruncatedAudio, NonFiniteAudio, UnusableAudio) as e:  # our findings keep their type; the file named once
        raise type(e)(f"{path}: {e}") from None
    except Exception as e:  # soundfile raises LibsndfileError with libsndfile's text
        raise RuntimeError(f"{path}: cannot decode audio ({e})") from e
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no samples")
    wave = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]))
    if sr != sample_rate:
        wave = resample(wave, sr, sample_rate)
        if num_samples is not None:
            if offset and not random_crop:
                wave = wave[offset:]
            return fix_window(wave, num_samples, random_crop)
    return wave.contiguous()


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(frames, sample rate) from a file's header, without decoding it.

    Raises:
        FileNotFoundError, RuntimeError (not an audio file soundfile reads), each naming the file.
    """
    path = audio_file(path)
    try:
        with sound_file(path) as f:
            return f.frames, f.samplerate
    except Exception as e:
        raise RuntimeError(f"{path}: cannot decode audio ({e})") from e


def fix_window(wave: torch.Tensor, num_samples: int, random_crop: bool = False) -> torch.Tensor:
    """The window of `num_samples` that `fix_length` crops (the whole wave when it is shorter)."""
    n = wave.shape[-1]
    if n <= num_samples:
        return wave
    start = int(torch.randint(0, n - num_samples + 1, ())) if random_crop else 0
    return wave[start : start + num_samples].contiguous()


def fix_length(wave: torch.Tensor, num_samples: int, pad: str = "repeat", random_crop: bool = False) -> torch.Tensor:
    """Crop or pad a waveform to exactly `num_samples`, as the papers do.

    Long inputs are cropped (a random window when `random_crop`, else from the start); short inputs are padded
    by repeating the signal (STC, NII) or with zeros at the end (`pad="zeros"`, the seed recipe).

    Args:
        wave: (N,) waveform.
    Returns:
        (num_samples,) waveform.
    """
    n = wave.shape[-1]
    if n == 0 or num_samples <= 0:
        raise ValueError(f"fix_length needs a non-empty waveform and num_samples > 0, got {n} and {num_samples}")
    if n >= num_samples:
        return fix_window(wave, num_samples, random_crop)
    if pad == "repeat":
        return wave.repeat((num_samples + n - 1) // n)[:num_samples]
    if pad == "zeros":
        return torch.nn.functional.pad(wave, (0, num_samples - n))
    raise ValueError(f"pad must be {' or '.join(map(repr, PADS))}, got {pad!r}")


def augment_waveform(wave: torch.Tensor, noise_std: float = 0.005) -> torch.Tensor:
    """The seed recipe's augmentation: unchanged, volume +25 % or additive Gaussian noise, each with p = 1/3.

    Uses torch's global generator, so DataLoader worker seeding makes it reproducible. Training only: the Dataset
    refuses `augment=True` for dev and eval.

    Args:
        wave: (N,) or (B, N) waveform; one branch is drawn per call.
        noise_std: standard deviation of the additive noise (full scale = 1).
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
        self.sample_rate, self.n_fft, self.win_length = sample_rate, n_fft, win_length
        self.hop_length, self.eps = hop_length, eps
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


def add_input_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The input flags of every script that makes features: --frontend, --num-frames, --pad."""
    g = parser.add_argument_group("input")
    g.add_argument(
        "--frontend",
        choices=sorted(FRONTENDS),
        default="stft",
        help="stft: STC log-power STFT (863 bins); mel: seed recipe 20-band log-mel",
    )
    g.add_argument("--num-frames", type=int, default=600, help="fixed number of feature frames per item")
    g.add_argument("--pad", choices=PADS, default="repeat", help="how short files are padded")
    return parser


# ----------------------------------------------------------------------------- checking a tree


def format_problems(problems: Sequence[Problem], limit: int = 50) -> str:
    """All problems, one per line (the first `limit`, then a count of the rest)."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (python data.py --data-root ROOT --check lists all)")
    return "\n".join(lines)


BROKEN_LINK = "broken symbolic link (dangling, or a loop): expected an audio file"


def flac_sizes(folder: Path, suffix: str | tuple[str, ...] = ".flac") -> dict[str, int]:
    """Size in bytes of every .flac (or `suffix`) name in a folder, from one listing; -1 for a broken symbolic link
    (dangling, or a loop), which must cost only that file, never the listing."""
    sizes = {}
    for d in os.scandir(folder):
        if d.name.endswith(suffix):
            try:
                sizes[d.name] = d.stat().st_size
            except OSError:
                sizes[d.name] = -1
    return sizes


def find_missing(layout: LALayout, split: str, entries: Sequence[ProtocolEntry]) -> list[Problem]:
    """Protocol lines whose audio is absent or empty, found from one directory listing (fast on 71k files).

    A split whose `flac/` folder is absent gives a single problem naming the folder rather than one per file.
    """
    audio_dir, protocol = layout.audio_dir(split), layout.protocol_path(split).name
    if not audio_dir.is_dir():
        what = f"missing folder: expected the {split} audio ({len(entries):,} .flac files listed in {protocol})"
        return [Problem(None, str(audio_dir), what, missing=True)]
    sizes = flac_sizes(audio_dir)
    problems = []
    for e in entries:
        if e.path:  # a vocoded copy in the cache
            if not Path(e.path).is_file() or Path(e.path).stat().st_size == 0:
                problems.append(
                    Problem(e.utt_id, e.path, "missing or empty vocoded copy (delete the cache to remake it)", True)
                )
            continue
        size = sizes.get(f"{e.utt_id}.flac")
        if size is None:
            problems.append(
                Problem(e.utt_id, str(audio_dir / f"{e.utt_id}.flac"), f"missing: listed in {protocol}", True)
            )
        elif size < 0:
            problems.append(Problem(e.utt_id, str(audio_dir / f"{e.utt_id}.flac"), BROKEN_LINK, True))
        elif size == 0:
            problems.append(Problem(e.utt_id, str(audio_dir / f"{e.utt_id}.flac"), "empty file (0 bytes)", True))
    return problems


def find_missing_paths(items: Sequence[tuple[str, str]], source: str) -> list[Problem]:
    """`find_missing` for trials that name their own audio, (utt_id, path) pairs of any corpus: one directory listing
    per folder; a folder that is absent is one problem naming it and how many files it should hold."""
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for utt, path in items:
        by_folder.setdefault(os.path.dirname(path), []).append((utt, path))
    problems = []
    for folder, pairs in by_folder.items():
        if not os.path.isdir(folder):
            what = f"missing folder: expected {len(pairs):,} audio file(s) listed in {source}"
            problems.append(Problem(None, folder, what, missing=True))
            continue
        sizes = flac_sizes(Path(folder), "")
        for utt, path in pairs:
            size = sizes.get(os.path.basename(path))
            if size is None:
                problems.append(Problem(utt, path, f"missing: listed in {source}", True))
            elif size < 0:
                problems.append(Problem(utt, path, BROKEN_LINK, True))
            elif size == 0:
                problems.append(Problem(utt, path, "empty file (0 bytes)", True))
    return problems


def find_present(
    layout: LALayout, split: str, entries: Sequence[ProtocolEntry]
) -> tuple[list[Problem], list[ProtocolEntry]]:
    """`find_missing`'s problems, and the entries whose audio is there (none when the folder itself is missing)."""
    problems = find_missing(layout, split, entries)
    if any(p.utt_id is None for p in problems):
        return problems, []
    bad = {p.utt_id for p in problems}
    return problems, [e for e in entries if e.utt_id not in bad]


def check_audio_file(
    path: str | os.PathLike, deep: bool = False, sample_rate: int | None = SAMPLE_RATE, silence_peak: float = 1e-4
) -> tuple[float, list[str]]:
    """Check one audio file: header (rate, channels, length) and truncation; with `deep`, decode it all.
    `sample_rate` None accepts any rate and channel count (other corpora: `load_audio` resamples and downmixes).

    The fast check reads the header, then seeks to the last 4,096 samples the header promises and decodes them:
    a truncated FLAC keeps a valid header, but libsndfile fails to seek or lose sync past the cut (this catches a
    file cut by even 10 bytes, at ~0.3 ms per file). The samples it decodes are checked for NaN / inf (a float WAV
    or FLAC can hold them). `deep` decodes every sample, so it finds non-finite samples anywhere, and silent audio.

    Returns:
        (duration in seconds from the header, list of problems; empty when the file is fine).
    """
    import soundfile as sf

    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # LibsndfileError / RuntimeError carry libsndfile's text
        return 0.0, [f"unreadable: soundfile cannot open it ({e})"]
    if short := wav_shortfall(Path(path)):
        with f:
            return f.frames / max(f.samplerate, 1), [short]
    with f:
        frames, sr, channels = f.frames, f.samplerate, f.channels
        problems = []
        if sample_rate is not None and sr != sample_rate:
            problems.append(f"wrong sample rate: {sr} Hz, expected {sample_rate} Hz")
        if sample_rate is not None and channels != 1:
            problems.append(f"{channels} channels, expected mono")
        if frames == 0:
            return 0.0, problems + ["empty: the header declares 0 samples"]
        try:
            check_usable(frames, sr)  # the scripts' own minimum, reported here as they would refuse it
        except UnusableAudio as e:
            problems.append(str(e))
        try:
            if not deep:
                f.seek(max(0, frames - 4096))
            audio = f.read(dtype="float32", always_2d=True)  # (N, C)
        except Exception as e:
            what = f"truncated or corrupt: the header promises {frames:,} samples, decoding fails ({e})"
            return frames / sr, problems + [what]
    expected = frames if deep else min(frames, 4096)
    bad = ~np.isfinite(audio)
    if audio.shape[0] < expected:
        short = expected - audio.shape[0]
        problems.append(f"truncated: decoding stops {short:,} samples short of the {frames:,} the header promises")
    elif bad.any():
        where = "" if deep else f" (in the last {audio.shape[0]:,} samples, the part the fast check decodes)"
        problems.append(f"non-finite: {int(bad.sum()):,} NaN/inf sample(s){where}; expected finite audio")
    elif deep and float(np.abs(audio).max()) < silence_peak:
        problems.append(f"silent: peak amplitude {float(np.abs(audio).max()):.1e} < {silence_peak:.0e}")
    return frames / sr, problems


CHECK_CHUNK = 256  # files per task of the --check worker processes


def _check_chunk(job: tuple[list[str], bool, int | None]) -> list[tuple[float, list[str]]]:
    """`check_audio_file` on a list of paths (one task of a --check worker process)."""
    paths, deep, sample_rate = job
    return [check_audio_file(p, deep, sample_rate) for p in paths]


def check_audio_files(
    items: Sequence[tuple[str, str]],
    deep: bool = False,
    workers: int | None = None,
    label: str = "check",
    progress: bool = True,
    sample_rate: int | None = SAMPLE_RATE,
) -> tuple[list[Problem], list[float]]:
    """`check_audio_file` on these (utt_id, path) pairs, in worker processes, with a progress line.

    Processes, not threads: most of the ~0.3 ms a file costs is Python around libsndfile, so threads serialise on
    the GIL (16 threads on 2 cores checked LA's 121,461 files in 53 s; two processes take half that). Chunks of
    CHECK_CHUNK files keep memory flat in the number of files. Fewer than 2,048 files are checked in-process.

    Returns:
        (every problem found, each file's duration in seconds from its header), in the order of `entries`.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ids, paths = [u for u, _ in items], [str(p) for _, p in items]
    bar = Progress(len(paths), label) if progress and len(paths) > 1000 else None
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(paths[k : k + CHECK_CHUNK], deep, sample_rate) for k in range(0, len(paths), CHECK_CHUNK)]
    problems, durations = [], []
    pool = None
    if workers > 1 and len(paths) >= 2048:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: no re-import
        pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        results = pool.map(_check_chunk, jobs) if pool else map(_check_chunk, jobs)
        for k, ((chunk, _, _), found_chunk) in enumerate(zip(jobs, results)):
            for utt, path, (duration, found) in zip(ids[k * CHECK_CHUNK :], chunk, found_chunk):
                durations.append(duration)
                problems += [Problem(utt, path, what) for what in found]
            if bar:
                bar.update(len(chunk))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        if bar:
            bar.close()
    return problems, durations


def check_split_files(
    layout: LALayout, split: str, deep: bool = False, workers: int | None = None, progress: bool = True
) -> dict:
    """Counts and problems of one split: protocol, audio folder, then every listed file.

    Returns:
        {"protocol", "files", "bonafide", "spoof", "systems": {A01: n, ...}, "duration_s", "checked", "unlisted",
         "problems": [{"utt_id", "path", "problem"}, ...]}; `files` counts protocol lines, `checked` the files
        read, `unlisted` the .flac files on disk that no protocol line names (not a problem).
    """
    ppath = layout.protocol_path(split)
    summary = {"protocol": str(ppath), "files": 0, "bonafide": 0, "spoof": 0, "systems": {}, "duration_s": 0.0,
               "checked": 0, "unlisted": 0, "problems": []}  # fmt: skip
    try:
        entries = read_cm_protocol(ppath)
    except (FileNotFoundError, ValueError) as e:
        summary["problems"] = [asdict(Problem(None, str(ppath), str(e)))]
        return summary
    keys, systems = Counter(e.key for e in entries), Counter(e.system for e in entries if e.key == "spoof")
    summary.update(
        files=len(entries), bonafide=keys["bonafide"], spoof=keys["spoof"], systems=dict(sorted(systems.items()))
    )
    problems, todo = find_present(layout, split, entries)
    items = [(e.utt_id, str(layout.entry_path(split, e))) for e in todo]
    found, durations = check_audio_files(items, deep, workers, f"check {split}", progress)
    problems += found
    if todo:
        listed = {f"{e.utt_id}.flac" for e in entries}
        on_disk = [d.name for d in os.scandir(layout.audio_dir(split)) if d.name.endswith(".flac")]
        summary["unlisted"] = sum(name not in listed for name in on_disk)
    summary.update(checked=len(todo), duration_s=round(sum(durations), 3))
    summary["problems"] = [asdict(p) for p in problems]
    return summary


def check_dataset(
    data_root: str | os.PathLike | LALayout,
    splits: Sequence[str] = SPLITS,
    deep: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """`python data.py --check`: per split counts per key and system, total duration and every problem found.

    Returns:
        {"root", "deep", "splits": {split: check_split_files(...)}, "problems": total number of problems}.

    Raises:
        FileNotFoundError: `data_root` holds no LA tree (the message lists where it looked).
    """
    layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
    report = {"root": str(layout.root.resolve()), "deep": deep, "splits": {}, "problems": 0}
    for split in splits:
        check_split(split)
        report["splits"][split] = check_split_files(layout, split, deep, workers, progress)
        report["problems"] += len(report["splits"][split]["problems"])
    return report


OFFICIAL_CORPORA = ("la19", "la21", "df21", "asv5")  # their folders also hold files of other subsets/protocols


def check_corpus(corpus: Corpus, deep: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """`python data.py --check` for any corpus (`corpora.read_corpus`): counts per key and attack, duration, and every
    problem -- the key's own (audio named twice, ids in only one Kaldi file), missing or empty audio, unreadable
    audio, and audio in the key's folders that no line names (a problem for a user's set, a note for the official
    sets, whose folders hold every subset).

    Returns:
        `check_dataset`'s report with one block, named by the corpus and subset, and "corpus": its name.
    """
    official = corpus.name in OFFICIAL_CORPORA
    problems = list(corpus.problems)
    items = [(e.utt_id, e.path) for e in corpus.entries]
    missing = find_missing_paths(items, corpus.key_file.name)
    gone = {p.utt_id for p in missing} | {p.utt_id for p in problems if p.missing}
    gone_folders = {p.path for p in missing if p.utt_id is None}
    todo = [(u, p) for u, p in items if u not in gone and os.path.dirname(p) not in gone_folders]
    rate = SAMPLE_RATE if official else None  # the official sets are 16 kHz mono; a user's set is resampled
    found, durations = check_audio_files(todo, deep, workers, f"check {corpus.name}", progress, rate)
    unkeyed = find_unkeyed_audio(corpus)
    problems += missing + found + ([] if official else unkeyed)
    keys = Counter(e.key for e in corpus.entries)
    systems = Counter(e.system for e in corpus.entries if e.key == "spoof")
    block = {"protocol": str(corpus.key_file), "files": len(corpus.entries), "bonafide": keys["bonafide"],
             "spoof": keys["spoof"], "systems": dict(sorted(systems.items())), "duration_s": round(sum(durations), 3),
             "checked": len(todo), "unlisted": len(unkeyed) if official else 0,
             "problems": [asdict(p) for p in problems]}  # fmt: skip
    name = corpus.subset or corpus.name
    return {"root": str(corpus.root.resolve()), "corpus": corpus.name, "deep": deep, "splits": {name: block},
            "problems": len(problems)}  # fmt: skip


CORPUS_TITLES = {"la19": "ASVspoof 2019 LA", "la21": "ASVspoof 2021 LA", "df21": "ASVspoof 2021 DF",
                 "itw": "In-the-Wild", "asv5": "ASVspoof 5", "kaldi": "Kaldi folder", "folders": "label folders",
                 "csv": "CSV key"}  # fmt: skip


def format_check_report(report: dict, limit: int = 50) -> str:
    """The human-readable form of `check_dataset`'s / `check_corpus`' report: one block per split, then the
    problems."""
    how = "every file decoded: --deep" if report["deep"] else "headers and file ends read; --deep decodes all"
    lines = [f"{CORPUS_TITLES[report.get('corpus', 'la19')]} at {report['root']} ({how})"]
    lines.append(f"{'split':<6} {'files':>7} {'bonafide':>9} {'spoof':>7} {'duration':>8} {'problems':>8}  systems")
    for split, s in report["splits"].items():
        systems = ", ".join(f"{k} {v:,}" for k, v in s["systems"].items()) or "-"
        lines.append(f"{split:<6} {s['files']:>7,} {s['bonafide']:>9,} {s['spoof']:>7,} "
                     f"{format_seconds(s['duration_s']):>8} {len(s['problems']):>8,}  {systems}")  # fmt: skip
    for split, s in report["splits"].items():
        if s["problems"]:
            lines.append(f"{split}: {len(s['problems']):,} problem(s)")
            lines.append(format_problems([Problem(**p) for p in s["problems"]], limit))
        if s.get("unlisted"):
            lines.append(f"{split}: note: {s['unlisted']:,} audio file(s) on disk are in no protocol line (ignored)")
    lines.append(f"{report['problems']:,} problem(s)" if report["problems"] else "no problems found")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- Dataset


class AudioDataset(Dataset):
    """Trials of any corpus whose entries name their audio (`ProtocolEntry.path`: `corpora.read_corpus`).

    Item i -> (x, label, utt_id, system, speaker), where x is the front-end's (1, F, T) features or, with
    `frontend=None`, the fixed-length (num_samples,) waveform so that features are computed on the GPU per batch.

    A set with problems fails at construction with one error listing all of them (missing and empty files always;
    unreadable, truncated or wrong-format files too with `verify`, undecodable ones with `cache`), or, with
    `skip_bad`, loses those items and says how many on stderr (`self.skipped` paths, `self.problems`).

    Args:
        entries: the trials, each with its audio's path.
        num_samples: fixed waveform length (`frontend.num_samples(num_frames)`).
        frontend: module applied per item, or None to return waveforms.
        pad: "repeat" (STC, NII) or "zeros" (seed recipe) for short files.
        random_crop: a random window of long files (training) instead of the start (evaluation).
        augment: the seed recipe's augmentation (training only).
        cache: decode every file once at construction and keep it as int16 in memory (LA train: ~2.7 GB).
        skip_bad: drop items with problems found at construction (counted) instead of raising. An unusable file met
            later (undecodable, truncated, NaN/inf samples) is a `BadAudio` item either way; `count_bad` applies
            the policy in the loops.
        verify: header-check every file at construction (`check_audio_file`, ~0.4 ms per file).
        name: what the trials are, for messages ("eval", "itw").
        source: the key file that lists them, for messages.
    """

    def __init__(
        self,
        entries: Sequence[ProtocolEntry],
        num_samples: int,
        frontend: nn.Module | None = None,
        pad: str = "repeat",
        random_crop: bool = False,
        augment: bool = False,
        cache: bool = False,
        skip_bad: bool = False,
        verify: bool = False,
        name: str = "corpus",
        source: str = "the key file",
    ):
        if pad not in PADS:
            raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
        self.name, self.source, self.num_samples, self.frontend = name, source, num_samples, frontend
        self.pad, self.random_crop, self.augment, self.skip_bad = pad, random_crop, augment, skip_bad
        entries = list(entries)
        problems, pcm_of = self._find_problems(entries, verify, cache)
        self.entries, self.problems, self.skipped = entries, [], []
        self._drop(problems, len(entries))
        self.cached: list[np.ndarray] | None = [pcm_of[e.utt_id] for e in self.entries] if cache else None

    def entry_path(self, e: ProtocolEntry) -> Path:
        """Where an entry's audio is."""
        if not e.path:
            raise ValueError(f"{e.utt_id}: the entry names no audio path (read the corpus with corpora.read_corpus)")
        return Path(e.path)

    def _find_missing(self, entries: list[ProtocolEntry]) -> tuple[list[Problem], list[ProtocolEntry]]:
        """Problems of absent or empty files, and the entries whose audio is there."""
        problems = find_missing_paths([(e.utt_id, str(self.entry_path(e))) for e in entries], self.source)
        gone = {p.utt_id for p in problems} | {p.path for p in problems if p.utt_id is None}
        todo = [e for e in entries if e.utt_id not in gone and str(self.entry_path(e).parent) not in gone]
        return problems, todo

    def _find_problems(
        self, entries: list[ProtocolEntry], verify: bool, cache: bool
    ) -> tuple[list[Problem], dict[str, np.ndarray]]:
        """Every problem of the set at once: missing/empty files, then header checks and/or decoding."""
        problems, todo = self._find_missing(entries)
        if verify:
            items = [(e.utt_id, str(self.entry_path(e))) for e in todo]
            problems += check_audio_files(items, label=f"verify {self.name}")[0]
        pcm_of = {}
        if cache:
            pcms, failed = decode_all([self.entry_path(e) for e in todo], skip_bad=True)
            pcm_of = {e.utt_id: pcm for e, pcm in zip(todo, pcms) if pcm is not None}
            utt_of = {str(self.entry_path(e)): e.utt_id for e in todo}
            problems += [dataclasses.replace(p, utt_id=utt_of.get(p.path, p.utt_id)) for p in failed]
        return problems, pcm_of

    def _drop(self, problems: list[Problem], total: int) -> None:
        """Raise listing every problem, or (skip_bad) drop the items concerned and report the count on stderr."""
        if not problems:
            return
        if not self.skip_bad:
            missing_only = all(p.missing for p in problems)
            raise (FileNotFoundError if missing_only else RuntimeError)(
                f"{len(problems):,} problem(s) in the {total:,} {self.name} files listed in {self.source}, first: "
                f"{problems[0]}; fix the tree (python data.py --check lists every problem) or pass --skip-bad to "
                "leave these files out"
            )
        if any(p.utt_id is None for p in problems):
            first = next(p for p in problems if p.utt_id is None)
            raise FileNotFoundError(f"--skip-bad cannot skip a missing audio folder: {first}")
        bad = {p.utt_id for p in problems}
        self.entries = [e for e in self.entries if e.utt_id not in bad]
        self.problems += problems
        self.skipped += list(dict.fromkeys(p.path for p in problems))
        print(f"{self.name}: skipped {len(bad):,} of {total:,} files with problems (--skip-bad), "
              f"first: {problems[0]}", file=sys.stderr)  # fmt: skip

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, i: int) -> Path:
        return self.entry_path(self.entries[i])

    def waveform(self, i: int) -> torch.Tensor:
        """Item i's whole decoded file (N,). The whole file, not only the item's window: a file truncated, damaged or
        non-finite anywhere is found the first time it is read, as `--check --deep` would find it.

        Raises:
            FileNotFoundError / RuntimeError / ValueError naming the file (`load_audio`).
        """
        if self.cached is not None:
            return torch.from_numpy(self.cached[i].astype(np.float32) / 32768.0)
        return load_audio(self.path(i))

    def __getitem__(self, i: int):
        e = self.entries[i]
        try:
            wave = self.waveform(i)
        except AUDIO_ERRORS as err:
            return BadAudio.of(e.utt_id, self.path(i), err)
        wave = fix_length(wave, self.num_samples, self.pad, self.random_crop)
        if self.augment:
            wave = augment_waveform(wave)
        x = wave if self.frontend is None else self.frontend(wave.unsqueeze(0))[0]  # (N,) or (1, F, T)
        return x, e.label, e.utt_id, e.system, e.speaker


class ASVspoof2019LA(AudioDataset):
    """One split of ASVspoof 2019 LA: an `AudioDataset` whose audio is found by the LA layout (`LALayout.entry_path`:
    the split's flac/ folder, or an entry's own path for vocoded copies), checked with one listing of that folder.

    Args:
        data_root: anything `find_la_root` accepts, or an `LALayout`.
        split: "train", "dev" or "eval".
        entries: use these protocol entries instead of the split's protocol (e.g. a subset).
        augment: training only (ValueError for dev and eval).
        the others: as `AudioDataset`.
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
        verify: bool = False,
    ):
        check_split(split)
        if augment and split != "train":
            raise ValueError(
                f"augment=True for the {split} split: augmentation is for training only, never in evaluation"
            )
        self.layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
        self.split = split
        entries = list(entries) if entries is not None else self.layout.protocol(split)
        super().__init__(entries, num_samples, frontend, pad, random_crop, augment, cache, skip_bad, verify,
                         name=split, source=self.layout.protocol_path(split).name)  # fmt: skip

    def entry_path(self, e: ProtocolEntry) -> Path:
        return self.layout.entry_path(self.split, e)

    def _find_missing(self, entries: list[ProtocolEntry]) -> tuple[list[Problem], list[ProtocolEntry]]:
        return find_present(self.layout, self.split, entries)


# ----------------------------------------------------------------------------- unreadable audio: one policy


@dataclass(frozen=True)
class BadAudio:
    """What a Dataset item is when its audio cannot be used: the utterance, its file and what is wrong.

    Every loop (training, dev scoring, evaluate.py, explain.py) meets unreadable files the same way: the item is this
    sentinel, `collate` moves it to batch["bad"], and `count_bad` either counts it (--skip-bad) or stops the run
    with one line naming the file. No exception crosses a DataLoader worker, so no traceback text is parsed.
    """

    utt_id: str
    path: str
    problem: str

    @classmethod
    def of(cls, utt_id: str, path: str | os.PathLike, error: Exception) -> BadAudio:
        return cls(utt_id, str(path), str(error).removeprefix(f"{path}: "))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class BadAudioError(RuntimeError):
    """An unreadable, truncated, empty or non-finite audio file met without --skip-bad."""


def count_bad(bad: Sequence[BadAudio], skip_bad: bool) -> int:
    """The one bad-file policy: with `skip_bad` return how many files are unusable (the caller adds them to its
    count); without it raise BadAudioError naming the first, with the way out."""
    if bad and not skip_bad:
        raise BadAudioError(f"{bad[0]}; pass --skip-bad to skip unusable files (they are counted)")
    return len(bad)


def decode_all(
    paths: Sequence[Path], skip_bad: bool = False, workers: int | None = None
) -> tuple[list[np.ndarray | None], list[Problem]]:
    """Decode files in parallel threads into int16 arrays (half the memory of float32), with a progress line.

    Returns:
        (one int16 array per path, None where decoding failed; the failures as Problems named by file stem).

    Raises:
        RuntimeError: listing every file that failed, unless `skip_bad`.
    """

    def one(path: Path) -> np.ndarray | str:
        try:
            wave = load_audio(path)
        except AUDIO_ERRORS as e:
            return str(e)
        return (wave.clamp(-1, 32767 / 32768) * 32768).round().to(torch.int16).numpy()

    progress = Progress(len(paths), "decode")
    pcms, problems = [], []
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for path, pcm in zip(paths, pool.map(one, paths)):
            if isinstance(pcm, str):
                problems.append(Problem(Path(path).stem, str(path), pcm.removeprefix(f"{path}: ")))
                pcm = None
            pcms.append(pcm)
            progress.update(1)
    progress.close()
    if problems and not skip_bad:
        raise RuntimeError(f"{len(problems):,} of {len(paths):,} files failed to decode:\n{format_problems(problems)}")
    return pcms, problems


def collate(batch: list) -> dict:
    """Stack dataset items into a batch dict; `BadAudio` items go to batch["bad"] (x is None when none is usable)."""
    good = [b for b in batch if not isinstance(b, BadAudio)]
    bad = [b for b in batch if isinstance(b, BadAudio)]
    if not good:
        return {"x": None, "bad": bad, "n_bad": len(bad)}
    xs, labels, utt_ids, systems, speakers = zip(*good)
    return {
        "x": torch.stack(xs),  # (B, N) or (B, 1, F, T)
        "label": torch.tensor(labels, dtype=torch.long),
        "utt_id": list(utt_ids),
        "system": list(systems),
        "speaker": list(speakers),
        "bad": bad,
        "n_bad": len(bad),
    }


# ----------------------------------------------------------------------------- --show: one item as a picture


def plot_item(
    data_root: str | os.PathLike | LALayout,
    utt_id: str,
    out: str | os.PathLike,
    frontend: str | STFTFrontEnd = "stft",
    num_frames: int = 600,
    pad: str = "repeat",
) -> Path:
    """Draw one dataset item as the model sees it: the fixed-length waveform above its features.

    The item is made as in evaluation (crop from the start, pad by `pad`); a dashed line marks where the file ends
    when it was padded. Axes in seconds and Hz (mel: each band labelled with its centre frequency); colour in dB.

    Returns:
        The PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
    split, entry = find_utterance(layout, utt_id)
    fe = make_frontend(frontend) if isinstance(frontend, str) else frontend
    ds = ASVspoof2019LA(layout, split, fe.num_samples(num_frames), frontend=None, pad=pad, entries=[entry])
    file_s = ds.waveform(0).shape[0] / SAMPLE_RATE
    wave = ds[0][0]  # (N,) fixed length
    with torch.no_grad():
        db = fe(wave.unsqueeze(0))[0, 0].numpy() * (10 / np.log(10))  # (F, T), natural log -> dB
    times, freqs = fe.frame_times(db.shape[1]), fe.bin_frequencies()
    dt = fe.hop_length / fe.sample_rate

    fig, (ax_w, ax_s) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 3]}, constrained_layout=True
    )
    ax_w.plot(np.arange(wave.shape[0]) / SAMPLE_RATE, wave.numpy(), lw=0.4, color="0.25")
    ax_w.set_ylabel("amplitude")
    fig.suptitle(f"{utt_id} — {entry.key} ({entry.system}) — {split}", fontsize=13, fontweight="bold")
    info = f"speaker {entry.speaker}; file {file_s:.2f} s; item {wave.shape[0] / SAMPLE_RATE:.2f} s ({pad} padding, "
    ax_w.set_title(info + f"crop from the start); {layout.audio_path(split, utt_id).name}", fontsize=9)
    y_extent = [-0.5, len(freqs) - 0.5] if fe.name == "mel" else [0.0, freqs[-1]]
    im = ax_s.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                     extent=[times[0] - dt / 2, times[-1] + dt / 2, *y_extent], interpolation="nearest")  # fmt: skip
    if fe.name == "mel":
        ticks = np.arange(0, len(freqs), 2)
        ax_s.set_yticks(ticks, [f"{freqs[i]:.0f}" for i in ticks])
        ax_s.set_ylabel(f"mel band centre (Hz), {len(freqs)} bands")
    else:
        ax_s.set_ylabel(f"frequency (Hz), {len(freqs)} bins")
    ax_s.set_xlabel("time (s)")
    ax_s.set_title(describe_frontend(fe), fontsize=9)
    fig.colorbar(im, ax=ax_s, label="log power (dB)", pad=0.01)
    if file_s < wave.shape[0] / SAMPLE_RATE:
        for ax in (ax_w, ax_s):
            ax.axvline(file_s, ls="--", lw=1.2, color="tab:cyan")
        ax_w.text(file_s, 0.05, f" file ends; {'repeated' if pad == 'repeat' else 'zeros'} after",
                  transform=ax_w.get_xaxis_transform(), fontsize=8, color="tab:blue")  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def describe_frontend(fe: STFTFrontEnd) -> str:
    """One line naming a front-end's parameters, e.g. for plot titles."""
    window = "Blackman" if fe.name == "stft" else "Hann"
    bands = f"{fe.n_bins} mel bands" if fe.name == "mel" else f"{fe.n_bins} bins"
    return (f"{fe.name}: log power, {window} window {fe.win_length}, n_fft {fe.n_fft}, hop {fe.hop_length} "
            f"({1000 * fe.hop_length / fe.sample_rate:.1f} ms), {bands}")  # fmt: skip


# ----------------------------------------------------------------------------- main

EXAMPLES = """examples:
  python data.py --data-root ../shared/data/asvspoof2019_la_mini/LA --check
  python data.py --data-root /data/LA --check --split train --deep --json
  python data.py --data-root /data/LA --show LA_T_4179989 --out demo/LA_T_4179989.png [--frontend mel]
  python data.py --download --to /data/asvspoof2019 [--source datashare|kaggle]
  python data.py --download --to /data/vocv4 --source vocv4"""


def build_parser() -> argparse.ArgumentParser:
    from download import add_download_args  # noqa: PLC0415  (tooling: urllib and sockets stay out of the workers)

    parser = ArgumentParser(
        description="Check, show or download ASVspoof 2019 LA (and the voc.v4 vocoded set).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser)
    add_input_args(parser)
    g = parser.add_argument_group("data.py")
    action = g.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="count and check every split; exit 1 on any problem")
    action.add_argument("--show", metavar="UTT_ID", help="draw one item (waveform and features) into --out")
    action.add_argument("--download", action="store_true", help="download, extract and check into --to")
    g.add_argument("--split", choices=SPLITS, help="--check: only this split (default: all three)")
    g.add_argument("--json", action="store_true", help="--check: print one JSON object instead of the table")
    g.add_argument("--deep", action="store_true", help="--check: decode every file instead of headers and file ends")
    g.add_argument("--out", metavar="FILE.png", help="--show: the picture to write")
    add_corpus_args(parser)
    add_download_args(parser.add_argument_group("--download (download.py)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    belongs = {"--split": "check", "--json": "check", "--deep": "check", "--out": "show", "--to": "download",
               "--url": "download", "--keep-archive": "download", "--corpus": "check", "--subset": "check"}  # fmt: skip
    for flag, action in belongs.items():
        if getattr(args, flag[2:].replace("-", "_")) not in (None, False) and not getattr(args, action):
            parser.error(f"{flag} goes with --{action}")  # a flag-combination error: exit 2, as argparse's own
    if args.check:
        name = args.corpus or (detect_corpus(args.data_root) if args.data_root else "la19")
        if name != "la19":
            if args.split:
                raise ValueError(f"--split {args.split} is for ASVspoof 2019 LA; the {name} corpus takes --subset")
            report = check_corpus(read_corpus(args.data_root, name, args.subset), args.deep, args.num_workers)
            print(json.dumps(report, indent=2) if args.json else format_check_report(report))
            return 1 if report["problems"] else 0
        if args.subset:
            raise ValueError(f"--subset {args.subset}: ASVspoof 2019 LA takes --split (train, dev, eval)")
        report = check_dataset(args.data_root, [args.split] if args.split else SPLITS, args.deep, args.num_workers)
        print(json.dumps(report, indent=2) if args.json else format_check_report(report))
        return 1 if report["problems"] else 0
    if args.show:
        if not args.out or not args.out.lower().endswith(".png"):
            raise ValueError(f"--show needs --out FILE.png (a PNG picture), got {args.out!r}")
        print(f"wrote {plot_item(args.data_root, args.show, args.out, args.frontend, args.num_frames, args.pad)}")
        return 0
    import download  # noqa: PLC0415  (tooling: urllib, sockets)

    where = download.fetch(args)
    if args.source == "vocv4":
        print(download.summarize_vocv4(where))
        return 0
    report = check_dataset(where)
    print(format_check_report(report))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    run_cli(main)
