"""explain.py -- where does the LCNN look? Ground-truth masks from real/vocoded pairs vs Grad-CAM and InputXGradient.

    python explain.py --utt LA_T_4179989                                  # local vocoders, newest runs/*/best.pt
    python explain.py --utt LA_T_4179989 --ckpt runs/xai/best.pt --vocode griffinlim melgl --out explain_out/x
    python explain.py --utt LA_T_4179989 --vocv4-root DIR/voc.v4 --vocoders hifigan waveglow
    python explain.py --real real.flac --fake vocoded.flac [other_vocoded.flac ...]

One *pair* is a bona fide waveform and a vocoded copy of the same utterance. For each pair:
  1. the fake side comes from vocv4 (project09-voc.v4, Zenodo 7314976, arXiv:2210.10570) or from a local
     torch-only vocoder (`--vocode`); the two are aligned by cross-correlation and trimmed to equal length;
  2. both are cropped/padded to the checkpoint's input (`num_frames`, `pad`) and go through its front-end:
     the model input x is (1, 1, F, T), e.g. (1, 1, 863, 600) for the STC STFT;
  3. the ground-truth mask (Eq. 2 of arXiv:2506.03425) is computed from the front-end's magnitude on that same
     (F, T) grid, so mask and attributions compare pixel for pixel;
  4. Grad-CAM (Selvaraju et al., ICCV 2017) and InputXGradient (Shrikumar et al., 2016), both written here by
     hand, for the spoof class and for the predicted class;
  5. agreement with the mask: IoU, precision, recall, relevance mass and rank accuracy (Arras et al., "CLEVR-XAI",
     Information Fusion 2022), the same numbers for random maps (the floor), and the model-parameter
     randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).
Outputs in --out: pair_<name>.png, maps_<name>.png, sanity_<name>.png, metrics.json, and a printed table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import data
import model as model_lib

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- local vocoders (torch/torchaudio only)

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
    sample_rate: int = data.SAMPLE_RATE,
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


def vocode_world(wave: torch.Tensor, sample_rate: int = data.SAMPLE_RATE) -> torch.Tensor:
    """WORLD analysis/synthesis (F0, spectral envelope, aperiodicity); needs the optional `pyworld` package."""
    try:
        import pyworld
    except ImportError as e:
        raise RuntimeError("--vocode world needs the optional pyworld package (pip install pyworld)") from e
    x = wave.double().numpy()
    f0, sp, ap = pyworld.wav2world(x, sample_rate)
    y = torch.from_numpy(pyworld.synthesize(f0, sp, ap, sample_rate)).float()
    return F.pad(y, (0, max(0, wave.numel() - y.numel())))[: wave.numel()]


VOCODERS = {"griffinlim": vocode_griffinlim, "melgl": vocode_melgl, "world": vocode_world}


def vocode(wave: torch.Tensor, name: str) -> torch.Tensor:
    """Run the local vocoder `name` (a key of VOCODERS) on a (N,) waveform; returns (N,)."""
    if name not in VOCODERS:
        raise ValueError(f"--vocode: unknown vocoder {name!r}; expected some of {', '.join(VOCODERS)}")
    return VOCODERS[name](wave)


# ----------------------------------------------------------------------------- vocv4 (project09-voc.v4)


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocv4 protocol not found: {path}")
    entries = []
    for number, line in data.text_lines(path, "vocv4 protocol"):
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


def find_vocv4_files(root: str | os.PathLike, utt_id: str, vocoders: list[str]) -> dict[str, Path]:
    """Paths of `utt_id`'s vocoded copies in an extracted vocv4 folder, one per vocoder, via its protocol.

    Args:
        root: the `voc.v4` folder (holding protocol.txt and wav/), or a folder above it that
            `data.find_vocv4_root` accepts (where `python data.py --download --source vocv4` extracted it).
    Returns:
        {vocoder: path of voc.v4/wav/<vocoder>_<utt_id>.wav}, in the order of `vocoders`.
    Raises:
        FileNotFoundError: no voc.v4 folder, or a listed wav missing. ValueError: utterance/vocoder not listed.
    """
    folder = data.find_vocv4_root(root)
    entries = {(e.utt_id, e.vocoder): e for e in read_vocv4_protocol(folder / "protocol.txt")}
    found = {}
    for vocoder in vocoders:
        e = entries.get((utt_id, vocoder))
        if e is None:
            have = sorted({v for (u, v) in entries if u == utt_id})
            raise ValueError(f"{folder / 'protocol.txt'} lists no {vocoder} copy of {utt_id} "
                             f"(vocoders listed for it: {', '.join(have) or 'none'})")  # fmt: skip
        path = folder / "wav" / f"{e.name}.wav"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {folder / 'protocol.txt'} but missing")
        found[vocoder] = path
    return found


# ----------------------------------------------------------------------------- alignment


ALIGN_METHODS = ("envelope", "waveform")


def rms_envelope(wave: torch.Tensor, window: int = 160) -> torch.Tensor:
    """(N,) -> (N,) zero-mean RMS envelope over a centred `window` (160 samples = 10 ms at 16 kHz)."""
    power = F.avg_pool1d(wave.double()[None, None] ** 2, window, 1, padding=window // 2, count_include_pad=False)
    env = power[0, 0, : wave.numel()].sqrt()
    return env - env.mean()


def cross_correlation_lag(real: torch.Tensor, fake: torch.Tensor, max_lag: int) -> int:
    """Lag k maximising sum_n fake[n + k] real[n] over |k| <= max_lag, by FFT. (N1,), (N2,) -> int."""
    n = real.numel() + fake.numel() - 1
    nfft = 1 << (n - 1).bit_length()  # zero padding to >= N1 + N2 - 1 makes the circular correlation linear
    spec = torch.fft.rfft(fake.double(), nfft) * torch.fft.rfft(real.double(), nfft).conj()
    xcorr = torch.fft.irfft(spec, nfft)  # xcorr[k mod nfft] = sum_n fake[n + k] real[n]
    max_lag = min(max_lag, real.numel() - 1, fake.numel() - 1)
    lags = torch.arange(-max_lag, max_lag + 1)
    return int(lags[xcorr[lags % nfft].argmax()])


def estimate_lag(real: torch.Tensor, fake: torch.Tensor, max_lag: int, method: str = "envelope") -> int:
    """Offset of the fake relative to the real, in samples (positive: the fake is late).

    "envelope" cross-correlates 10 ms RMS envelopes: a vocoder re-synthesises the phase, so the waveforms of
    a pair need not correlate at the true lag (Griffin-Lim copies of LA_T_4179989, exactly aligned by
    construction, peak at 31 and 51 samples in the waveform correlation, within 9 samples of 0 in the envelope
    one). "waveform" cross-correlates the samples themselves (exact for copies that keep the phase).

    Args:
        real, fake: (N1,) and (N2,) waveforms. max_lag: largest |lag| searched.
    """
    if method == "waveform":
        return cross_correlation_lag(real, fake, max_lag)
    if method == "envelope":
        return cross_correlation_lag(rms_envelope(real), rms_envelope(fake), max_lag)
    raise ValueError(f"--align must be one of {', '.join(ALIGN_METHODS)}, got {method!r}")


def align_pair(
    real: torch.Tensor, fake: torch.Tensor, max_lag: int, method: str = "envelope"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Shift the fake onto the real (the real is the time reference) and trim the longer one at the end.

    Returns:
        (real, fake) of equal length, and the lag that was corrected (see `estimate_lag`).
    """
    lag = estimate_lag(real, fake, max_lag, method)
    fake = fake[lag:] if lag > 0 else F.pad(fake, (-lag, 0))
    n = min(real.numel(), fake.numel())
    return real[:n], fake[:n], lag


