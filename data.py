"""data.py -- ASVspoof 2019 LA as users have it on disk: protocols, layouts, audio, front-ends, Dataset.

    python data.py --data-root ROOT --check [--split S] [--json] [--deep]
    python data.py --data-root ROOT --show LA_T_4179989 --out item.png
    python data.py --download --to DIR [--source datashare|kaggle|vocv4] [--url URL]

Conventions used by every script of the collection:
  * label 1 = bona fide, 0 = spoof, so a model's two outputs are [spoof, bona fide];
  * audio is read with soundfile (FLAC and WAV; torchaudio 2.9's `load` needs TorchCodec and FFmpeg, which are
    not on these machines), downmixed to mono and resampled to 16 kHz; all DSP is torch/torchaudio;
  * features are (B, 1, F, T) tensors made on any device by a front-end module from fixed-length waveforms.

The database: ASVspoof 2019 LA (Wang et al., "ASVspoof 2019: a large-scale public database of synthesized,
converted and replayed speech", CSL 2020; Todisco et al., Interspeech 2019), ODC-By 1.0, from Edinburgh
DataShare (https://datashare.ed.ac.uk/handle/10283/3336, DOI 10.7488/ds/2555): 16 kHz mono FLAC, train 25,380
files (A01-A06), dev 24,844 (A01-A06), eval 71,237 (A07-A19), 20 / 10+10 / 48+19 speakers (VCTK).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from metrics import ArgumentParser, atomic_write, text_lines  # noqa: F401  (one of each; re-exported)

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
ATTACKS = tuple(f"A{i:02d}" for i in range(1, 20))  # A01-A06 in train/dev, A07-A19 in eval (A16 = A04, A19 = A06)


# ----------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class ProtocolEntry:
    """One line of an official CM protocol: `SPEAKER UTT_ID - SYSTEM KEY`."""

    speaker: str  # LA_0079
    utt_id: str  # LA_T_1138215
    system: str  # "-" for bona fide, A01..A19 for spoofs (a vocoder's name for copy-synthesised training spoofs)
    key: str  # "bonafide" | "spoof"
    path: str | None = None  # audio outside the split's flac/ folder (vocoded copies); None: the official place

    @property
    def label(self) -> int:
        return LABEL_BONAFIDE if self.key == "bonafide" else LABEL_SPOOF


def parse_protocol_line(line: str, where: str) -> ProtocolEntry:
    """Parse one CM protocol line; `where` ("file line N") prefixes any error.

    Raises:
        ValueError: not 5 fields, a key other than bonafide/spoof, or a system other than '-' (bona fide) or
            A01..A19 (spoof); the message holds `where`, the line and what was expected.
    """
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"{where}: expected 5 fields (speaker utt_id - system key), got {len(fields)}: {line.strip()!r}"
        )
    speaker, utt_id, _env, system, key = fields
    if key not in ("bonafide", "spoof"):
        raise ValueError(f"{where}: key must be 'bonafide' or 'spoof', got {key!r}: {line.strip()!r}")
    if (key == "bonafide" and system != "-") or (key == "spoof" and system not in ATTACKS):
        raise ValueError(
            f"{where}: system must be '-' for bonafide and A01..A19 for spoof, got {system!r} with key {key!r}: "
            f"{line.strip()!r}"
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
    for number, line in text_lines(path, "CM protocol"):
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

    def entry_path(self, split: str, entry: ProtocolEntry) -> Path:
        """Where a protocol entry's audio is: its own `path` (a vocoded copy in the cache), else the split's flac/."""
        return Path(entry.path) if entry.path else self.audio_path(split, entry.utt_id)

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
        FileNotFoundError, RuntimeError (unreadable or truncated), ValueError (empty, or NaN / inf samples: a float
        file can hold them, and one would turn every score and loss it touches into NaN) -- each naming the file.
    """
    path = audio_file(path)

    def check_finite(block: np.ndarray, at: int, sr: int) -> None:
        bad = ~np.isfinite(block)
        if bad.any():
            first = int(np.argmax(bad.any(axis=1))) + at
            raise ValueError(f"{path}: {int(bad.sum()):,} sample(s) are NaN or inf (first at sample {first:,}, "
                             f"{first / sr:.3f} s); expected finite audio in [-1, 1]")  # fmt: skip

    if verify and (short := wav_shortfall(path)):
        raise RuntimeError(f"{path}: {short}")
    try:
        with sound_file(path) as f:
            sr, total = f.samplerate, f.frames
            window = num_samples is not None and sr == sample_rate and total > num_samples
            if not window:
                audio = f.read(dtype="float32", always_2d=True)  # (N, C)
                start = 0
                check_finite(audio, 0, sr)
                if total and audio.shape[0] < total:
                    raise RuntimeError(f"truncated: decoding stops {total - audio.shape[0]:,} samples short of the "
                                       f"{total:,} the header promises")  # fmt: skip
            else:
                start = int(torch.randint(0, total - num_samples + 1, ())) if random_crop else min(offset, total - 1)
                if verify:  # every block decoded and checked, only the window kept
                    parts, pos = [], 0
                    while pos < total:
                        block = f.read(AUDIO_BLOCK, dtype="float32", always_2d=True)
                        if block.shape[0] == 0:
                            raise RuntimeError(f"truncated: decoding stops {total - pos:,} samples short of the "
                                               f"{total:,} the header promises")  # fmt: skip
                        check_finite(block, pos, sr)
                        lo, hi = max(start - pos, 0), min(start + num_samples - pos, block.shape[0])
                        if lo < hi:
                            parts.append(block[lo:hi])
                        pos += block.shape[0]
                    audio = np.concatenate(parts)
                else:
                    f.seek(start)
                    audio = f.read(num_samples, dtype="float32", always_2d=True)
                    check_finite(audio, start, sr)
    except (ValueError, RuntimeError) as e:
        if str(e).startswith(str(path)):
            raise
        raise RuntimeError(f"{path}: cannot decode audio ({e})") from e
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
    raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")


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


# ----------------------------------------------------------------------------- copy-synthesis: local vocoders

