"""vocoders.py -- copy-synthesised spoofs: the local vocoders and the cache of vocoded training copies.

Inside:
  * the local vocoders on one analysis grid: `vocode_griffinlim`, `vocode_melgl` (torchaudio only), `vocode_world`
    (pyworld) and `vocode_mlsa` (pysptk), the optional two behind `optional_package`; `VOCODERS`, `vocode`;
  * vocoded training data: `prepare_vocoded` (copies made once into cache/vocoded/<vocoder>/ by worker processes),
    `vocv4_training_entries` (vocv4's copies as spoof entries).

The vocv4 set itself is read in corpora.py; explain.py pairs these copies with their originals.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cli import Progress
from corpora import LALayout, ProtocolEntry, vocv4_files
from data import AUDIO_ERRORS, SAMPLE_RATE, load_audio

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


# ----------------------------------------------------------------------------- vocoded training data

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
    except AUDIO_ERRORS as e:
        return f"{src}: {name}: {e}"
    return None


def _init_worker() -> None:
    """A vocoding worker: one thread (a forked child must not use the parent's OpenMP pool, it hangs, and the
    workers share the cores), and on Linux it dies with its parent (PR_SET_PDEATHSIG), so a kill -9 of train.py
    leaves no ~400 MB orphans behind."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass  # no glibc (musl): orphans stay possible, nothing else changes
        if os.getppid() == 1:  # the parent died before prctl ran
            os._exit(1)


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
            raise ValueError(f"--vocode: unknown vocoder {name!r}; expected some of {', '.join(VOCODERS)}")
        if name in ("world", "mlsa"):
            optional_package({"world": "pyworld", "mlsa": "pysptk"}[name], f"--vocode {name}")
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
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
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