# ----------------------------------------------------------------------------- ground-truth mask (arXiv:2506.03425)

# Eq. 2 of arXiv:2506.03425: mask = top (1 - q) of |G(M_fake) - G(M_real)| / (G(M_real) + eps). The smoothing G
# follows a published reproduction of the paper (`make_masks_min_asv19orig.py`): separable Gaussian, 3 frames x
# 11 bins, variances 3 (time) and 5 (frequency), kernels truncated at those sizes and normalised, edges mirrored
# (scipy.ndimage 'reflect'), threshold at the 0.95 quantile, eps 1e-8 on linear magnitudes.
MASK_DEFAULTS = {"time_size": 3, "freq_size": 11, "time_var": 3.0, "freq_var": 5.0, "quantile": 0.95, "eps": 1e-8}


def gaussian_kernel1d(size: int, variance: float) -> torch.Tensor:
    """(size,) Gaussian of the given variance, centred, truncated at `size` taps and normalised to sum 1."""
    if size < 1 or size % 2 == 0 or variance <= 0:
        raise ValueError(f"Gaussian kernel needs an odd size >= 1 and a variance > 0, got size {size}, "
                         f"variance {variance}")  # fmt: skip
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * variance))
    return k / k.sum()


def mirror_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Pad `r` samples on each side of `dim` with the edge-including mirror (d c b a | a b c d), scipy's 'reflect'."""
    if r == 0:
        return x
    n = x.shape[dim]
    if r > n:
        raise ValueError(f"cannot mirror-pad {r} samples onto an axis of {n}: the map is smaller than the kernel")
    return torch.cat([x.narrow(dim, 0, r).flip(dim), x, x.narrow(dim, n - r, r).flip(dim)], dim)