# Analysis grid of the local vocoders: n_fft 1024 / hop 256 / Hann, the grid of HiFi-GAN's and WaveGlow's mel
# front-ends (and of the published mask reproduction). It is deliberately NOT the LCNN's 1724/130 Blackman grid:
# a real vocoder knows nothing of the detector, and re-synthesis on the detector's own grid would be a
# near-perfect inverse of exactly the representation the model sees.
VOCODER_N_FFT, VOCODER_HOP, VOCODER_N_MELS = 1024, 256, 80


def vocode_griffinlim(
    wave: torch.Tensor, n_fft: int = VOCODER_N_FFT, hop_length: int = VOCODER_HOP, n_iter: int = 64
) -> torch.Tensor:
    """Griffin-Lim re-synthesis from the STFT magnitude: the magnitude is kept, the phase is estimated.

    Deterministic (`rand_init=False`: the iterations start from zero phase).

    Args:
        wave: (N,) waveform.
    Returns:
        (N,) waveform.
    """
    import torchaudio.transforms as T

    spec = T.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0)(wave)  # (F, frames) magnitude
    gl = T.GriffinLim(n_fft=n_fft, hop_length=hop_length, n_iter=n_iter, power=1.0, length=wave.numel(),
                      rand_init=False)  # fmt: skip
    return gl(spec).float()


def vocode_melgl(
    wave: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = VOCODER_N_FFT,
    hop_length: int = VOCODER_HOP,
    n_mels: int = VOCODER_N_MELS,
    n_iter: int = 64,
) -> torch.Tensor:
    """Mel-spectrogram inversion then Griffin-Lim: what a mel-conditioned vocoder cannot recover.

    80 Slaney mel bands up to 8 kHz on magnitude (HiFi-GAN's and WaveGlow's conditioning) -> least-squares
    inverse of the filterbank (torchaudio's InverseMelScale, clipped at zero) -> Griffin-Lim. The harmonic
    fine structure between mel bands and the phase are lost; the spectral envelope survives.

    Args:
        wave: (N,) waveform.
    Returns:
        (N,) waveform.
    """
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(
        sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        power=1.0,
        f_min=0.0,
        f_max=sample_rate / 2,
        norm="slaney",
        mel_scale="slaney",
    )(wave)  # (M, frames)
    lin = T.InverseMelScale(
        n_fft // 2 + 1, n_mels, sample_rate, f_min=0.0, f_max=sample_rate / 2, norm="slaney", mel_scale="slaney"
    )(mel)  # (F, frames)
    gl = T.GriffinLim(n_fft=n_fft, hop_length=hop_length, n_iter=n_iter, power=1.0, length=wave.numel(),
                      rand_init=False)  # fmt: skip
    return gl(lin).float()


def optional_package(name: str, what: str):
    """Import an optional extra (requirements-extras.txt) or raise one line saying how to get it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise RuntimeError(f"{what} needs the optional package {name} (pip install {name}, or pip install -r "
                           "requirements-extras.txt); the other vocoders need nothing more") from None  # fmt: skip


def vocode_world(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, frame_period: float = 5.0) -> torch.Tensor:
    """WORLD analysis/synthesis (Morise et al., IEICE 2016): F0 by DIO + StoneMask, CheapTrick spectral envelope,
    D4C aperiodicity, re-synthesised -- the vocoder of many VC and TTS systems. Needs the optional `pyworld`."""
    pyworld = optional_package("pyworld", "the WORLD vocoder")
    x = wave.double().numpy()
    f0, t = pyworld.dio(x, sample_rate, frame_period=frame_period)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    sp = pyworld.cheaptrick(x, f0, t, sample_rate)
    ap = pyworld.d4c(x, f0, t, sample_rate)
    y = torch.from_numpy(pyworld.synthesize(f0, sp, ap, sample_rate, frame_period)).float()
    return F.pad(y, (0, max(0, wave.numel() - y.numel())))[: wave.numel()]


def vocode_mlsa(
    wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, order: int = 24, alpha: float = 0.42, hop: int = 80
) -> torch.Tensor:
    """Mel-cepstral analysis and MLSA-filter synthesis (SPTK; Imai 1983, Tokuda et al. 1994), the classic HTS-era
    vocoder: 24th-order mel-cepstrum (alpha 0.42 for 16 kHz), F0 by SWIPE', pulse/noise excitation. Needs the
    optional `pysptk`."""
    pysptk = optional_package("pysptk", "the MLSA vocoder")
    from pysptk.synthesis import MLSADF, Synthesizer

    x = wave.double().numpy()
    n_fft = 512
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:count] * pysptk.blackman(n_fft)
    mc = pysptk.mcep(frames + 1e-8 * np.random.default_rng(0).standard_normal(frames.shape), order, alpha,
                     etype=1, eps=1e-8)  # fmt: skip
    f0 = pysptk.swipe(x, fs=sample_rate, hopsize=hop, min=60, max=400, otype="f0")[:count]
    pitch = np.where(f0 > 0, sample_rate / np.maximum(f0, 1e-8), 0.0)  # period in samples, 0 = unvoiced
    excitation = pysptk.excite(pitch.astype(np.float64), hop)
    y = Synthesizer(MLSADF(order=order, alpha=alpha), hop).synthesis(excitation, pysptk.mc2b(mc, alpha))
    y = torch.from_numpy(np.ascontiguousarray(y)).float()
    return F.pad(y, (0, max(0, wave.numel() - y.numel())))[: wave.numel()]


VOCODERS = {"griffinlim": vocode_griffinlim, "melgl": vocode_melgl, "world": vocode_world, "mlsa": vocode_mlsa}


def vocode(wave: torch.Tensor, name: str) -> torch.Tensor:
    """Copy-synthesis of a (N,) waveform by the local vocoder `name` (a key of VOCODERS); returns (N,), finite.

    Raises:
        ValueError: an unknown name. RuntimeError: an optional package is missing, or the vocoder gave NaN/inf.
    """
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; expected one of {', '.join(VOCODERS)}")
    y = VOCODERS[name](wave)
    if not torch.isfinite(y).all():
        raise RuntimeError(f"the {name} vocoder gave non-finite samples")
    return y


# ----------------------------------------------------------------------------- vocv4 (project09-voc.v4) and vocoded data


@dataclass(frozen=True)
class Vocv4Entry:
    """One vocv4 protocol line: `LA_0079 hifigan_LA_T_1703395 - hifigan spoof`."""

    speaker: str  # LA_0079
    name: str  # hifigan_LA_T_1703395 (the wav's stem)
    vocoder: str  # hifigan
    utt_id: str  # LA_T_1703395, the ASVspoof 2019 bona fide original


def read_vocv4_protocol(path: str | os.PathLike) -> list[Vocv4Entry]:
    """Read vocv4's protocol.txt; lines that are not vocoded spoofs (bona fide lines) are skipped.

    Raises:
        FileNotFoundError: no such file. ValueError: a malformed line, naming file, line number and the line.
    """
    import re

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocv4 protocol not found: {path}")
    entries = []
    for number, line in text_lines(path, "vocv4 protocol"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{path.name} line {number}: expected 5 fields (speaker name - vocoder key), "
                             f"got {len(fields)}: {line.strip()!r}")  # fmt: skip
        speaker, name, _, vocoder, key = fields
        if key != "spoof":
            continue
        m = re.search(r"(LA_[TDE]_\d{7})$", name)
        if m is None:
            raise ValueError(f"{path.name} line {number}: {name!r} does not end in an LA utterance id "
                             "(expected <vocoder>_LA_T_1234567)")  # fmt: skip
        entries.append(Vocv4Entry(speaker, name, vocoder, m.group(1)))
    return entries


def vocv4_files(
    root: str | os.PathLike, vocoders: Sequence[str] | None = None, utt_ids: set[str] | None = None
) -> list[tuple[Vocv4Entry, Path]]:
    """Every vocoded file of an extracted vocv4 folder (optionally only some vocoders, or copies of some
    utterances), with its wav path.

    Args:
        root: the `voc.v4` folder, or a folder above it that `find_vocv4_root` accepts.
    Raises:
        FileNotFoundError: no voc.v4 folder, or a listed wav missing. ValueError: a vocoder it does not list.
    """
    folder = find_vocv4_root(root)
    entries = read_vocv4_protocol(folder / "protocol.txt")
    if vocoders:
        listed = sorted({e.vocoder for e in entries})
        unknown = [v for v in vocoders if v not in listed]
        if unknown:
            raise ValueError(f"{folder / 'protocol.txt'} lists no {', '.join(unknown)} files (vocoders: "
                             f"{', '.join(listed)})")  # fmt: skip
        entries = [e for e in entries if e.vocoder in vocoders]
    if utt_ids is not None:
        entries = [e for e in entries if e.utt_id in utt_ids]
    out = []
    for e in entries:
        path = folder / "wav" / f"{e.name}.wav"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {folder / 'protocol.txt'} but missing")
        out.append((e, path))
    return out


def find_vocv4_files(root: str | os.PathLike, utt_id: str, vocoders: Sequence[str]) -> dict[str, Path]:
    """Paths of `utt_id`'s vocoded copies in a vocv4 folder, one per vocoder, in the order of `vocoders`.

    Raises:
        FileNotFoundError / ValueError as `vocv4_files`; ValueError: the utterance has no copy by a vocoder.
    """
    folder = find_vocv4_root(root)
    listed = {e.vocoder for e in read_vocv4_protocol(folder / "protocol.txt") if e.utt_id == utt_id}
    mine = {e.vocoder: p for e, p in vocv4_files(folder, [v for v in vocoders if v in listed], {utt_id})}
    missing = [v for v in vocoders if v not in mine]
    if missing:
        raise ValueError(f"{folder / 'protocol.txt'} lists no {missing[0]} copy of {utt_id} (vocoders listed for it: "
                         f"{', '.join(sorted(listed)) or 'none'})")  # fmt: skip
    return {v: mine[v] for v in vocoders}


VOCODED_CACHE = "cache/vocoded"  # default --vocoded-cache


def _vocode_job(job: tuple[str, str, str]) -> str | None:
    """Make one cached vocoded copy (a worker task of `prepare_vocoded`); returns an error text or None."""
    src, name, dst = job
    try:
        y = vocode(load_audio(src), name)  # float WAV: a copy louder than full scale is kept, not clipped
        tmp = f"{dst}.{os.getpid()}.tmp"
        import soundfile as sf

        sf.write(tmp, y.numpy(), SAMPLE_RATE, format="WAV", subtype="FLOAT")
        os.replace(tmp, dst)
    except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
        return f"{src}: {name}: {e}"
    return None


def prepare_vocoded(
    layout: LALayout,
    split: str,
    entries: Sequence[ProtocolEntry],
    vocoders: Sequence[str],
    cache: str | os.PathLike = VOCODED_CACHE,
    workers: int | None = None,
) -> list[ProtocolEntry]:
    """Copy-synthesised spoofs of the bona fide `entries` (the vocv4 recipe, arXiv:2210.10570, with local vocoders),
    made once into `cache/<vocoder>/<vocoder>_<utt>.wav` and reused by every later run.

    Returns:
        One spoof entry per (bona fide entry, vocoder): utt_id `<vocoder>_<utt>`, system the vocoder's name, the
        original's speaker, `path` the cached file.

    Raises:
        ValueError: an unknown vocoder. RuntimeError: an optional package is missing, or copies failed (listed).
    """
    for name in vocoders:
        if name not in VOCODERS:
            raise ValueError(f"--vocoded: unknown vocoder {name!r}; expected some of {', '.join(VOCODERS)}")
        if name in ("world", "mlsa"):
            optional_package({"world": "pyworld", "mlsa": "pysptk"}[name], f"--vocoded {name}")
    bona = [e for e in entries if e.key == "bonafide"]
    out, jobs = [], []
    for name in vocoders:
        folder = Path(cache) / name
        folder.mkdir(parents=True, exist_ok=True)
        for e in bona:
            dst = folder / f"{name}_{e.utt_id}.wav"
            out.append(ProtocolEntry(e.speaker, f"{name}_{e.utt_id}", name, "spoof", str(dst)))
            if not dst.is_file():
                src = layout.entry_path(split, e)
                jobs.append((str(src), name, str(dst)))
    if jobs:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        print(f"vocoded copies: making {len(jobs):,} of {len(out):,} into {cache} (once; later runs reuse them)",
              file=sys.stderr)  # fmt: skip
        bar, errors = Progress(len(jobs), "vocode", every=5.0), []
        workers = workers or os.cpu_count() or 1
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        # one thread each: a forked child must not use the parent's OpenMP pool (it hangs), and the workers share cores
        with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for err in pool.map(_vocode_job, jobs, chunksize=4):
                bar.update(1)
                if err:
                    errors.append(err)
        bar.close()
        if errors:
            raise RuntimeError(f"{len(errors):,} vocoded copies failed, first: {errors[0]}")
    return out


def vocv4_training_entries(root: str | os.PathLike, entries: Sequence[ProtocolEntry],
                           vocoders: Sequence[str] | None = None) -> list[ProtocolEntry]:  # fmt: skip
    """vocv4's vocoded copies of the bona fide `entries` as spoof entries (system = vocoder, `path` = the wav)."""
    keep = {e.utt_id for e in entries if e.key == "bonafide"}
    return [ProtocolEntry(v.speaker, v.name, v.vocoder, "spoof", str(p)) for v, p in vocv4_files(root, vocoders, keep)]