def smooth_gaussian(
    spec: torch.Tensor,
    time_size: int = MASK_DEFAULTS["time_size"],
    freq_size: int = MASK_DEFAULTS["freq_size"],
    time_var: float = MASK_DEFAULTS["time_var"],
    freq_var: float = MASK_DEFAULTS["freq_var"],
) -> torch.Tensor:
    """G of Eq. 2: separable Gaussian smoothing of a (F, T) map, time then frequency (conv2d, mirrored edges)."""
    x = spec.double()[None, None]  # (1, 1, F, T)
    kt = gaussian_kernel1d(time_size, time_var).view(1, 1, 1, -1)
    kf = gaussian_kernel1d(freq_size, freq_var).view(1, 1, -1, 1)
    x = F.conv2d(mirror_pad(x, time_size // 2, -1), kt)
    x = F.conv2d(mirror_pad(x, freq_size // 2, -2), kf)
    return x[0, 0].to(spec.dtype)


def relative_difference(
    mag_real: torch.Tensor, mag_fake: torch.Tensor, eps: float = MASK_DEFAULTS["eps"], **smooth
) -> torch.Tensor:
    """|G(M_fake) - G(M_real)| / (G(M_real) + eps) for (F, T) linear magnitude spectrograms."""
    if mag_real.shape != mag_fake.shape:
        raise ValueError(f"real and fake spectrograms differ in shape: {tuple(mag_real.shape)} vs "
                         f"{tuple(mag_fake.shape)}; align and trim the pair first")  # fmt: skip
    g_real, g_fake = smooth_gaussian(mag_real, **smooth), smooth_gaussian(mag_fake, **smooth)
    return (g_fake - g_real).abs() / (g_real + eps)


def binarise_top(values: torch.Tensor, quantile: float = 0.95) -> torch.Tensor:
    """Boolean map of exactly round((1 - quantile) * N) largest values (ties broken by position).

    The reproduction thresholds at np.quantile, which selects the same set when values are distinct; taking
    exactly k pixels keeps mask and maps the same size when a map has ties (ReLU zeros of Grad-CAM).
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    flat = values.flatten()
    k = max(1, round((1 - quantile) * flat.numel()))
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[torch.argsort(flat.cpu(), descending=True, stable=True)[:k]] = True
    return out.view(values.shape)


def ground_truth_mask(
    mag_real: torch.Tensor, mag_fake: torch.Tensor, quantile: float = MASK_DEFAULTS["quantile"],
    eps: float = MASK_DEFAULTS["eps"], **smooth,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Eq. 2 of arXiv:2506.03425 on (F, T) magnitudes: (relative difference (F, T), boolean mask (F, T))."""
    rel = relative_difference(mag_real, mag_fake, eps, **smooth)
    return rel, binarise_top(rel, quantile)


# ----------------------------------------------------------------------------- attributions, by hand


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """A submodule by its dotted name ("features.mfm27"); a bare LCNN row name ("mfm27") means features.<name>."""
    modules = dict(model.named_modules())
    for candidate in (name, f"features.{name}"):
        if candidate and candidate in modules:
            return modules[candidate]
    names = [n for n in modules if n.startswith("features.")]
    raise ValueError(f"--layer {name!r} is not a layer of the model; expected one of {', '.join(names)}")


def gradcam_lowres(
    model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module, bf16: bool = False
) -> tuple[torch.Tensor, ...]:
    """Grad-CAM at the layer's resolution, and the gradient of the target logit w.r.t. the input.

    A forward hook keeps the layer's activations A (C, h, w) and puts a tensor hook on them that keeps their
    gradient; channel weights w_k = mean over (h, w) of d logit_target / d A_k; cam = ReLU(sum_k w_k A_k).

    Args:
        model: in eval mode (BatchNorm statistics, no dropout).
        x: (1, 1, F, T) model input.
        bf16: under bf16 autocast (`--precision`); the activations and gradients are then bf16, cast to float32.
        target: class index (0 spoof, 1 bona fide); the raw logit is differentiated, as pytorch-grad-cam's
            ClassifierOutputTarget does.
    Returns:
        cam (h, w), input gradient (F, T), logits (2,).
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"attributions take one (1, 1, F, T) input, got {tuple(x.shape)}")
    saved = {}

    def keep(module, inputs, output):
        saved["act"] = output.detach()
        output.register_hook(lambda grad: saved.__setitem__("grad", grad.detach()))

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model_lib.classify(model, x, bf16)  # (1, 2), the scripts' one features -> logits step
            (grad_x,) = torch.autograd.grad(logits[0, target], x)  # also fires the tensor hook on the layer
    finally:
        handle.remove()
    act, grad = saved["act"][0].float(), saved["grad"][0].float()  # (C, h, w) each
    weights = grad.mean(dim=(1, 2))  # (C,)
    cam = F.relu((weights[:, None, None] * act).sum(0))  # (h, w)
    return cam, grad_x[0, 0].detach(), logits[0].detach()


def minmax_normalise(cam: torch.Tensor) -> torch.Tensor:
    """(cam - min) / (max - min + 1e-7): pytorch-grad-cam's per-image scaling."""
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (h, w) -> size (F, T), half-pixel centres: what cv2.resize(INTER_LINEAR) does."""
    return F.interpolate(cam[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def gradcam(model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module, normalise: bool = False) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017) upsampled to the input grid.

    Args:
        x: (1, 1, F, T) input.
        normalise: scale as pytorch-grad-cam returns it: min-max, resize, min-max again (its layer
            aggregation re-normalises the resized map). The agreement metrics below are invariant to it.
    Returns:
        (F, T) non-negative map.
    """
    cam, _, _ = gradcam_lowres(model, x, target, layer)
    if not normalise:
        return upsample(cam, tuple(x.shape[-2:]))
    return minmax_normalise(upsample(minmax_normalise(cam), tuple(x.shape[-2:])))


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: int, bf16: bool = False) -> torch.Tensor:
    """InputXGradient (Shrikumar et al., 2016): x * d logit_target / dx, signed. x (1, 1, F, T) -> (F, T)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model_lib.classify(model, x, bf16)[0, target], x)
    return (x * grad).detach()[0, 0]


def attribution_maps(
    model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module, bf16: bool = False
) -> dict[str, torch.Tensor]:
    """All maps for one target from one forward/backward pass: {"gradcam", "ixg", "ixg_abs"}, each (F, T).

    "ixg" is signed x * grad; "ixg_abs" its magnitude. On log-power features the sign of x * grad carries the
    arbitrary offset of the log (x < 0 for power below 1), so |x * grad| is the map shown and ranked; the
    signed one is kept to report its positive evidence too.
    """
    cam, grad_x, _ = gradcam_lowres(model, x, target, layer, bf16)
    ixg = x.detach()[0, 0] * grad_x
    return {"gradcam": upsample(cam, tuple(x.shape[-2:])), "ixg": ixg, "ixg_abs": ixg.abs()}


def randomised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every parameter re-initialised (Adebayo et al. 2018, full randomisation).

    Modules with `reset_parameters` use their own initialisation (BatchNorm statistics reset too); any other
    parameter (the A-softmax weight) gets Xavier-uniform, biases zeros. Uses its own generator state.
    """
    copy_ = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in copy_.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif any(True for _ in module.parameters(recurse=False)):
                for p in module.parameters(recurse=False):
                    nn.init.xavier_uniform_(p) if p.dim() >= 2 else nn.init.zeros_(p)
    return copy_.eval()


# ----------------------------------------------------------------------------- agreement with the mask

METRICS = ("iou", "precision", "recall", "mass_accuracy", "rank_accuracy")


def agreement(attribution: torch.Tensor, mask: torch.Tensor, map_quantile: float = 0.95) -> dict[str, float]:
    """How well a (F, T) attribution map agrees with a boolean (F, T) ground-truth mask.

    iou / precision / recall: of the map binarised at its own `map_quantile` (top 5 %) against the mask. With
    mask and map both at the top 5 %, precision = recall = rank accuracy (same pixel count); they differ when
    --map-quantile differs from --mask-quantile.
    mass_accuracy: share of the positive attribution that falls inside the mask (relevance mass accuracy,
    Arras et al. 2022; zero when the map has no positive value).
    rank_accuracy: share of the map's top-K pixels inside the mask, K = mask size (relevance rank accuracy).
    """
    if attribution.shape != mask.shape:
        raise ValueError(f"map {tuple(attribution.shape)} and mask {tuple(mask.shape)} differ in shape")
    a, m = attribution.detach().cpu().double().flatten(), mask.cpu().bool().flatten()
    b = binarise_top(a, map_quantile)
    tp = float((b & m).sum())
    positive = a.clamp(min=0)
    total = float(positive.sum())
    k = int(m.sum())
    top = torch.argsort(a, descending=True, stable=True)[:k]
    return {
        "iou": tp / max(float((b | m).sum()), 1.0),
        "precision": tp / max(float(b.sum()), 1.0),
        "recall": tp / max(float(k), 1.0),
        "mass_accuracy": float(positive[m].sum()) / total if total > 0 else 0.0,
        "rank_accuracy": float(m[top].double().mean()) if k else 0.0,
    }


def level_profile(binary: torch.Tensor, mag_real: torch.Tensor) -> dict[str, float]:
    """Where a binary (F, T) selection sits in loudness: the share of its pixels quieter than the real's median
    pixel (0.5 = no preference), and their mean level in dB re. the real's maximum (all pixels: `all_db`)."""
    level = 20 * torch.log10(mag_real.double().clamp(min=1e-12) / mag_real.max())
    b = binary.bool()
    return {"quiet_share": float((level[b] < level.median()).double().mean()), "mean_db": float(level[b].mean()),
            "all_db": float(level.mean())}  # fmt: skip


def random_floor(mask: torch.Tensor, seeds: int = 20, map_quantile: float = 0.95) -> dict[str, dict[str, float]]:
    """Agreement of uniform random maps with the mask, over `seeds` seeds: {metric: {"mean", "std"}}."""
    runs = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        runs.append(agreement(torch.rand(mask.shape, generator=g, dtype=torch.float64), mask, map_quantile))
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))}
            for k in METRICS}  # fmt: skip


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default), float64."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    starts_mask = np.r_[True, sorted_v[1:] != sorted_v[:-1]]  # first position of each tie group
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    ends = np.r_[starts[1:], v.size]  # one past the last position of each group
    ranks = np.empty(v.size)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two equally sized maps (Pearson correlation of average ranks)."""
    ra = rankdata(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    rb = rankdata(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b)
    if ra.size != rb.size:
        raise ValueError(f"spearman needs maps of equal size, got {ra.size} and {rb.size}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


# ----------------------------------------------------------------------------- model and inputs


def find_default_checkpoint() -> Path | None:
    """Newest runs/*/best.pt in the working folder, else next to this script."""
    for base in dict.fromkeys([Path.cwd(), HERE]):
        found = sorted((base / "runs").glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


# data.add_common_args' defaults: a flag left at its default does not count as contradicting a checkpoint
DEFAULT_INPUT = {"frontend": "stft", "num_frames": 600, "pad": "repeat"}


def load_model(ckpt_path: str | None, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, dict]:
    """The model to explain and the input settings it was trained with (`model.load_checkpoint`, the one reader).

    Returns:
        (model in eval mode, info dict: ckpt, trained, frontend, num_frames, pad, epoch, dev_eer, recipe, bf16,
        channels_last).
    """
    path = Path(ckpt_path) if ckpt_path else find_default_checkpoint()
    bf16, channels_last = (
        model_lib.use_bf16(args.precision, device),
        model_lib.use_channels_last(args.channels_last, device),
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if path is not None:
        ckpt = model_lib.load_checkpoint(path, device)
        info = {"ckpt": str(path), "trained": True, "frontend": ckpt.frontend_name, "num_frames": ckpt.num_frames,
                "pad": ckpt.pad, "epoch": ckpt.raw.get("epoch"),
                "dev_eer": ckpt.raw.get("best_dev_eer", ckpt.raw.get("dev_eer")), "recipe": ckpt.args.get("recipe"),
                "bf16": bf16, "channels_last": channels_last}  # fmt: skip
        given = {"frontend": args.frontend, "num_frames": args.num_frames, "pad": args.pad}
        differ = {k: v for k, v in given.items() if v != info[k] and v != DEFAULT_INPUT[k]}
        if differ:
            print(f"note: using the checkpoint's input settings, not {differ}", file=sys.stderr)
        print(f"model: {ckpt.describe()}")
        return ckpt.model.to(memory_format=fmt), info
    frontend = data.make_frontend(args.frontend)
    torch.manual_seed(args.seed)
    model = model_lib.LCNN(frontend.n_bins, args.num_frames).to(device, memory_format=fmt).eval()
    print("WARNING: no --ckpt and no runs/*/best.pt: explaining a RANDOMLY INITIALISED LCNN. Its attributions "
          "explain nothing about spoofing; train one (python train.py --recipe tiny) and pass --ckpt.",
          file=sys.stderr)  # fmt: skip
    info = {"ckpt": None, "trained": False, "frontend": args.frontend, "num_frames": args.num_frames,
            "pad": args.pad, "epoch": None, "dev_eer": None, "recipe": None, "bf16": bf16,
            "channels_last": channels_last}  # fmt: skip
    return model, info


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> dict:
    """Score of one (1, 1, F, T) input: logits, score (`model.bonafide_score`), softmax P(bona fide), label."""
    logits = model_lib.classify(model, x, bf16)[0]
    p = torch.softmax(logits, 0)
    return {"logit_spoof": float(logits[0]), "logit_bonafide": float(logits[1]),
            "score": float(model_lib.bonafide_score(logits)), "p_bonafide": float(p[1]),
            "pred": int(logits.argmax()), "label": "bonafide" if int(logits.argmax()) == 1 else "spoof"}  # fmt: skip


@dataclass
class Pair:
    """A bona fide waveform and its vocoded copy, before alignment."""

    name: str  # vocoder or file name, used in output file names
    real: torch.Tensor  # (N1,)
    fake: torch.Tensor  # (N2,)
    source: str  # where the fake came from


# ----------------------------------------------------------------------------- figures

FIG_DPI = 80


def _spec_axes(ax, frontend, title: str):
    """Seconds on x, Hz on y (ticks placed on bin indices, so mel bands are labelled correctly too)."""
    freqs = frontend.bin_frequencies()
    hz = np.arange(0, freqs[-1] + 1, 2000)
    hz = hz[hz >= freqs[0]]
    ax.set_yticks(np.interp(hz, freqs, np.arange(len(freqs))), [f"{f:.0f}" for f in hz])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, fontsize=9)


def _show(ax, img: np.ndarray, frontend, t0: float, **kw):
    """imshow of a (F, T) map whose first frame is at t0 seconds of the pair."""
    seconds = img.shape[1] * frontend.hop_length / frontend.sample_rate
    return ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest",
                     extent=(t0, t0 + seconds, -0.5, img.shape[0] - 0.5), **kw)  # fmt: skip


def to_db(mag: torch.Tensor, ref: float, floor: float = -80.0) -> np.ndarray:
    """Magnitude -> dB re. `ref`, clipped below at `floor`."""
    return (20 * torch.log10(mag.double().clamp(min=1e-12) / ref)).clamp(min=floor).cpu().numpy()