# ----------------------------------------------------------------------------- checking a tree


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree: which utterance (None for a whole split), which path, and what is wrong."""

    utt_id: str | None
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def format_problems(problems: Sequence[Problem], limit: int = 50) -> str:
    """All problems, one per line (the first `limit`, then a count of the rest)."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (python data.py --data-root ROOT --check lists all)")
    return "\n".join(lines)


def find_missing(layout: LALayout, split: str, entries: Sequence[ProtocolEntry]) -> list[Problem]:
    """Protocol lines whose audio is absent or empty, found from one directory listing (fast on 71k files).

    A split whose `flac/` folder is absent gives a single problem naming the folder rather than one per file.
    """
    audio_dir, protocol = layout.audio_dir(split), layout.protocol_path(split).name
    if not audio_dir.is_dir():
        what = f"missing folder: expected the {split} audio ({len(entries):,} .flac files listed in {protocol})"
        return [Problem(None, str(audio_dir), what)]
    sizes = {d.name: d.stat().st_size for d in os.scandir(audio_dir) if d.name.endswith(".flac")}
    problems = []
    for e in entries:
        if e.path:  # a vocoded copy in the cache
            if not Path(e.path).is_file() or Path(e.path).stat().st_size == 0:
                problems.append(
                    Problem(e.utt_id, e.path, "missing or empty vocoded copy (delete the cache to remake it)")
                )
            continue
        size = sizes.get(f"{e.utt_id}.flac")
        if size is None:
            problems.append(Problem(e.utt_id, str(audio_dir / f"{e.utt_id}.flac"), f"missing: listed in {protocol}"))
        elif size == 0:
            problems.append(Problem(e.utt_id, str(audio_dir / f"{e.utt_id}.flac"), "empty file (0 bytes)"))
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
    path: str | os.PathLike, deep: bool = False, sample_rate: int = SAMPLE_RATE, silence_peak: float = 1e-4
) -> tuple[float, list[str]]:
    """Check one audio file: header (rate, channels, length) and truncation; with `deep`, decode it all.

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
        if sr != sample_rate:
            problems.append(f"wrong sample rate: {sr} Hz, expected {sample_rate} Hz")
        if channels != 1:
            problems.append(f"{channels} channels, expected mono")
        if frames == 0:
            return 0.0, problems + ["empty: the header declares 0 samples"]
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


def _check_chunk(job: tuple[list[str], bool]) -> list[tuple[float, list[str]]]:
    """`check_audio_file` on a list of paths (one task of a --check worker process)."""
    paths, deep = job
    return [check_audio_file(p, deep) for p in paths]


def check_audio_files(
    layout: LALayout,
    split: str,
    entries: Sequence[ProtocolEntry],
    deep: bool = False,
    workers: int | None = None,
    label: str = "check",
    progress: bool = True,
) -> tuple[list[Problem], list[float]]:
    """`check_audio_file` on the audio of these entries, in worker processes, with a progress line.

    Processes, not threads: most of the ~0.3 ms a file costs is Python around libsndfile, so threads serialise on
    the GIL (16 threads on 2 cores checked LA's 121,461 files in 53 s; two processes take half that). Chunks of
    CHECK_CHUNK files keep memory flat in the number of files. Fewer than 2,048 files are checked in-process.

    Returns:
        (every problem found, each file's duration in seconds from its header), in the order of `entries`.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = [str(layout.entry_path(split, e)) for e in entries]
    bar = Progress(len(paths), label) if progress and len(paths) > 1000 else None
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(paths[k : k + CHECK_CHUNK], deep) for k in range(0, len(paths), CHECK_CHUNK)]
    problems, durations = [], []
    pool = None
    if workers > 1 and len(paths) >= 2048:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: no re-import
        pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        results = pool.map(_check_chunk, jobs) if pool else map(_check_chunk, jobs)
        for (chunk, _), found_chunk in zip(jobs, results):
            for path, (duration, found) in zip(chunk, found_chunk):
                durations.append(duration)
                problems += [Problem(Path(path).stem, path, what) for what in found]
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
    found, durations = check_audio_files(layout, split, todo, deep, workers, f"check {split}", progress)
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


def format_check_report(report: dict, limit: int = 50) -> str:
    """The human-readable form of `check_dataset`'s report: one block per split, then the problems."""
    how = "every file decoded: --deep" if report["deep"] else "headers and file ends read; --deep decodes all"
    lines = [f"ASVspoof 2019 LA at {report['root']} ({how})"]
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
            lines.append(f"{split}: note: {s['unlisted']:,} .flac file(s) on disk are in no protocol line (ignored)")
    lines.append(f"{report['problems']:,} problem(s)" if report["problems"] else "no problems found")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- Dataset


class ASVspoof2019LA(Dataset):
    """One split of ASVspoof 2019 LA.

    Item i -> (x, label, utt_id, system, speaker), where x is the front-end's (1, F, T) features or, with
    `frontend=None`, the fixed-length (num_samples,) waveform so that features are computed on the GPU per batch.

    A tree with problems fails at construction with one error listing all of them (missing and empty files always;
    unreadable, truncated or wrong-format files too with `verify`, undecodable ones with `cache`), or, with
    `skip_bad`, loses those items and says how many on stderr (`self.skipped` paths, `self.problems`).

    Args:
        data_root: anything `find_la_root` accepts, or an `LALayout`.
        split: "train", "dev" or "eval".
        num_samples: fixed waveform length (`frontend.num_samples(num_frames)`).
        frontend: module applied per item, or None to return waveforms.
        pad: "repeat" (STC, NII) or "zeros" (seed recipe) for short files.
        random_crop: a random window of long files (training) instead of the start (evaluation).
        augment: the seed recipe's augmentation; training only (ValueError for dev and eval).
        cache: decode every file once at construction and keep it as int16 in memory (LA train: ~2.7 GB).
        skip_bad: drop items with problems found at construction (counted) instead of raising. An unusable file met
            later (undecodable, truncated, NaN/inf samples) is a `BadAudio` item either way; `count_bad` applies
            the policy in the loops.
        entries: use these protocol entries instead of the split's protocol (e.g. a subset).
        verify: header-check every file at construction (`check_audio_file`, ~0.4 ms per file).
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
        if pad not in ("repeat", "zeros"):
            raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
        self.layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
        self.split, self.num_samples, self.frontend = split, num_samples, frontend
        self.pad, self.random_crop, self.augment, self.skip_bad = pad, random_crop, augment, skip_bad
        entries = list(entries) if entries is not None else self.layout.protocol(split)
        problems, pcm_of = self._find_problems(entries, verify, cache)
        self.entries, self.problems, self.skipped = entries, [], []
        self._drop(problems, len(entries))
        self.cached: list[np.ndarray] | None = [pcm_of[e.utt_id] for e in self.entries] if cache else None

    def _find_problems(
        self, entries: list[ProtocolEntry], verify: bool, cache: bool
    ) -> tuple[list[Problem], dict[str, np.ndarray]]:
        """Every problem of the split at once: missing/empty files, then header checks and/or decoding."""
        problems, todo = find_present(self.layout, self.split, entries)
        if verify:
            problems += check_audio_files(self.layout, self.split, todo, label=f"verify {self.split}")[0]
        pcm_of = {}
        if cache:
            pcms, failed = decode_all([self.layout.entry_path(self.split, e) for e in todo], skip_bad=True)
            pcm_of = {e.utt_id: pcm for e, pcm in zip(todo, pcms) if pcm is not None}
            problems += failed
        return problems, pcm_of

    def _drop(self, problems: list[Problem], total: int) -> None:
        """Raise listing every problem, or (skip_bad) drop the items concerned and report the count on stderr."""
        if not problems:
            return
        protocol = self.layout.protocol_path(self.split).name
        if not self.skip_bad:
            missing_only = all(p.problem.startswith(("missing", "empty file")) for p in problems)
            raise (FileNotFoundError if missing_only else RuntimeError)(
                f"{len(problems):,} problem(s) in the {total:,} {self.split} files listed in {protocol}, first: "
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
        print(f"{self.split}: skipped {len(bad):,} of {total:,} files with problems (--skip-bad), "
              f"first: {problems[0]}", file=sys.stderr)  # fmt: skip

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, i: int) -> Path:
        return self.layout.entry_path(self.split, self.entries[i])

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
        except (RuntimeError, ValueError, FileNotFoundError) as err:
            return BadAudio.of(e.utt_id, self.path(i), err)
        wave = fix_length(wave, self.num_samples, self.pad, self.random_crop)
        if self.augment:
            wave = augment_waveform(wave)
        x = wave if self.frontend is None else self.frontend(wave.unsqueeze(0))[0]  # (N,) or (1, F, T)
        return x, e.label, e.utt_id, e.system, e.speaker


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
        except (RuntimeError, ValueError, FileNotFoundError) as e:
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


def find_utterance(layout: LALayout, utt_id: str) -> tuple[str, ProtocolEntry]:
    """The split and protocol entry of `utt_id`, searching every CM protocol present (its own split first).

    Raises:
        ValueError: the utt id is in no protocol (the message names the protocols searched).
    """
    guess = {"LA_T": "train", "LA_D": "dev", "LA_E": "eval"}.get(utt_id[:4])
    searched = []
    for split in sorted(SPLITS, key=lambda s: s != guess):
        path = layout.protocol_path(split)
        if path.is_file():
            searched.append(path.name)
            for e in read_cm_protocol(path):
                if e.utt_id == utt_id:
                    return split, e
    raise ValueError(
        f"utt id {utt_id!r} is in no CM protocol under {layout.root / PROTOCOL_DIR} "
        f"(searched: {', '.join(searched) or 'none found'}); expected an id such as LA_T_4179989"
    )


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


# ----------------------------------------------------------------------------- --download

DATASHARE_PAGE = "https://datashare.ed.ac.uk/handle/10283/3336"  # DOI 10.7488/ds/2555
DATASHARE_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3336/LA.zip?sequence=3&isAllowed=y"  # ~7.6 GB
KAGGLE_DATASET = "awsaf49/asvpoof-2019-dataset"  # LA and PA, with the LA/LA/ nesting; needs a Kaggle API token
# Voc.v4 of Wang & Yamagishi, "Spoofed training data for speech spoofing countermeasure can be efficiently created
# using neural vocoders", ICASSP 2023 (arXiv:2210.10570): vocoded spoofs of LA train/dev bona fide.
VOCV4_PAGE = "https://zenodo.org/records/7314976"
VOCV4_URL = "https://zenodo.org/record/7314976/files/project09-voc.v4.tar"
ARCHIVES = {"datashare": "LA.zip", "vocv4": "project09-voc.v4.tar"}


def hand_download_message(source: str, to: str | os.PathLike) -> str:
    """What to do by hand when a download cannot run: where to get the files and where to put them."""
    if source == "kaggle":
        return (f"download https://www.kaggle.com/datasets/{KAGGLE_DATASET} by hand, unzip it into {to} (it holds "
                f"LA/LA/ASVspoof2019_LA_cm_protocols), then run: python data.py --data-root {to} --check")  # fmt: skip
    if source == "vocv4":
        return (f"download project09-voc.v4.tar by hand from {VOCV4_PAGE}, put it at {Path(to) / ARCHIVES['vocv4']} "
                f"and run this command again (it extracts and checks), or extract it yourself (tar -xf) into {to}; "
                "then give explain.py --vocv4-root DIR, the voc.v4/ folder holding wav/ and protocol.txt")  # fmt: skip
    return (f"download LA.zip (~7.6 GB) by hand from {DATASHARE_PAGE}, put it at {Path(to) / ARCHIVES['datashare']} "
            f"and run this command again (it extracts and checks), or unzip it yourself into {to} so that "
            f"{Path(to) / 'LA' / PROTOCOL_DIR} exists; then: python data.py --data-root {to} --check")  # fmt: skip


def check_reachable(url: str, timeout: float, hand: str) -> None:
    """Fail within `timeout` seconds when the URL's host does not resolve (urllib's timeout misses DNS)."""
    host, result = urllib.parse.urlsplit(url).hostname or "", {}

    def resolve() -> None:
        try:
            result["addr"] = socket.getaddrinfo(host, None)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    if "addr" not in result:
        why = result.get("error", f"no DNS answer in {timeout:.0f} s")
        raise ConnectionError(f"cannot reach {host} ({why}); offline? {hand}")


def parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-999/1000` -> (100, 1000); `bytes */1000` -> (None, 1000); anything else -> (None, None)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.split("-")[0]
    return (int(start) if start.isdigit() else None), (int(total) if total.isdigit() else None)


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f"{what} needs {needed / 1e9:.2f} GB in {folder}, only {free / 1e9:.2f} GB free: free some space "
                      "or choose another --to")  # fmt: skip


def download(url: str, dest: str | os.PathLike, timeout: float = 10.0, hand: str = "", progress: bool = True) -> Path:
    """Download `url` to `dest` with the standard library, resuming a partial `dest.part` by an HTTP Range request.

    The file appears at `dest` only when complete (renamed from `.part`); an existing `dest` is taken as done.
    A server that ignores Range (status 200) restarts the file from zero. Progress: a line with rate and ETA.

    Args:
        timeout: seconds for DNS, connect and each read, so that an offline machine fails fast.
        hand: how to download by hand, appended to network errors.

    Raises:
        ConnectionError: host unreachable, HTTP error, or the transfer stopped (the `.part` is kept: rerun).
        OSError: not enough disk space for what is left to download.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    check_reachable(url, timeout, hand)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "antispoof-data.py/1.0", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and parse_content_range(e.headers.get("Content-Range"))[1] == offset:
            os.replace(part, dest)  # the .part was already whole
            return dest
        raise ConnectionError(f"cannot download {url}: HTTP {e.code} {e.reason}; {hand}") from e
    except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
        raise ConnectionError(f"cannot download {url} ({getattr(e, 'reason', e)}); offline? {hand}") from e
    with response:
        if response.headers.get("Content-Type", "").startswith("text/html"):  # a login or terms page
            raise ConnectionError(f"{url} answered with a web page, not the archive; {hand}")
        start, total = parse_content_range(response.headers.get("Content-Range"))
        if response.status != 206 or start != offset:  # the server ignored Range: start again
            offset, total = 0, int(response.headers.get("Content-Length") or 0) or None
        if total:
            ensure_free_space(dest.parent, total - offset, f"downloading {dest.name}")
        copy_response(response, part, offset, total, progress)
    size = part.stat().st_size
    if total and size != total:
        raise ConnectionError(f"download of {url} stopped at {size:,} of {total:,} bytes; run the same command "
                              f"again to resume from {part}")  # fmt: skip
    os.replace(part, dest)
    return dest


def copy_response(response, part: Path, offset: int, total: int | None, progress: bool = True) -> None:
    """Append (offset > 0) or write the response body to `part`, 1 MB at a time, with a progress line."""
    resumed = f", resumed at {offset / 1e6:,.1f} MB" if offset else ""
    bar = Progress((total or 0) - offset, part.name.removesuffix(".part"), unit="MB", scale=1e6) if progress else None
    try:
        with open(part, "ab" if offset else "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                if bar:
                    bar.update(len(chunk), resumed)
    except OSError as e:  # includes socket timeouts and resets
        raise ConnectionError(f"download interrupted at {part.stat().st_size:,} bytes ({e}); run the same command "
                              f"again to resume from {part}") from e  # fmt: skip
    finally:
        if bar:
            bar.close()


def extract_archive(archive: str | os.PathLike, to: str | os.PathLike, progress: bool = True) -> list[Path]:
    """Extract a zip or tar into a temporary folder beside the target, then rename its top-level entries into `to`.

    Nothing appears in `to` until the whole archive is extracted. Member paths are sanitised (zipfile's rules,
    tarfile's "data" filter), so an archive cannot write outside the folder.

    Returns:
        The top-level paths now in `to`.

    Raises:
        ValueError: not a zip or tar, or a damaged one. FileExistsError: a top-level entry exists in `to`.
    """
    archive, to = Path(archive), Path(to)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extracting-", dir=to))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                members = [(m, m.file_size) for m in z.infolist()]
                extract_members(members, lambda m: z.extract(m, tmp), archive, tmp, progress)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = [(m, m.size) for m in t.getmembers()]
                extract_members(members, lambda m: t.extract(m, tmp, filter="data"), archive, tmp, progress)
        else:
            raise ValueError(f"{archive}: not a zip or tar archive ({archive.stat().st_size:,} bytes); delete it "
                             "and download it again")  # fmt: skip
        tops = sorted(tmp.iterdir())
        clash = [to / p.name for p in tops if (to / p.name).exists()]
        if clash:
            raise FileExistsError(f"{clash[0]} already exists: move it away (or choose another --to) and run again")
        for p in tops:
            os.replace(p, to / p.name)
        return [to / p.name for p in tops]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise ValueError(f"{archive}: damaged archive ({e}); delete it and download it again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extract_members(members: list, extract: Callable, archive: Path, tmp: Path, progress: bool) -> None:
    total = sum(size for _, size in members)
    ensure_free_space(tmp, total, f"extracting {archive.name}")
    bar = Progress(total, f"extract {archive.name}", unit="MB", scale=1e6) if progress else None
    for member, size in members:
        extract(member)
        if bar:
            bar.update(size)
    if bar:
        bar.close()


def fetch_with_kaggle(to: Path, dataset: str = KAGGLE_DATASET) -> Path:
    """Run the user's own `kaggle` tool to fetch the dataset's zip into `to/.kaggle-download/`.

    Raises:
        FileNotFoundError: `kaggle` is not installed (the message says how to install it and set up a token).
        RuntimeError: the tool failed.
    """
    exe = shutil.which("kaggle")
    if exe is None:
        raise FileNotFoundError(
            "--source kaggle needs the `kaggle` command-line tool, which is not on PATH: install it with "
            "`pip install kaggle`, create an API token at https://www.kaggle.com/settings (API > Create New Token) "
            "and save it as ~/.kaggle/kaggle.json (chmod 600); or use --source datashare (no account needed)"
        )
    folder = to / ".kaggle-download"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "datasets", "download", "-d", dataset, "-p", str(folder)]
    print("running: " + " ".join(cmd), file=sys.stderr)
    code = subprocess.run(cmd).returncode
    zips = sorted(folder.glob("*.zip"))
    if code != 0 or not zips:
        what = f"exit status {code}" + ("" if zips else ", no .zip written")
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({what}): check ~/.kaggle/kaggle.json and the network; "
                           f"or {hand_download_message('kaggle', to)}")  # fmt: skip
    return zips[0]