def plot_pair(path: Path, r: dict, frontend) -> None:
    """The manual comparison, dB re. the real's maximum, on the model's grid.

    Top: real | fake | long-term average spectra. Bottom: fake - real (dB) | fake (grey) with the ground-truth
    mask (red) | per-frame share of mask pixels with the real's level, over time.
    """
    t0 = r["start_s"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = float(r["mag_real"].max())
    real_db, fake_db = to_db(r["mag_real"], ref), to_db(r["mag_fake"], ref)
    mask = r["mask"].numpy()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.2), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 0.55]})  # fmt: skip
    for ax, img, title in (
        (axes[0, 0], real_db, f"real  (P(bona fide) = {r['pred_real']['p_bonafide']:.2f})"),
        (axes[0, 1], fake_db, f"{r['name']}  (P(bona fide) = {r['pred_fake']['p_bonafide']:.2f})"),
    ):
        im = _show(ax, img, frontend, t0, cmap="magma", vmin=-80, vmax=0)
        _spec_axes(ax, frontend, title)
    fig.colorbar(im, ax=axes[0, :2], shrink=0.9, label="dB re. real max")
    # long-term average spectrum: mean power over frames, in dB
    ltas = {k: 10 * np.log10(np.maximum((m.double() ** 2).mean(1).numpy(), 1e-20) / ref**2)
            for k, m in (("real", r["mag_real"]), (r["name"], r["mag_fake"]))}  # fmt: skip
    bins = np.arange(real_db.shape[0])
    for (k, v), c in zip(ltas.items(), ("k", "tab:red")):
        axes[0, 2].plot(v, bins, color=c, lw=0.8, label=k)
    axes[0, 2].set_ylim(-0.5, bins[-1] + 0.5)
    axes[0, 2].legend(fontsize=8)
    _spec_axes(axes[0, 2], frontend, "long-term average spectrum")
    axes[0, 2].set_xlabel("dB re. real max")
    diff = to_db(r["mag_fake"], ref, floor=-140) - to_db(r["mag_real"], ref, floor=-140)  # silence too
    im = _show(axes[1, 0], diff, frontend, t0, cmap="RdBu_r", vmin=-20, vmax=20)
    fig.colorbar(im, ax=axes[1, 0], label="fake - real (dB)")
    _spec_axes(axes[1, 0], frontend, f"{r['name']} - real (red: louder in the fake)")
    _show(axes[1, 1], fake_db, frontend, t0, cmap="gray", vmin=-80, vmax=0)
    _show(axes[1, 1], np.ma.masked_where(~mask, np.ones(mask.shape)), frontend, t0, cmap="autumn", vmin=1, vmax=2)
    _spec_axes(axes[1, 1], frontend,
               f"{r['name']} (grey) + ground-truth mask (red, top {100 * (1 - r['mask_quantile']):.0f} %)")  # fmt: skip
    times = t0 + frontend.frame_times(mask.shape[1])
    level = 10 * np.log10(np.maximum((r["mag_real"].double() ** 2).mean(0).numpy(), 1e-20) / ref**2)
    ax = axes[1, 2]
    ax.plot(times, mask.mean(0), color="tab:red", lw=0.8)
    ax.set_ylabel("share of the frame's bins in the mask", color="tab:red")
    ax.set_xlabel("time (s)")
    ax.set_title("where in time the mask falls", fontsize=9)
    twin = ax.twinx()
    twin.plot(times, level, color="k", lw=0.6)
    twin.set_ylabel("real frame level (dB)")
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