def download_la(
    to: str | os.PathLike,
    source: str = "datashare",
    url: str | None = None,
    keep_archive: bool = False,
    timeout: float = 10.0,
) -> Path:
    """Fetch ASVspoof 2019 LA into `to` and return `to` (pass it as --data-root). Idempotent: `to/.completed-LA`.

    Args:
        source: "datashare" (the official LA.zip, standard library, resumable) or "kaggle" (the user's `kaggle`).
        url: another URL for LA.zip (a mirror).
        keep_archive: keep the archive after a complete extraction (it is deleted by default).
    """
    if source not in ("datashare", "kaggle"):
        raise ValueError(f"--source must be datashare or kaggle for LA, got {source!r}")
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    marker = to / ".completed-LA"
    if marker.is_file():
        print(f"{to}: already downloaded ({marker.name} present)", file=sys.stderr)
        return to
    if source == "kaggle":
        archive = fetch_with_kaggle(to)
    else:
        archive = download(url or DATASHARE_URL, to / ARCHIVES["datashare"], timeout, hand_download_message(source, to))
    extract_archive(archive, to)
    layout = find_la_root(to)  # raises when the archive held no LA tree
    marker.write_text(json.dumps({"source": source, "url": url, "la_root": str(layout.root), "at": time.ctime()}))
    if not keep_archive:
        archive.unlink()
        if source == "kaggle":
            shutil.rmtree(archive.parent, ignore_errors=True)
    return to


def find_vocv4_root(path: str | os.PathLike) -> Path:
    """The `voc.v4/` folder (holding `wav/` and `protocol.txt`) at, under or two levels under `path`.

    Raises:
        FileNotFoundError: listing the places looked in.
    """
    base = Path(path).expanduser()
    candidates = [base, base / "voc.v4", base / "project09-voc.v4" / "voc.v4", *sorted(base.glob("*/voc.v4"))]
    for c in candidates:
        if (c / "protocol.txt").is_file() and (c / "wav").is_dir():
            return c
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise FileNotFoundError(f"no voc.v4 folder with wav/ and protocol.txt at {base} (looked in {looked}); "
                            f"{hand_download_message('vocv4', base)}")  # fmt: skip


def download_vocv4(
    to: str | os.PathLike, url: str | None = None, keep_archive: bool = False, timeout: float = 10.0
) -> Path:
    """Fetch project09-voc.v4 (Zenodo record 7314976) into `to`; returns the `voc.v4/` folder. Idempotent."""
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    marker = to / ".completed-vocv4"
    if marker.is_file():
        print(f"{to}: already downloaded ({marker.name} present)", file=sys.stderr)
        return find_vocv4_root(to)
    archive = download(url or VOCV4_URL, to / ARCHIVES["vocv4"], timeout, hand_download_message("vocv4", to))
    extract_archive(archive, to)
    root = find_vocv4_root(to)
    marker.write_text(json.dumps({"source": "vocv4", "url": url or VOCV4_URL, "root": str(root), "at": time.ctime()}))
    if not keep_archive:
        archive.unlink()
    return root


def summarize_vocv4(root: Path) -> str:
    """One line: how many protocol lines and wav files a voc.v4 folder holds."""
    lines = [ln for ln in (root / "protocol.txt").read_text().splitlines() if ln.strip()]
    wavs = sum(1 for _ in (root / "wav").glob("*.wav"))
    return f"voc.v4 at {root}: {len(lines):,} protocol lines, {wavs:,} wav files; explain.py --vocv4-root {root}"


# ----------------------------------------------------------------------------- progress and shared CLI