def _agreement_rgb(binary: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """White background; mask pixels the map misses grey, map pixels inside the mask green, outside red."""
    rgb = np.ones(binary.shape + (3,))
    rgb[mask & ~binary] = (0.75, 0.75, 0.75)
    rgb[binary & mask] = (0.0, 0.6, 0.0)
    rgb[binary & ~mask] = (0.85, 0.1, 0.1)
    return rgb


def plot_maps(path: Path, r: dict, frontend, map_quantile: float) -> None:
    """Mask vs Grad-CAM vs |InputXGradient|: continuous (top row) and binarised at the top 5 % (bottom row)."""
    t0 = r["start_s"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [("spoof", r["maps"]["spoof"])]
    if r["pred_fake"]["pred"] != data.LABEL_SPOOF:
        targets.append(("bona fide (predicted)", r["maps"]["predicted"]))
    cols = 1 + 2 * len(targets)
    fig, axes = plt.subplots(2, cols, figsize=(4.4 * cols, 6.6), sharex=True, sharey=True, constrained_layout=True)
    mask = r["mask"].numpy()
    rel = np.log10(r["rel"].clamp(min=1e-3).numpy())
    im = _show(axes[0, 0], rel, frontend, t0, cmap="viridis", vmin=-3, vmax=max(1.0, float(np.percentile(rel, 99.5))))
    fig.colorbar(im, ax=axes[0, 0], label="log10 relative difference")
    _spec_axes(axes[0, 0], frontend, "Eq. 2 relative difference |G(Mf)-G(Mr)|/G(Mr)")
    _show(axes[1, 0], mask.astype(float), frontend, t0, cmap="Greys", vmin=0, vmax=1)
    _spec_axes(axes[1, 0], frontend, f"ground-truth mask ({mask.mean():.1%} of pixels)")
    col = 1
    for label, maps in targets:
        for key, name in (("gradcam", "Grad-CAM"), ("ixg_abs", "|InputXGradient|")):
            m = maps[key].numpy()
            vmax = float(np.percentile(m, 99.5)) or 1.0  # robust range: spikes of x*grad saturate
            im = _show(axes[0, col], m, frontend, t0, cmap="inferno", vmin=0, vmax=vmax)
            fig.colorbar(im, ax=axes[0, col], label="clipped at the 99.5th percentile" if key == "ixg_abs" else "")
            _spec_axes(axes[0, col], frontend, f"{name}, target {label}")
            binary = binarise_top(maps[key], map_quantile).numpy()
            _show(axes[1, col], _agreement_rgb(binary, mask), frontend, t0)
            a = r["metrics"]["predicted" if label.startswith("bona") else "spoof"][key]
            _spec_axes(
                axes[1, col],
                frontend,
                f"top {100 * (1 - map_quantile):.0f} %: green in mask, red outside, grey missed\n"
                f"IoU {a['iou']:.3f}  mass {a['mass_accuracy']:.3f}  rank {a['rank_accuracy']:.3f}",
            )
            col += 1
    fig.suptitle(f"{r['name']}: where the model looks vs where the vocoder changed the spectrum "
                 f"(random floor IoU {r['random_floor']['iou']['mean']:.3f})", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


def plot_sanity(path: Path, r: dict, frontend) -> None:
    """Trained vs re-initialised model maps (target spoof), with their Spearman rank correlation."""
    t0 = r["start_s"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True, sharey=True, constrained_layout=True)
    for row, (key, name) in enumerate((("gradcam", "Grad-CAM"), ("ixg_abs", "|InputXGradient|"))):
        for col, (maps, which) in enumerate(((r["maps"]["spoof"], "trained"), (r["maps_random"], "re-initialised"))):
            m = maps[key].numpy()
            _show(axes[row, col], m, frontend, t0, cmap="inferno", vmin=0, vmax=float(np.percentile(m, 99.5)) or 1.0)
            _spec_axes(axes[row, col], frontend, f"{name}, {which} model")
        mean, n = r["sanity"][key]["mean"], len(r["sanity"][key]["per_seed"])
        text = "undefined (constant maps)" if mean is None else f"{mean:.2f}, mean of {n} re-initialisations"
        axes[row, 1].set_title(axes[row, 1].get_title() + f"\nSpearman with trained: {text}", fontsize=9)
    fig.suptitle(f"{r['name']}: model-parameter randomisation check (Adebayo et al. 2018)", fontsize=10)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


# ----------------------------------------------------------------------------- one pair end to end


def pair_inputs(pair: Pair, frontend, info: dict, args, device) -> dict:
    """Align the pair and make the model inputs and the magnitudes for the mask, on the same frames.

    The window starts at --start-s rounded to whole hops, so its frames are frames of the whole aligned pair;
    the magnitudes for the mask are sliced from the STFT of the whole pair rather than of the cropped window,
    whose two edges a centred STFT pads by reflection -- and a reflection of two waveforms with different
    phase differs, which would put the crop's edges in the mask although the vocoder did not change them.
    """
    sr, hop = frontend.sample_rate, frontend.hop_length
    real, fake, lag = align_pair(pair.real, pair.fake, round(args.max_lag_s * sr), args.align)
    first = round(args.start_s * sr / hop)  # first frame of the window
    if first * hop >= real.numel():
        raise ValueError(f"--start-s {args.start_s} is past the end of the {real.numel() / sr:.2f} s pair")
    num_samples = frontend.num_samples(info["num_frames"])
    waves = torch.stack([data.fix_length(w[first * hop :], num_samples, info["pad"]) for w in (real, fake)])
    # mask, maps and metrics cover the frames of real audio; a short clip is repeat-padded to the model's input
    valid = min(info["num_frames"], (real.numel() - first * hop - 1) // hop + 1)
    with torch.no_grad():
        x_real, x_fake = model_lib.featurize(frontend, waves.to(device), info["channels_last"]).split(1)  # (1, 1, F, T)
        mag = frontend.power(torch.stack([real, fake]).to(device)).sqrt()[:, :, first : first + valid].cpu()
    return {"lag": lag, "seconds": (real.numel() - first * hop) / sr, "start_s": first * hop / sr, "frames": valid,
            "x_real": x_real, "x_fake": x_fake, "mag_real": mag[0], "mag_fake": mag[1]}  # fmt: skip


def sanity_check(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, trained: dict, seeds: int, valid: int, bf16: bool = False
):
    """Spearman(trained map, map of a re-initialised model) over `seeds` re-initialisations, target spoof.

    A re-initialised model's Grad-CAM can be all zero (every weighted sum negative before the ReLU); its rank
    correlation is then undefined and that seed is counted in "constant" rather than averaged.

    Returns:
        ({map: {"mean", "per_seed", "constant"}}, the maps of the first re-initialised model with a non-constant
        Grad-CAM, for the figure).
    """
    per_seed, shown = {k: [] for k in trained}, None
    for seed in range(1000, 1000 + seeds):  # away from the small seeds a training run may have started from
        reinit = randomised_copy(model, seed)
        maps = attribution_maps(reinit, x, data.LABEL_SPOOF, layer_of(reinit, model, layer), bf16)
        maps = {k: v[:, :valid].cpu() for k, v in maps.items()}
        for k in trained:
            per_seed[k].append(spearman(trained[k], maps[k]))
        if shown is None or (shown["gradcam"].max() == 0 and maps["gradcam"].max() > 0):
            shown = maps
    summary = {}
    for k, values in per_seed.items():
        finite = [v for v in values if math.isfinite(v)]
        summary[k] = {"mean": float(np.mean(finite)) if finite else None,
                      "per_seed": [v if math.isfinite(v) else None for v in values],
                      "constant": len(values) - len(finite)}  # fmt: skip
    return summary, shown


def explain_pair(pair: Pair, model: nn.Module, frontend, info: dict, layer: nn.Module, args) -> dict:
    """Align, featurise, mask, attribute and score one pair; returns a dict of tensors and numbers."""
    r = {"name": pair.name, "source": pair.source, "mask_quantile": args.mask_quantile}
    r.update(pair_inputs(pair, frontend, info, args, next(model.parameters()).device))
    valid, x_fake = r["frames"], r["x_fake"]
    smooth = {k: getattr(args, k) for k in ("time_size", "freq_size", "time_var", "freq_var")}
    r["rel"], mask = ground_truth_mask(r["mag_real"], r["mag_fake"], args.mask_quantile, args.eps, **smooth)
    r["mask"] = mask
    bf16 = info["bf16"]
    r["pred_real"], r["pred_fake"] = predict(model, r["x_real"], bf16), predict(model, x_fake, bf16)
    maps, metrics = {}, {}
    for tname, target in (("spoof", data.LABEL_SPOOF), ("predicted", r["pred_fake"]["pred"])):
        if tname == "predicted" and target == data.LABEL_SPOOF:  # the same maps: no second backward pass
            maps[tname], metrics[tname] = maps["spoof"], metrics["spoof"]
            continue
        maps[tname] = {k: v[:, :valid].cpu() for k, v in attribution_maps(model, x_fake, target, layer, bf16).items()}
        metrics[tname] = {k: agreement(v, mask, args.map_quantile) for k, v in maps[tname].items()}
    r["maps"], r["metrics"] = maps, metrics
    r["random_floor"] = random_floor(mask, args.random_seeds, args.map_quantile)
    r["sanity"], r["maps_random"] = sanity_check(model, x_fake, layer, maps["spoof"], args.reinit_seeds, valid, bf16)
    r["level_profile"] = {"mask": level_profile(mask, r["mag_real"])}
    r["level_profile"].update({k: level_profile(binarise_top(maps["spoof"][k], args.map_quantile), r["mag_real"])
                               for k in ("gradcam", "ixg_abs")})  # fmt: skip
    x_valid = x_fake[0, 0, :, :valid].cpu()
    r["vs_input"] = {k: spearman(maps["spoof"][k], x_valid) for k in ("gradcam", "ixg_abs")}
    top = {k: binarise_top(maps["spoof"][k], args.map_quantile) for k in ("gradcam", "ixg_abs")}
    r["between_maps"] = {"spearman": spearman(maps["spoof"]["gradcam"], maps["spoof"]["ixg_abs"]),
                         "iou_top": float((top["gradcam"] & top["ixg_abs"]).sum() / (top["gradcam"] | top["ixg_abs"]).sum())}  # fmt: skip
    return r


def layer_of(copy_: nn.Module, original: nn.Module, layer: nn.Module) -> nn.Module:
    """The module of `copy_` that sits where `layer` sits in `original`."""
    name = next(n for n, m in original.named_modules() if m is layer)
    return dict(copy_.named_modules())[name]


# ----------------------------------------------------------------------------- report


def fmt_mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def format_table(results: list[dict]) -> str:
    """The printed agreement table: one row per pair x target x map, and the random floor per pair."""
    head = f"{'pair':<14}{'target':<11}{'map':<10}" + "".join(f"{m:>15}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for r in results:
        for tname, per_map in r["metrics"].items():
            cls = "spoof" if tname == "spoof" else f"pred={r['pred_fake']['label'][:5]}"
            for key, a in per_map.items():
                lines.append(f"{r['name']:<14}{cls:<11}{key:<10}" + "".join(f"{a[m]:>15.3f}" for m in METRICS))
        floor = r["random_floor"]
        lines.append(
            f"{r['name']:<14}{'-':<11}{'random':<10}"
            + "".join(f"{floor[m]['mean']:>8.3f}±{floor[m]['std']:.3f}"[-15:].rjust(15) for m in METRICS)
        )
    return "\n".join(lines)


def finite_or_none(value):
    """NaN/inf (a rank correlation of a constant map) -> None, recursively, so metrics.json is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def summarise(results: list[dict], info: dict, args, layer_name: str) -> dict:
    """metrics.json: predictions, per-pair agreement, random floor, sanity check, and every setting."""
    clips = {"real": results[0]["pred_real"]} if results else {}
    clips.update({r["name"]: r["pred_fake"] for r in results})
    return {
        "model": info,
        "layer": layer_name,
        "mask": {
            "equation": "Eq. 2 of arXiv:2506.03425",
            "quantile": args.mask_quantile,
            "eps": args.eps,
            "gaussian": {k: getattr(args, k) for k in ("time_size", "freq_size", "time_var", "freq_var")},
            "gaussian_source": "published reproduction make_masks_min_asv19orig.py (3 x 11, variances 3 and 5)",
            "grid": f"{info['frontend']} front-end of the model (magnitude = sqrt of power)",
        },  # fmt: skip
        "map_quantile": args.map_quantile,
        "random_seeds": args.random_seeds,
        "clips": clips,
        "pairs": {
            r["name"]: {
                "source": r["source"],
                "lag_samples": r["lag"],
                "start_s": r["start_s"],
                "seconds": r["seconds"],
                "frames": r["frames"],
                "mask_pixels": int(r["mask"].sum()),
                "prediction_real": r["pred_real"],
                "prediction_fake": r["pred_fake"],
                "targets": {
                    t: {"class": data.LABEL_SPOOF if t == "spoof" else r["pred_fake"]["pred"], "maps": m}
                    for t, m in r["metrics"].items()
                },
                "random_floor": r["random_floor"],
                "sanity_spearman_trained_vs_reinit": r["sanity"],
                "spearman_map_vs_input": r["vs_input"],
                "level_profile_target_spoof": r["level_profile"],
                "gradcam_vs_ixg_abs_target_spoof": r["between_maps"],
            }
            for r in results
        },  # fmt: skip
    }


# ----------------------------------------------------------------------------- CLI


def default_data_root() -> str | None:
    mini = HERE / ".." / "shared" / "data" / "asvspoof2019_la_mini"
    return str(mini.resolve()) if mini.is_dir() else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("pairs")
    g.add_argument("--utt", help="ASVspoof 2019 LA utterance (any split under --data-root), e.g. LA_T_4179989")
    g.add_argument("--real", help="bona fide audio file (instead of --utt)")
    g.add_argument("--fake", nargs="+", default=[], help="vocoded copies of --real (any number)")
    g.add_argument("--vocv4-root", help="extracted vocv4 voc.v4 folder (protocol.txt, wav/): pairs by utterance id")
    g.add_argument("--vocoders", nargs="+", default=["hifigan", "waveglow"], help="vocv4 vocoders to use")
    g.add_argument(
        "--vocode",
        nargs="+",
        choices=sorted(VOCODERS),
        default=None,
        help="make the fake side locally (default griffinlim melgl when no --vocv4-root / --fake)",
    )
    g.add_argument("--max-lag-s", type=float, default=0.1, help="largest offset searched by cross-correlation (s)")
    g.add_argument(
        "--align",
        choices=ALIGN_METHODS,
        default="envelope",
        help="cross-correlate 10 ms RMS envelopes (robust to re-synthesised phase) or raw waveforms",
    )
    g.add_argument("--start-s", type=float, default=0.0, help="start of the model's input window in the pair (s)")
    g = p.add_argument_group("model and attributions")
    g.add_argument("--ckpt", help="train.py checkpoint (default: newest runs/*/best.pt, else a random LCNN)")
    g.add_argument(
        "--layer",
        default="features.mfm27",
        help="Grad-CAM layer (default features.mfm27: the last MFM, before the last max-pool)",
    )
    g.add_argument("--reinit-seeds", type=int, default=5, help="re-initialised models in the sanity check")
    g.add_argument("--random-seeds", type=int, default=20, help="random maps averaged for the floor")
    g.add_argument("--map-quantile", type=float, default=0.95, help="maps binarised above this quantile (top 5 %%)")
    g = p.add_argument_group("ground-truth mask (Eq. 2 of arXiv:2506.03425; Gaussian of a published reproduction)")
    g.add_argument("--mask-quantile", type=float, default=MASK_DEFAULTS["quantile"], help="paper: 0.95 (top 5 %%)")
    g.add_argument("--time-size", type=int, default=MASK_DEFAULTS["time_size"], help="Gaussian taps in time (3)")
    g.add_argument("--freq-size", type=int, default=MASK_DEFAULTS["freq_size"], help="Gaussian taps in frequency (11)")
    g.add_argument("--time-var", type=float, default=MASK_DEFAULTS["time_var"], help="variance in frames^2 (3)")
    g.add_argument("--freq-var", type=float, default=MASK_DEFAULTS["freq_var"], help="variance in bins^2 (5)")
    g.add_argument("--eps", type=float, default=MASK_DEFAULTS["eps"], help="denominator floor (1e-8)")
    p.add_argument("--out", help="output folder (default explain_out/<utt or real file stem>/)")
    data.add_common_args(p)
    data.add_model_args(p)
    return p


def collect_pairs(args) -> tuple[list[Pair], str]:
    """The pairs asked for on the command line, and the stem naming the output folder."""
    if bool(args.utt) == bool(args.real):
        raise ValueError("give exactly one of --utt UTT_ID or --real FILE")
    if args.fake and not args.real:
        raise ValueError("--fake goes with --real (use --vocv4-root or --vocode with --utt)")
    if args.vocv4_root and not args.utt:
        raise ValueError("--vocv4-root pairs vocoded files with their original by utterance id: give --utt")
    if args.utt:
        root = args.data_root or default_data_root()
        if args.data_root is None and root is not None:
            print(f"--data-root not given and $ASVSPOOF_ROOT unset: using {root}")
        layout = data.find_la_root(root)
        split, entry = data.find_utterance(layout, args.utt)
        path = layout.audio_path(split, args.utt)
        if entry.key != "bonafide":
            print(f"warning: {args.utt} is a {entry.system} spoof, not bona fide: the 'real' side is itself fake",
                  file=sys.stderr)  # fmt: skip
        stem, real_path = args.utt, path
    else:
        real_path = Path(args.real)
        stem = real_path.stem
    real = data.load_audio(real_path)
    pairs = []
    for fake in args.fake:
        fp = Path(fake)
        name = fp.stem if fp.stem != real_path.stem else fp.parent.name or "fake"
        pairs.append(Pair(re.sub(r"[^\w.-]", "_", name), real, data.load_audio(fp), str(fp)))
    if args.vocv4_root:
        for vocoder, fp in find_vocv4_files(args.vocv4_root, args.utt, args.vocoders).items():
            pairs.append(Pair(vocoder, real, data.load_audio(fp), f"vocv4 {fp}"))
    vocoders = args.vocode if args.vocode is not None else ([] if pairs else ["griffinlim", "melgl"])
    for name in vocoders:
        pairs.append(Pair(name, real, vocode(real, name), f"local vocoder {name} of {real_path}"))
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"two fakes share a name ({', '.join(names)}): rename the files")
    return pairs, stem


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("mask_quantile", "map_quantile"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1), got {getattr(args, flag)}")
    device = data.resolve_device(args.device)
    model, info = load_model(args.ckpt, args, device)
    frontend = data.make_frontend(info["frontend"]).to(device)
    layer = find_layer(model, args.layer)
    layer_name = next(n for n, m in model.named_modules() if m is layer)
    pairs, stem = collect_pairs(args)
    out = Path(args.out) if args.out else Path("explain_out") / stem
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for pair in pairs:
        print(f"{pair.name}: {pair.source}")
        r = explain_pair(pair, model, frontend, info, layer, args)
        print(
            f"  lag {r['lag']} samples corrected; {r['seconds']:.2f} s, {r['frames']} frames explained; "
            f"P(bona fide): real {r['pred_real']['p_bonafide']:.3f}, {pair.name} {r['pred_fake']['p_bonafide']:.3f}"
        )
        plot_pair(out / f"pair_{pair.name}.png", r, frontend)
        plot_maps(out / f"maps_{pair.name}.png", r, frontend, args.map_quantile)
        plot_sanity(out / f"sanity_{pair.name}.png", r, frontend)
        results.append(r)
    summary = summarise(results, info, args, layer_name)
    with data.atomic_write(out / "metrics.json") as f:  # a killed run never leaves half a metrics.json
        f.write(json.dumps(finite_or_none(summary), indent=2, allow_nan=False) + "\n")
    print("\npredictions (softmax P(bona fide), score = logit_bona - logit_spoof):")
    for name, p in summary["clips"].items():
        print(f"  {name:<14} P = {p['p_bonafide']:.3f}  score {p['score']:+.3f}  -> {p['label']}")
    print(
        "\nagreement with the ground-truth mask (maps binarised at their own top "
        f"{100 * (1 - args.map_quantile):.0f} %):"
    )
    print(format_table(results))
    print(f"\nsanity check, Spearman(trained map, re-initialised model map), target spoof, mean of "
          f"{args.reinit_seeds} re-initialisations; and Spearman(map, input features):")  # fmt: skip
    for r in results:
        cells = [f"{k} {fmt_mean(v['mean'])}" + (f" ({v['constant']} constant)" if v["constant"] else "")
                 for k, v in r["sanity"].items()]  # fmt: skip
        cells += [f"{k} vs input {fmt_mean(finite_or_none(v))}" for k, v in r["vs_input"].items()]
        cells.append(f"gradcam vs ixg_abs {fmt_mean(finite_or_none(r['between_maps']['spearman']))}")
        print(f"  {r['name']:<14}" + "  ".join(cells))
    print("\nloudness of the selected pixels (share quieter than the real's median pixel; mean dB re. max):")
    for r in results:
        cells = [f"{k} {v['quiet_share']:.2f} / {v['mean_db']:.0f} dB" for k, v in r["level_profile"].items()]
        print(f"  {r['name']:<14}" + "  ".join(cells) + f"  (all pixels {r['level_profile']['mask']['all_db']:.0f} dB)")
    if not info["trained"]:
        print("\nWARNING: the model is randomly initialised: these maps explain nothing.", file=sys.stderr)
    print(f"\nwrote {out}/metrics.json and {3 * len(results)} figures")
    return 0


if __name__ == "__main__":
    data.run_cli(main)