def check_output_path(path: str | os.PathLike, flag: str, folder: bool = False) -> Path:
    """Make sure an output can be written before any work is done; returns the path.

    Creates the parent folder (or the folder itself with `folder`) and writes and removes a probe file there.

    Raises:
        ValueError: a file path that is a folder, or a folder path that is a file. OSError: one line naming the flag
            and the path when the folder cannot be created or written.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected a file path (e.g. {path / 'scores.txt'})")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; expected a folder")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".write-probe.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"{flag} {path}: cannot write in {where} ({e.strerror or e}); choose another {flag}") from None
    return path


class Progress:
    """A one-line progress report with rate and ETA, rewritten in place on a terminal (stderr).

    Args:
        total: units expected (0 when unknown: no percentage or ETA).
        unit, scale: counts are shown divided by `scale` in `unit` (bytes with unit="MB", scale=1e6).
        every: seconds between lines (on a terminal the line is rewritten, elsewhere a new line is printed).
    """

    def __init__(
        self, total: int, label: str, unit: str = "files", stream=None, every: float = 1.0, scale: float = 1.0
    ):
        self.total, self.label, self.unit, self.scale, self.done = total, label, unit, scale, 0
        self.stream = stream or sys.stderr
        self.every, self.start = every, time.monotonic()
        self.last, self.finished = -1e9, False
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total else float("inf")
        eta_s = "?" if eta == float("inf") else format_seconds(eta)
        if self.scale == 1:
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        else:
            count = (
                f"{self.done / self.scale:,.1f}/{self.total / self.scale:,.1f}"
                if self.total
                else f"{self.done / self.scale:,.1f}"
            )
        pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        return (
            f"{self.label}: {count} {self.unit}{pct} {rate / self.scale:,.1f} {self.unit}/s "
            f"elapsed {format_seconds(elapsed)} ETA {eta_s}{extra}"
        )

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        done_now = bool(self.total) and self.done >= self.total and not self.finished
        if now - self.last >= self.every or done_now:
            self.last, self.finished = now, self.finished or done_now
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
    g.add_argument(
        "--data-root",
        default=os.environ.get("ASVSPOOF_ROOT"),
        help="ASVspoof 2019 LA folder, its parent, or the Kaggle copy (default: $ASVSPOOF_ROOT)",
    )
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--batch-size", type=int, default=64, help="items per batch (per process under torchrun)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes (default: 0 on the CPU, min(16, cores) with a GPU: "
                        "data.default_num_workers)")  # fmt: skip
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument(
        "--frontend",
        choices=sorted(FRONTENDS),
        default="stft",
        help="stft: STC log-power STFT (863 bins); mel: seed recipe 20-band log-mel",
    )
    g.add_argument("--num-frames", type=int, default=600, help="fixed number of feature frames per item")
    g.add_argument("--pad", choices=("repeat", "zeros"), default="repeat", help="how short files are padded")
    g.add_argument("--skip-bad", action="store_true", help="skip missing/unreadable audio (counted) instead of failing")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of every script that runs the model (train, evaluate, explain, bench); rules in model.py."""
    g = parser.add_argument_group("model execution")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: measured on this machine, bf16 only where native (tune.choose_settings; cached)")  # fmt: skip
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: measured, tune.choose_settings)")  # fmt: skip
    return parser


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    return device


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `except BaseException` / `finally` runs (evaluate.py keeps
    its `.partial`, atomic writes remove their temporaries), as Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def default_num_workers(flag: int | None, device: torch.device) -> int:
    """The --num-workers rule: the flag when given; else 0 when the model runs on the CPU, where a worker process
    competes with the model's OpenMP threads for the same cores (the tiny recipe on 2 cores: 90 training files/s
    in-process, 14 with 2 workers, whose decoding the threads' spin-waiting starves); with an accelerator,
    min(16, cores), enough to decode ~5,000 LA files/s.

    Raises:
        ValueError: a negative flag.
    """
    if flag is not None:
        if flag < 0:
            raise ValueError(f"--num-workers must be 0 or more, got {flag}")
        return flag
    return 0 if torch.device(device).type == "cpu" else min(16, os.cpu_count() or 1)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main(); a user error ends as one line on stderr and exit status 1 (--debug: traceback).

    Ctrl-C exits 130, SIGTERM 143, both after the script's own clean-up ran.
    """
    import signal

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    except (FileNotFoundError, ValueError, RuntimeError, OSError, MemoryError) as e:
        if debug:
            traceback.print_exc()
        text = str(e) or type(e).__name__
        if isinstance(e, MemoryError) or "allocate" in text and "memory" in text.lower():  # torch's CPU/CUDA OOM
            first = text.strip().splitlines()[0][:160]
            text = (f"out of memory ({first}); expected sizes this machine can hold: lower --batch-size or "
                    "--num-frames (or check the checkpoint's sizes)")  # fmt: skip
        print(f"error: {text}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


# ----------------------------------------------------------------------------- main

EXAMPLES = """examples:
  python data.py --data-root ../shared/data/asvspoof2019_la_mini/LA --check
  python data.py --data-root /data/LA --check --split train --deep --json
  python data.py --data-root /data/LA --show LA_T_4179989 --out demo/LA_T_4179989.png [--frontend mel]
  python data.py --download --to /data/asvspoof2019 [--source datashare|kaggle]
  python data.py --download --to /data/vocv4 --source vocv4"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Check, show or download ASVspoof 2019 LA (and the voc.v4 vocoded set).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser)
    g = parser.add_argument_group("data.py")
    action = g.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="count and check every split; exit 1 on any problem")
    action.add_argument("--show", metavar="UTT_ID", help="draw one item (waveform and features) into --out")
    action.add_argument("--download", action="store_true", help="download, extract and check into --to")
    g.add_argument("--split", choices=SPLITS, help="--check: only this split (default: all three)")
    g.add_argument("--json", action="store_true", help="--check: print one JSON object instead of the table")
    g.add_argument("--deep", action="store_true", help="--check: decode every file instead of headers and file ends")
    g.add_argument("--out", metavar="FILE.png", help="--show: the picture to write")
    g.add_argument("--to", metavar="DIR", help="--download: folder to download and extract into")
    g.add_argument("--source", choices=("datashare", "kaggle", "vocv4"), default="datashare",
                   help="--download: official LA.zip, the Kaggle copy (your `kaggle` tool) or voc.v4")  # fmt: skip
    g.add_argument("--url", help="--download: another URL for the archive (a mirror)")
    g.add_argument("--keep-archive", action="store_true", help="--download: keep the archive after extraction")
    g.add_argument("--timeout", type=float, default=10.0, help="--download: network timeout in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    belongs = {"--split": "check", "--json": "check", "--deep": "check", "--out": "show", "--to": "download",
               "--url": "download", "--keep-archive": "download"}  # fmt: skip
    for flag, action in belongs.items():
        if getattr(args, flag[2:].replace("-", "_")) not in (None, False) and not getattr(args, action):
            raise ValueError(f"{flag} goes with --{action}")
    if args.check:
        report = check_dataset(args.data_root, [args.split] if args.split else SPLITS, args.deep, args.num_workers)
        print(json.dumps(report, indent=2) if args.json else format_check_report(report))
        return 1 if report["problems"] else 0
    if args.show:
        if not args.out or not args.out.lower().endswith(".png"):
            raise ValueError(f"--show needs --out FILE.png (a PNG picture), got {args.out!r}")
        print(f"wrote {plot_item(args.data_root, args.show, args.out, args.frontend, args.num_frames, args.pad)}")
        return 0
    if not args.to:
        raise ValueError("--download needs --to DIR, the folder to download and extract into")
    if args.source == "vocv4":
        print(summarize_vocv4(download_vocv4(args.to, args.url, args.keep_archive, args.timeout)))
        return 0
    report = check_dataset(download_la(args.to, args.source, args.url, args.keep_archive, args.timeout))
    print(format_check_report(report))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    run_cli(main)
