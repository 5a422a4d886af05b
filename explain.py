"""explain.py -- where does the LCNN look? Ground-truth masks from real/vocoded pairs vs Grad-CAM and InputXGradient,
measured over many pairs, with a faithfulness test.

    python explain.py --utt LA_T_4179989                       # the newest runs/*/best.pt; local vocoders
    python explain.py --utt LA_T_4179989 --vocv4-root DIR/voc.v4 --vocoders hifigan waveglow
    python explain.py --real real.flac --fake vocoded.flac [more.flac ...]
    python explain.py --real-dir ../shared/data/asvspoof2019_la_enrollment --vocode world melgl --ckpt runs/xai/best.pt
    python explain.py --split dev --data-root /data/LA --vocode griffinlim melgl --limit 200
    python explain.py --vocv4-root DIR/voc.v4 --data-root /data/LA --vocoders hifigan waveglow --speakers LA_0079

One *pair* is a bona fide waveform and a vocoded copy of the same utterance. For each pair:
  1. the fake side comes from vocv4 (project09-voc.v4, Zenodo 7314976, arXiv:2210.10570), from files given on the
     command line, or from a local vocoder (`--vocode`: griffinlim, melgl, world, mlsa; vocoders.VOCODERS); the two are
     aligned by cross-correlation and trimmed to equal length;
  2. both are cropped/padded to the checkpoint's input (`num_frames`, `pad`) and go through its front-end: the
     model input x is (1, 1, F, T), e.g. (1, 1, 863, 256) for an STFT model on 256 frames;
  3. the ground-truth mask (Eq. 2 of arXiv:2506.03425) is computed from the front-end's magnitude on that same
     (F, T) grid, so mask and attributions compare pixel for pixel;
  4. Grad-CAM (Selvaraju et al., ICCV 2017) and InputXGradient (Shrikumar et al., 2016), both written here by
     hand (equal to pytorch-grad-cam and Captum in test_all.py), for the spoof class and for the predicted class;
  5. agreement with the mask: IoU, precision, recall, relevance mass and rank accuracy (Arras et al., "CLEVR-XAI",
     Information Fusion 2022), the same numbers for random maps (the floor), and the model-parameter
     randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018);
  6. faithfulness (Samek et al., IEEE TNNLS 2017; Petsiuk et al., BMVC 2018): on the vocoded input, the real
     recording's pixels are restored at the top k % of each map (and of the ground-truth difference, and at random),
     and the bona fide score is read at each k; the reverse inserts vocoded pixels into the real input. The area
     over that curve (AOPC) says how much of the decision the pixels a map points at carry.
Over many pairs every number is aggregated per vocoder x method x target with bootstrap 95 % confidence intervals,
as a paired difference to the random floor, and the detection EER between the real and the vocoded sides.

Outputs in --out: pairs/<vocoder>__<name>.json (one result per pair, written as it finishes: a rerun skips them),
summary.json and the printed summary table, summary_agreement.png, summary_faithfulness.png, and for the first
--figures pairs pair_*.png, maps_*.png, sanity_*.png.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cli
import corpora
import data
import metrics
import model as model_lib
import tune
import vocoders

HERE = Path(__file__).resolve().parent

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


def random_map(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform random map as a random permutation of distinct values: (values, the pixel order, highest first).

    Its order is known without sorting: every ranking of a uniform random map is a uniformly random permutation,
    so this map has the distribution of torch.rand's while its top-k set is simply order[:k].
    """
    n = math.prod(shape)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    values = torch.empty(n, dtype=torch.float64)
    values[order] = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64)
    return values.view(shape), order


def random_floor(mask: torch.Tensor, seeds: int = 20, map_quantile: float = 0.95) -> dict[str, dict[str, float]]:
    """Agreement of uniform random maps (`random_map`) with the mask, over `seeds` seeds: {metric: {"mean", "std"}}.

    The same numbers `agreement` gives for those maps, computed from their known order (no sort: 20 seeds cost
    what one `agreement` does).
    """
    m = mask.cpu().bool().flatten()
    n, k_mask = m.numel(), int(m.sum())
    k_map = max(1, round((1 - map_quantile) * n))
    runs = []
    for seed in range(seeds):
        values, order = random_map(tuple(mask.shape), seed)
        tp = float(m[order[:k_map]].sum())
        union = k_map + k_mask - tp
        v = values.flatten()
        runs.append({"iou": tp / max(union, 1.0), "precision": tp / k_map, "recall": tp / max(k_mask, 1),
                     "mass_accuracy": float(v[m].sum() / v.sum()),
                     "rank_accuracy": float(m[order[:k_mask]].double().mean()) if k_mask else 0.0})  # fmt: skip
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


# ----------------------------------------------------------------------------- faithfulness: deletion / insertion

FAITH_KS = (1, 2, 5, 10, 15, 20)  # percent of the explained pixels (default --faith-ks)
FAITH_RANKINGS = ("gradcam", "ixg", "ixg_abs", "ground_truth", "random")


def perturbation_curves(
    model: nn.Module,
    x_from: torch.Tensor,
    x_to: torch.Tensor,
    rankings: dict[str, torch.Tensor],
    ks: tuple[float, ...],
    valid: int,
    bf16: bool = False,
    batch_size: int = 8,
) -> dict[str, list[float]]:
    """The bona fide score of `x_from` with its top-k % pixels of each ranking taken from `x_to`, for k in `ks`.

    Deletion / insertion in the sense of Samek et al. 2017 and Petsiuk et al. 2018, with the other recording of the
    pair as the reference instead of a blur or zeros: a pixel is replaced by what the real (or the vocoded)
    recording has there, so the input stays a spectrogram of speech.

    Args:
        x_from, x_to: (1, 1, F, T) model inputs of the two sides of the pair.
        rankings: name -> (F, valid) map; higher = taken first (ties by position).
        ks: percentages of the F x valid explained pixels.
        valid: frames of real audio (the pixels a map covers; the rest of the input is left alone).
    Returns:
        name -> one bona fide score (`model.bonafide_score`) per k.
    """
    n_freq, n_time = x_from.shape[-2:]
    n = n_freq * valid
    base_from = x_from[0, 0, :, :valid].reshape(-1)
    base_to = x_to[0, 0, :, :valid].reshape(-1)
    inputs, names = [], []
    for name, r in rankings.items():
        order = torch.argsort(r.flatten().double().cpu(), descending=True, stable=True).to(x_from.device)
        for k in ks:
            region = base_from.clone()
            idx = order[: round(k / 100 * n)]
            region[idx] = base_to[idx]
            x = x_from[0, 0].clone()
            x[:, :valid] = region.view(n_freq, valid)
            inputs.append(x)
            names.append(name)
    scores: list[float] = []
    fmt = torch.channels_last if x_from.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    with torch.no_grad():
        for b in range(0, len(inputs), batch_size):
            x = torch.stack(inputs[b : b + batch_size])[:, None].contiguous(memory_format=fmt)  # (B, 1, F, T)
            scores += model_lib.bonafide_score(model_lib.classify(model, x, bf16)).tolist()
    out: dict[str, list[float]] = {name: [] for name in rankings}
    for name, score in zip(names, scores):
        out[name].append(score)
    return out


def aopc(curve: list[float], start: float, direction: str) -> float:
    """Area over the perturbation curve (Samek et al. 2017): mean over k = 0, ks of the score's move away from its
    start -- up for "restore" (real pixels put into the fake), down for "insert" (vocoded pixels into the real).
    Higher = the pixels the ranking puts first carry more of the decision."""
    moves = [(s - start) if direction == "restore" else (start - s) for s in curve]
    return float(np.mean([0.0, *moves]))


# ----------------------------------------------------------------------------- results of one pair (typed)


@dataclass
class Prediction:
    """The model's decision on one input: logits, score (logit_bona - logit_spoof), softmax P(bona fide)."""

    logit_spoof: float
    logit_bonafide: float
    score: float
    p_bonafide: float
    pred: int  # 1 bona fide, 0 spoof

    @property
    def label(self) -> str:
        return "bonafide" if self.pred == corpora.LABEL_BONAFIDE else "spoof"


@dataclass
class Agreement:
    """How a map agrees with the ground-truth mask (see `agreement`)."""

    iou: float
    precision: float
    recall: float
    mass_accuracy: float
    rank_accuracy: float


@dataclass
class Faithfulness:
    """Bona fide score against k % of the pixels swapped: "restore" puts real pixels into the vocoded input,
    "insert" vocoded pixels into the real one; per ranking (FAITH_RANKINGS), one score per k of `ks`."""

    ks: list[float]
    start_fake: float  # the scores before any swap (k = 0)
    start_real: float
    restore: dict[str, list[float]]
    insert: dict[str, list[float]]

    def aopc(self, direction: str, ranking: str) -> float:
        curve = (self.restore if direction == "restore" else self.insert)[ranking]
        return aopc(curve, self.start_fake if direction == "restore" else self.start_real, direction)


@dataclass
class PairResult:
    """Everything measured on one pair; one JSON file per pair (`to_json` / `from_json`), read by the summary."""

    pair_id: str  # "<vocoder>__<name>"
    name: str  # the bona fide recording (utterance id or file stem)
    vocoder: str  # the vocoder, or the fake file's stem
    source: str  # where the fake came from
    speaker: str | None
    lag: int  # samples of offset corrected by the alignment
    start_s: float
    seconds: float
    frames: int  # frames explained (of real audio)
    mask_pixels: int
    mask_quantile: float
    pred_real: Prediction
    pred_fake: Prediction
    agreement: dict[str, dict[str, Agreement]]  # target ("spoof", "predicted") -> method -> agreement
    floor: Agreement  # random maps, mean over --random-seeds
    floor_std: Agreement
    sanity: dict[str, float | None]  # method -> mean Spearman(trained map, re-initialised model's map)
    sanity_seeds: int
    sanity_constant: dict[str, int]  # re-initialisations whose map was constant (Spearman undefined)
    faithfulness: Faithfulness | None
    level_profile: dict[str, dict[str, float]]  # mask / map -> loudness of its pixels
    vs_input: dict[str, float | None]  # Spearman(map, input features)
    between_maps: dict[str, float | None]  # Grad-CAM vs |x*grad|
    compute_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(finite_or_none(dataclasses.asdict(self)), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PairResult:
        d = json.loads(text)
        d["pred_real"], d["pred_fake"] = Prediction(**d["pred_real"]), Prediction(**d["pred_fake"])
        d["agreement"] = {t: {m: Agreement(**a) for m, a in per.items()} for t, per in d["agreement"].items()}
        d["floor"], d["floor_std"] = Agreement(**d["floor"]), Agreement(**d["floor_std"])
        d["faithfulness"] = Faithfulness(**d["faithfulness"]) if d.get("faithfulness") else None
        return cls(**d)


@dataclass
class PairMaps:
    """The tensors of one pair, for its figures (not saved): (F, frames) magnitudes, relative difference, mask, the
    maps per target and method, and the maps of the first re-initialised model with a non-constant Grad-CAM."""

    mag_real: torch.Tensor
    mag_fake: torch.Tensor
    rel: torch.Tensor
    mask: torch.Tensor
    maps: dict[str, dict[str, torch.Tensor]]
    maps_random: dict[str, torch.Tensor] = field(default_factory=dict)


def finite_or_none(value):
    """NaN/inf (a rank correlation of a constant map) -> None, recursively, so the JSON is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ----------------------------------------------------------------------------- the model and its inputs


def find_default_checkpoint() -> Path | None:
    """Newest runs/*/best.pt in the working folder, else next to this script (what train.py wrote last)."""
    for base in dict.fromkeys([Path.cwd(), HERE]):
        found = sorted((base / "runs").glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


@dataclass
class ModelInfo:
    """The model being explained and the input it takes."""

    ckpt: str | None  # None: --random-model
    trained: bool
    frontend: str
    num_frames: int
    pad: str
    epoch: int | None
    dev_eer: float | None
    recipe: str | None
    data_root: str | None  # the tree it was trained on (the default --data-root)
    bf16: bool
    channels_last: bool
    sha256: str | None = None


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, ModelInfo]:
    """The model to explain (`model.load_checkpoint`, the one reader): --ckpt, else the newest runs/*/best.pt, else
    (only with --random-model) a randomly initialised LCNN.

    Raises:
        FileNotFoundError: no --ckpt, no runs/*/best.pt and no --random-model (the message says how to get a model).
    """
    model_lib.use_bf16(args.precision, device)  # a bad --precision fails before any work
    path = Path(args.ckpt) if args.ckpt else (None if args.random_model else find_default_checkpoint())
    if path is None and not args.random_model:
        raise FileNotFoundError(
            "no --ckpt given and no runs/*/best.pt here: train a model first (e.g. python train.py --data-root "
            "demo_data/LA --recipe tiny), pass --ckpt FILE, or --random-model to explain an untrained LCNN (its maps "
            "explain nothing about spoofing)"
        )
    if path is not None:
        ckpt = model_lib.load_checkpoint(path, device)
        settings = choose_explain_settings(args, ckpt.model, ckpt.frontend_name, device)
        info = ModelInfo(str(path), True, ckpt.frontend_name, ckpt.num_frames, ckpt.pad, ckpt.raw.get("epoch"),
                         ckpt.raw.get("best_dev_eer", ckpt.raw.get("dev_eer")), ckpt.args.get("recipe"),
                         ckpt.data_root, settings.bf16, settings.channels_last,
                         hashlib.sha256(path.read_bytes()).hexdigest())  # fmt: skip
        given = {"frontend": args.frontend, "num_frames": args.num_frames, "pad": args.pad}
        differ = {k: v for k, v in given.items() if v is not None and v != getattr(info, k)}
        if differ:
            print(f"note: using the checkpoint's input settings, not {differ}", file=sys.stderr)
        print(f"model: {ckpt.describe()}")
        return ckpt.model.to(memory_format=memory_format(settings)), info
    frontend = data.make_frontend(args.frontend or "stft")
    num_frames = args.num_frames or 600
    torch.manual_seed(args.seed)
    model = model_lib.LCNN(frontend.n_bins, num_frames).to(device).eval()
    settings = choose_explain_settings(args, model, frontend.name, device)
    print("WARNING: --random-model: explaining a RANDOMLY INITIALISED LCNN. Its attributions explain nothing about "
          "spoofing; they are a baseline for the sanity check.", file=sys.stderr)  # fmt: skip
    info = ModelInfo(None, False, frontend.name, num_frames, args.pad or "repeat", None, None, None, None,
                     settings.bf16, settings.channels_last)  # fmt: skip
    return model.to(memory_format=memory_format(settings)), info


def choose_explain_settings(args: argparse.Namespace, model: nn.Module, frontend: str, device: torch.device):
    """--precision / --channels-last for the explanations (`tune.choose_settings`, printed to stderr), measured as a
    "train" step of 2 inputs: the maps need gradients, and bf16 auto is not yet cleared for gradients on the CPU
    (`tune.BF16_AUTO`)."""
    fe = data.make_frontend(frontend).to(device)
    shape = (2, fe.num_samples(model.num_frames))
    settings = tune.choose_settings(model, fe, device, shape, "train", args.precision, args.channels_last)
    print(settings.describe(), file=sys.stderr, flush=True)
    return settings


def memory_format(settings: tune.Settings) -> torch.memory_format:
    return torch.channels_last if settings.channels_last else torch.contiguous_format


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Prediction:
    """The decision on one (1, 1, F, T) input (`model.classify`, `model.bonafide_score`)."""
    logits = model_lib.classify(model, x, bf16)[0]
    p = torch.softmax(logits, 0)
    return Prediction(float(logits[0]), float(logits[1]), float(model_lib.bonafide_score(logits)), float(p[1]),
                      int(logits.argmax()))  # fmt: skip


# ----------------------------------------------------------------------------- which pairs


@dataclass(frozen=True)
class PairSpec:
    """One pair to explain, before any audio is read."""

    name: str  # the bona fide recording's utterance id or file stem
    vocoder: str  # local vocoder, vocv4 vocoder, or the fake file's stem
    real: str  # bona fide audio file
    fake: str | None  # vocoded audio file; None: made by the local vocoder `vocoder`
    speaker: str | None
    source: str

    @property
    def pair_id(self) -> str:
        return re.sub(r"[^\w.-]", "_", f"{self.vocoder}__{self.name}")


SPEAKER_RE = re.compile(r"(LA_\d{4})")


def collect_pairs(args, info: ModelInfo) -> tuple[list[PairSpec], str]:
    """The pairs the command line asks for, in a fixed order, and the stem naming the default output folder.

    Exactly one source: --utt (one LA utterance), --real (one file), --split (every bona fide file of an LA split),
    --real-dir (every audio file of a folder), or --vocv4-root alone (every vocv4 pair). --utt / --split / --real-dir
    pair each real file with the --vocode local vocoders (default griffinlim melgl, unless vocv4 or --fake files are
    given); --speakers and --limit filter.
    """
    sources = {"--utt": args.utt, "--real": args.real, "--split": args.split, "--real-dir": args.real_dir}
    given = [k for k, v in sources.items() if v]
    if len(given) > 1 or (not given and not args.vocv4_root):
        raise ValueError("give exactly one of --utt UTT_ID, --real FILE, --split SPLIT, --real-dir DIR, or "
                         "--vocv4-root DIR alone (every vocv4 pair)")  # fmt: skip
    if args.fake and not args.real:
        raise ValueError("--fake goes with --real (use --vocv4-root or --vocode with --utt)")
    if args.vocv4_root and (args.real or args.split or args.real_dir):
        raise ValueError("--vocv4-root pairs vocoded files with their LA original by utterance id: use it with --utt "
                         "or alone")  # fmt: skip
    local = (
        args.vocode if args.vocode is not None else ([] if (args.fake or args.vocv4_root) else ["griffinlim", "melgl"])
    )
    specs: list[PairSpec] = []

    def layout():
        root = args.data_root or info.data_root
        if root is None:
            raise ValueError("give --data-root (the LA tree), or explain a checkpoint that names the tree it was "
                             "trained on")  # fmt: skip
        if args.data_root is None:
            print(f"--data-root not given ($ASVSPOOF_ROOT unset): the tree the model was trained on, {root}")
        return corpora.find_la_root(root)

    def with_local(name: str, real: str, speaker: str | None, what: str) -> None:
        specs.extend(PairSpec(name, v, real, None, speaker, f"local vocoder {v} of {what}") for v in local)

    if args.utt:
        la = layout()
        split, entry = corpora.find_utterance(la, args.utt)
        if entry.key != "bonafide":
            print(f"warning: {args.utt} is a {entry.system} spoof, not bona fide: the 'real' side is itself fake",
                  file=sys.stderr)  # fmt: skip
        real = str(la.audio_path(split, args.utt))
        if args.vocv4_root:
            for vocoder, fp in corpora.find_vocv4_files(args.vocv4_root, args.utt, args.vocoders).items():
                specs.append(PairSpec(args.utt, vocoder, real, str(fp), entry.speaker, f"vocv4 {fp}"))
        with_local(args.utt, real, entry.speaker, real)
        stem = args.utt
    elif args.real:
        real_path = Path(args.real)
        if not real_path.is_file():
            raise FileNotFoundError(f"--real {real_path}: no such audio file")
        for fake in args.fake:
            fp = Path(fake)
            if not fp.is_file():
                raise FileNotFoundError(f"--fake {fp}: no such audio file")
            name = fp.stem if fp.stem != real_path.stem else fp.parent.name or "fake"
            specs.append(PairSpec(real_path.stem, name, str(real_path), str(fp), None, str(fp)))
        with_local(real_path.stem, str(real_path), None, str(real_path))
        stem = real_path.stem
    elif args.split:
        la = layout()
        for e in la.protocol(args.split):
            if e.key == "bonafide":
                with_local(e.utt_id, str(la.audio_path(args.split, e.utt_id)), e.speaker, f"{args.split} {e.utt_id}")
        stem = f"{args.split}_bonafide"
    elif args.real_dir:
        folder = Path(args.real_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--real-dir {folder}: no such folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav") and p.is_file())
        if not files:
            raise FileNotFoundError(f"--real-dir {folder}: no .flac or .wav files in it")
        for p in files:
            m = SPEAKER_RE.match(p.stem)
            with_local(p.stem, str(p), m.group(1) if m else None, str(p))
        stem = folder.name
    else:  # every vocv4 pair, originals from the LA train/dev trees
        la = layout()
        for v, fp in corpora.vocv4_files(args.vocv4_root, args.vocoders):
            split = {"LA_T": "train", "LA_D": "dev", "LA_E": "eval"}[v.utt_id[:4]]
            specs.append(PairSpec(v.utt_id, v.vocoder, str(la.audio_path(split, v.utt_id)), str(fp), v.speaker,
                                  f"vocv4 {fp}"))  # fmt: skip
        stem = "vocv4"
    if args.speakers:
        specs = [s for s in specs if s.speaker in set(args.speakers)]
    if args.limit:
        keep = list(dict.fromkeys(s.name for s in specs))[: args.limit]  # the first N recordings, all their fakes
        specs = [s for s in specs if s.name in set(keep)]
    ids = [s.pair_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two pairs share a name ({', '.join(i for i in ids if ids.count(i) > 1)}): rename the files")
    if not specs:
        raise ValueError("no pair to explain: the filters (--speakers, --limit, --vocoders) leave none")
    return specs, stem


def load_pair(spec: PairSpec, keep_s: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake) waveforms of a pair. A local vocoder copies only the first `keep_s` seconds of the real
    recording (the explained window and a margin), so a 14 s segment costs what its 2 s window costs."""
    real = data.load_audio(spec.real)
    if spec.fake is not None:
        return real, data.load_audio(spec.fake)
    if keep_s is not None:
        real = real[: round(keep_s * data.SAMPLE_RATE)]
    return real, vocoders.vocode(real, spec.vocoder)


# ----------------------------------------------------------------------------- figures of one pair

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


def plot_pair(path: Path, res: PairResult, pm: PairMaps, frontend) -> None:
    """The manual comparison, dB re. the real's maximum, on the model's grid.

    Top: real | fake | long-term average spectra. Bottom: fake - real (dB) | fake (grey) with the ground-truth
    mask (red) | per-frame share of mask pixels with the real's level, over time.
    """
    t0 = res.start_s
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = float(pm.mag_real.max())
    real_db, fake_db = to_db(pm.mag_real, ref), to_db(pm.mag_fake, ref)
    mask = pm.mask.numpy()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.2), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 0.55]})  # fmt: skip
    for ax, img, title in (
        (axes[0, 0], real_db, f"real  (P(bona fide) = {res.pred_real.p_bonafide:.2f})"),
        (axes[0, 1], fake_db, f"{res.vocoder}  (P(bona fide) = {res.pred_fake.p_bonafide:.2f})"),
    ):
        im = _show(ax, img, frontend, t0, cmap="magma", vmin=-80, vmax=0)
        _spec_axes(ax, frontend, title)
    fig.colorbar(im, ax=axes[0, :2], shrink=0.9, label="dB re. real max")
    # long-term average spectrum: mean power over frames, in dB
    ltas = {k: 10 * np.log10(np.maximum((m.double() ** 2).mean(1).numpy(), 1e-20) / ref**2)
            for k, m in (("real", pm.mag_real), (res.vocoder, pm.mag_fake))}  # fmt: skip
    bins = np.arange(real_db.shape[0])
    for (k, v), c in zip(ltas.items(), ("k", "tab:red")):
        axes[0, 2].plot(v, bins, color=c, lw=0.8, label=k)
    axes[0, 2].set_ylim(-0.5, bins[-1] + 0.5)
    axes[0, 2].legend(fontsize=8)
    _spec_axes(axes[0, 2], frontend, "long-term average spectrum")
    axes[0, 2].set_xlabel("dB re. real max")
    diff = to_db(pm.mag_fake, ref, floor=-140) - to_db(pm.mag_real, ref, floor=-140)  # silence too
    im = _show(axes[1, 0], diff, frontend, t0, cmap="RdBu_r", vmin=-20, vmax=20)
    fig.colorbar(im, ax=axes[1, 0], label="fake - real (dB)")
    _spec_axes(axes[1, 0], frontend, f"{res.vocoder} - real (red: louder in the fake)")
    _show(axes[1, 1], fake_db, frontend, t0, cmap="gray", vmin=-80, vmax=0)
    _show(axes[1, 1], np.ma.masked_where(~mask, np.ones(mask.shape)), frontend, t0, cmap="autumn", vmin=1, vmax=2)
    _spec_axes(axes[1, 1], frontend,
               f"{res.vocoder} (grey) + ground-truth mask (red, top {100 * (1 - res.mask_quantile):.0f} %)")  # fmt: skip
    times = t0 + frontend.frame_times(mask.shape[1])
    level = 10 * np.log10(np.maximum((pm.mag_real.double() ** 2).mean(0).numpy(), 1e-20) / ref**2)
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


def plot_maps(path: Path, res: PairResult, pm: PairMaps, frontend, map_quantile: float) -> None:
    """Mask vs Grad-CAM vs |InputXGradient|: continuous (top row) and binarised at the top 5 % (bottom row)."""
    t0 = res.start_s
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [("spoof", pm.maps["spoof"])]
    if res.pred_fake.pred != corpora.LABEL_SPOOF:
        targets.append(("bona fide (predicted)", pm.maps["predicted"]))
    cols = 1 + 2 * len(targets)
    fig, axes = plt.subplots(2, cols, figsize=(4.4 * cols, 6.6), sharex=True, sharey=True, constrained_layout=True)
    mask = pm.mask.numpy()
    rel = np.log10(pm.rel.clamp(min=1e-3).numpy())
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
            a = res.agreement["predicted" if label.startswith("bona") else "spoof"][key]
            _spec_axes(
                axes[1, col],
                frontend,
                f"top {100 * (1 - map_quantile):.0f} %: green in mask, red outside, grey missed\n"
                f"IoU {a.iou:.3f}  mass {a.mass_accuracy:.3f}  rank {a.rank_accuracy:.3f}",
            )
            col += 1
    fig.suptitle(f"{res.vocoder}: where the model looks vs where the vocoder changed the spectrum "
                 f"(random floor IoU {res.floor.iou:.3f})", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


def plot_sanity(path: Path, res: PairResult, pm: PairMaps, frontend) -> None:
    """Trained vs re-initialised model maps (target spoof), with their Spearman rank correlation."""
    t0 = res.start_s
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True, sharey=True, constrained_layout=True)
    for row, (key, name) in enumerate((("gradcam", "Grad-CAM"), ("ixg_abs", "|InputXGradient|"))):
        for col, (maps, which) in enumerate(((pm.maps["spoof"], "trained"), (pm.maps_random, "re-initialised"))):
            m = maps[key].numpy()
            _show(axes[row, col], m, frontend, t0, cmap="inferno", vmin=0, vmax=float(np.percentile(m, 99.5)) or 1.0)
            _spec_axes(axes[row, col], frontend, f"{name}, {which} model")
        mean, n = res.sanity[key], res.sanity_seeds
        text = "undefined (constant maps)" if mean is None else f"{mean:.2f}, mean of {n} re-initialisations"
        axes[row, 1].set_title(axes[row, 1].get_title() + f"\nSpearman with trained: {text}", fontsize=9)
    fig.suptitle(f"{res.vocoder}: model-parameter randomisation check (Adebayo et al. 2018)", fontsize=10)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


# ----------------------------------------------------------------------------- one pair end to end


def pair_inputs(real: torch.Tensor, fake: torch.Tensor, frontend, info: ModelInfo, args, device) -> dict:
    """Align the pair and make the model inputs and the magnitudes for the mask, on the same frames.

    The window starts at --start-s rounded to whole hops, so its frames are frames of the whole aligned pair;
    the magnitudes for the mask are sliced from the STFT of the whole pair rather than of the cropped window,
    whose two edges a centred STFT pads by reflection -- and a reflection of two waveforms with different
    phase differs, which would put the crop's edges in the mask although the vocoder did not change them.
    """
    sr, hop = frontend.sample_rate, frontend.hop_length
    shortest = max(args.freq_size, args.time_size) * hop  # the smoothing needs a few frames of the pair
    for side, w in (("real", real), ("vocoded", fake)):
        if w.numel() < shortest:
            raise ValueError(f"the {side} side is {w.numel()} samples long; a pair needs at least {shortest} "
                             f"({shortest / sr:.2f} s)")  # fmt: skip
    real, fake, lag = align_pair(real, fake, round(args.max_lag_s * sr), args.align)
    first = round(args.start_s * sr / hop)  # first frame of the window
    if first * hop >= real.numel():
        raise ValueError(f"--start-s {args.start_s} is past the end of the {real.numel() / sr:.2f} s pair")
    num_samples = frontend.num_samples(info.num_frames)
    waves = torch.stack([data.fix_length(w[first * hop :], num_samples, info.pad) for w in (real, fake)])
    # mask, maps and metrics cover the frames of real audio; a short clip is repeat-padded to the model's input
    valid = min(info.num_frames, (real.numel() - first * hop - 1) // hop + 1)
    with torch.no_grad():
        x_real, x_fake = model_lib.featurize(frontend, waves.to(device), info.channels_last).split(1)  # (1, 1, F, T)
        mag = frontend.power(torch.stack([real, fake]).to(device)).sqrt()[:, :, first : first + valid].cpu()
    return {"lag": lag, "seconds": (real.numel() - first * hop) / sr, "start_s": first * hop / sr, "frames": valid,
            "x_real": x_real, "x_fake": x_fake, "mag_real": mag[0], "mag_fake": mag[1]}  # fmt: skip


def sanity_check(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, trained: dict, seeds: int, valid: int, bf16: bool = False
) -> tuple[dict[str, float | None], dict[str, int], dict[str, torch.Tensor]]:
    """Spearman(trained map, map of a re-initialised model) over `seeds` re-initialisations, target spoof.

    A re-initialised model's Grad-CAM can be all zero (every weighted sum negative before the ReLU); its rank
    correlation is then undefined and that seed is counted as constant rather than averaged.

    Returns:
        (map -> mean Spearman or None, map -> constant seeds, the maps of the first re-initialised model with a
        non-constant Grad-CAM, for the figure).
    """
    per_seed: dict[str, list[float]] = {k: [] for k in trained}
    shown: dict[str, torch.Tensor] = {}
    for seed in range(1000, 1000 + seeds):  # away from the small seeds a training run may have started from
        reinit = randomised_copy(model, seed)
        maps = attribution_maps(reinit, x, corpora.LABEL_SPOOF, layer_of(reinit, model, layer), bf16)
        maps = {k: v[:, :valid].cpu() for k, v in maps.items()}
        for k in trained:
            per_seed[k].append(spearman(trained[k], maps[k]))
        if not shown or (shown["gradcam"].max() == 0 and maps["gradcam"].max() > 0):
            shown = maps
    means = {k: (float(np.mean([v for v in vs if math.isfinite(v)])) if any(map(math.isfinite, vs)) else None)
             for k, vs in per_seed.items()}  # fmt: skip
    constant = {k: sum(not math.isfinite(v) for v in vs) for k, vs in per_seed.items()}
    return means, constant, shown


def layer_of(copy_: nn.Module, original: nn.Module, layer: nn.Module) -> nn.Module:
    """The module of `copy_` that sits where `layer` sits in `original`."""
    name = next(n for n, m in original.named_modules() if m is layer)
    return dict(copy_.named_modules())[name]


def explain_pair(spec: PairSpec, model: nn.Module, frontend, info: ModelInfo, layer: nn.Module, args):
    """Align, featurise, mask, attribute, score and perturb one pair.

    Returns:
        (PairResult, PairMaps).
    """
    t0 = time.monotonic()
    window_s = frontend.num_samples(info.num_frames) / frontend.sample_rate
    real, fake = load_pair(spec, args.start_s + window_s + args.max_lag_s + 0.25)
    device = next(model.parameters()).device
    p = pair_inputs(real, fake, frontend, info, args, device)
    valid, x_real, x_fake, bf16 = p["frames"], p["x_real"], p["x_fake"], info.bf16
    smooth = {k: getattr(args, k) for k in ("time_size", "freq_size", "time_var", "freq_var")}
    rel, mask = ground_truth_mask(p["mag_real"], p["mag_fake"], args.mask_quantile, args.eps, **smooth)
    pred_real, pred_fake = predict(model, x_real, bf16), predict(model, x_fake, bf16)
    maps: dict[str, dict[str, torch.Tensor]] = {}
    agree: dict[str, dict[str, Agreement]] = {}
    for tname, target in (("spoof", corpora.LABEL_SPOOF), ("predicted", pred_fake.pred)):
        if tname == "predicted" and target == corpora.LABEL_SPOOF:  # the same maps: no second backward pass
            maps[tname], agree[tname] = maps["spoof"], agree["spoof"]
            continue
        maps[tname] = {k: v[:, :valid].cpu() for k, v in attribution_maps(model, x_fake, target, layer, bf16).items()}
        agree[tname] = {k: Agreement(**agreement(v, mask, args.map_quantile)) for k, v in maps[tname].items()}
    floor = random_floor(mask, args.random_seeds, args.map_quantile)
    sanity, constant, maps_random = sanity_check(model, x_fake, layer, maps["spoof"], args.reinit_seeds, valid, bf16)
    faith = None
    if args.faith_ks:
        g = torch.Generator().manual_seed(int(hashlib.sha256(spec.pair_id.encode()).hexdigest()[:8], 16))
        rankings = {**{k: maps["spoof"][k] for k in ("gradcam", "ixg", "ixg_abs")}, "ground_truth": rel,
                    "random": torch.rand(rel.shape, generator=g, dtype=torch.float64)}  # fmt: skip
        ks = tuple(args.faith_ks)
        faith = Faithfulness(
            list(ks), pred_fake.score, pred_real.score,
            perturbation_curves(model, x_fake, x_real, rankings, ks, valid, bf16),
            perturbation_curves(model, x_real, x_fake, rankings, ks, valid, bf16),
        )  # fmt: skip
    top = {k: binarise_top(maps["spoof"][k], args.map_quantile) for k in ("gradcam", "ixg_abs")}
    x_valid = x_fake[0, 0, :, :valid].cpu()
    result = PairResult(
        pair_id=spec.pair_id, name=spec.name, vocoder=spec.vocoder, source=spec.source, speaker=spec.speaker,
        lag=p["lag"], start_s=p["start_s"], seconds=p["seconds"], frames=valid, mask_pixels=int(mask.sum()),
        mask_quantile=args.mask_quantile, pred_real=pred_real, pred_fake=pred_fake, agreement=agree,
        floor=Agreement(**{k: v["mean"] for k, v in floor.items()}),
        floor_std=Agreement(**{k: v["std"] for k, v in floor.items()}),
        sanity=sanity, sanity_seeds=args.reinit_seeds, sanity_constant=constant, faithfulness=faith,
        level_profile={"mask": level_profile(mask, p["mag_real"]),
                       **{k: level_profile(top[k], p["mag_real"]) for k in top}},
        vs_input={k: spearman(maps["spoof"][k], x_valid) for k in ("gradcam", "ixg_abs")},
        between_maps={"spearman": spearman(maps["spoof"]["gradcam"], maps["spoof"]["ixg_abs"]),
                      "iou_top": float((top["gradcam"] & top["ixg_abs"]).sum() / (top["gradcam"] | top["ixg_abs"]).sum())},
        compute_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    return result, PairMaps(p["mag_real"], p["mag_fake"], rel, mask, maps, maps_random)


# ----------------------------------------------------------------------------- numbers over pairs

TARGETS, METHODS = ("spoof", "predicted"), ("gradcam", "ixg", "ixg_abs")
N_BOOT = 2000


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean and percentile-bootstrap 95 % confidence interval of the mean: {"mean", "ci": [lo, hi], "n"}.

    Resamples pairs with replacement (`n_boot` times, a fixed seed: the same numbers every run). None values
    (an undefined correlation) are left out and counted in n only when present.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    if v.size == 1:
        return {"mean": float(v[0]), "ci": [float(v[0]), float(v[0])], "n": 1}
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return {"mean": float(v.mean()), "ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": int(v.size)}  # fmt: skip


def paired_vs(values, baseline) -> dict:
    """`bootstrap_ci` of the per-pair differences value - baseline, and the share of pairs above the baseline."""
    d = [a - b for a, b in zip(values, baseline) if a is not None and b is not None]
    out = bootstrap_ci(d)
    out["share_above"] = float(np.mean([x > 0 for x in d])) if d else None
    return out


def detection(results: list[PairResult]) -> dict:
    """How well the model tells the two sides of the pairs apart: EER (%) between the real sides (bona fide) and
    the vocoded sides (spoof), mean P(bona fide) of each, share of vocoded sides called spoof."""
    real = np.array([r.pred_real.score for r in results])
    fake = np.array([r.pred_fake.score for r in results])
    try:
        eer = 100 * metrics.compute_eer(real, fake)[0]
    except ValueError:  # too few or constant scores for an EER
        eer = None
    return {"eer": eer, "p_bonafide_real": float(np.mean([r.pred_real.p_bonafide for r in results])),
            "p_bonafide_fake": float(np.mean([r.pred_fake.p_bonafide for r in results])),
            "fake_called_spoof": float(np.mean([r.pred_fake.pred == corpora.LABEL_SPOOF for r in results])),
            "real_called_bonafide": float(np.mean([r.pred_real.pred == corpora.LABEL_BONAFIDE for r in results]))}  # fmt: skip


def summarise_pairs(results: list[PairResult]) -> dict:
    """The numbers over pairs, per vocoder: detection, agreement (mean, CI, paired difference to the random floor,
    share of pairs above it), the floor, the sanity check, faithfulness curves and AOPC (vs random too)."""
    out = {"n_pairs": len(results), "vocoders": {}}
    for vocoder in dict.fromkeys(r.vocoder for r in results):
        rs = [r for r in results if r.vocoder == vocoder]
        v = {"n": len(rs), "detection": detection(rs), "agreement": {}, "floor": {}, "sanity": {}}
        for m in METRICS:
            v["floor"][m] = bootstrap_ci([getattr(r.floor, m) for r in rs])
        for t in TARGETS:
            v["agreement"][t] = {}
            for method in METHODS:
                per = {}
                for m in METRICS:
                    vals = [getattr(r.agreement[t][method], m) for r in rs]
                    per[m] = bootstrap_ci(vals)
                    per[m]["vs_floor"] = paired_vs(vals, [getattr(r.floor, m) for r in rs])
                v["agreement"][t][method] = per
        for method in METHODS:
            v["sanity"][method] = bootstrap_ci([r.sanity.get(method) for r in rs])
        faith = [r.faithfulness for r in rs if r.faithfulness is not None]
        if faith:
            ks = faith[0].ks
            v["faithfulness"] = {"ks": ks}
            for direction in ("restore", "insert"):
                per = {}
                for ranking in FAITH_RANKINGS:
                    curves = np.array([getattr(f, direction)[ranking] for f in faith])  # (pairs, ks)
                    areas = [f.aopc(direction, ranking) for f in faith]
                    per[ranking] = {
                        "curve": [bootstrap_ci(curves[:, j]) for j in range(len(ks))],
                        "aopc": bootstrap_ci(areas),
                        "aopc_vs_random": paired_vs(areas, [f.aopc(direction, "random") for f in faith]),
                    }
                start = [f.start_fake if direction == "restore" else f.start_real for f in faith]
                v["faithfulness"][direction] = {"start": bootstrap_ci(start), "rankings": per}
        out["vocoders"][vocoder] = v
    return out


def fmt_ci(s: dict, digits: int = 3, pct: bool = False) -> str:
    """'0.123 [0.100, 0.150]' (or 'n/a')."""
    if s["mean"] is None:
        return "n/a"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
    return f"{f(s['mean'])} [{f(s['ci'][0])}, {f(s['ci'][1])}]"


def format_summary(summary: dict) -> str:
    """The printed summary: per vocoder, detection, agreement against the floor, sanity, faithfulness."""
    lines = []
    for vocoder, v in summary["vocoders"].items():
        d = v["detection"]
        eer = "n/a" if d["eer"] is None else f"{d['eer']:.2f} %"
        lines += [f"== {vocoder}: {v['n']} pair(s); detection EER real vs vocoded {eer}; P(bona fide) real "
                  f"{d['p_bonafide_real']:.3f}, vocoded {d['p_bonafide_fake']:.3f}; vocoded called spoof "
                  f"{100 * d['fake_called_spoof']:.0f} %",  # fmt: skip
                  f"{'target':<10}{'map':<9}{'IoU (95 % CI)':>26}{'IoU - floor':>26}{'> floor':>8}"
                  f"{'rank acc. (95 % CI)':>26}{'rank - floor':>26}{'> floor':>8}"]  # fmt: skip
        for t, per_t in v["agreement"].items():
            for method, per in per_t.items():
                cells = ""
                for m in ("iou", "rank_accuracy"):
                    vs = per[m]["vs_floor"]
                    share = "n/a" if vs["share_above"] is None else f"{100 * vs['share_above']:.0f}%"
                    cells += f"{fmt_ci(per[m]):>26}{fmt_ci(vs):>26}{share:>8}"
                lines.append(f"{t:<10}{method:<9}{cells}")
        lines.append(
            f"{'-':<10}{'random':<9}{fmt_ci(v['floor']['iou']):>26}{'':>34}{fmt_ci(v['floor']['rank_accuracy']):>26}"
        )
        lines.append("sanity, Spearman(trained map, re-initialised model's map): "
                     + ", ".join(f"{k} {fmt_ci(s, 2)}" for k, s in v["sanity"].items()))  # fmt: skip
        if "faithfulness" in v:
            f = v["faithfulness"]
            lines.append(f"faithfulness, AOPC of the bona fide score over k = 0, {', '.join(map(str, f['ks']))} % "
                         "(higher: the pixels ranked first carry more of the decision)")  # fmt: skip
            lines.append(f"  {'ranking':<14}{'restore: real into vocoded':>28}{'vs random':>26}{'insert: vocoded into real':>28}"
                         f"{'vs random':>26}")  # fmt: skip
            for k in FAITH_RANKINGS:
                cells = ""
                for direction in ("restore", "insert"):
                    per = f[direction]["rankings"][k]
                    cells += (
                        f"{fmt_ci(per['aopc'], 2):>28}"
                        + f"{'' if k == 'random' else fmt_ci(per['aopc_vs_random'], 2):>26}"
                    )
                lines.append(f"  {k:<14}{cells}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures over pairs

RANKING_STYLE = {"gradcam": ("Grad-CAM", "tab:orange"), "ixg": ("x*grad", "tab:blue"),
                 "ixg_abs": ("|x*grad|", "tab:cyan"), "ground_truth": ("ground truth (Eq. 2)", "tab:green"),
                 "random": ("random", "0.5")}  # fmt: skip


def plot_agreement_summary(path: Path, results: list[PairResult], summary: dict) -> None:
    """Per-pair IoU and rank accuracy of each map (target spoof) against each pair's random floor, per vocoder."""
    from matplotlib.figure import Figure

    vocoders = list(summary["vocoders"])
    fig = Figure(figsize=(4.2 * len(vocoders) + 1, 7), layout="constrained")
    axes = fig.subplots(2, len(vocoders), squeeze=False)
    rng = np.random.default_rng(0)
    for col, vocoder in enumerate(vocoders):
        rs = [r for r in results if r.vocoder == vocoder]
        for row, (m, label) in enumerate((("iou", "IoU with the mask"), ("rank_accuracy", "rank accuracy"))):
            ax = axes[row, col]
            columns = [("random", [getattr(r.floor, m) for r in rs], "0.55")]
            columns += [(RANKING_STYLE[k][0], [getattr(r.agreement["spoof"][k], m) for r in rs], RANKING_STYLE[k][1])
                        for k in METHODS]  # fmt: skip
            for i, (_, vals, colour) in enumerate(columns):
                ax.scatter(i + rng.uniform(-0.18, 0.18, len(vals)), vals, s=6, alpha=0.45, color=colour, lw=0)
                ax.boxplot([vals], positions=[i], widths=0.5, showfliers=False, medianprops={"color": "k"})
                s = bootstrap_ci(vals)
                ax.errorbar(i + 0.32, s["mean"], yerr=[[s["mean"] - s["ci"][0]], [s["ci"][1] - s["mean"]]], fmt="D",
                            color="k", ms=4, capsize=3)  # fmt: skip
            ax.set_xticks(range(len(columns)), [c[0] for c in columns], fontsize=8)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, axis="y")
            d = summary["vocoders"][vocoder]["detection"]
            eer = "n/a" if d["eer"] is None else f"{d['eer']:.1f} %"
            ax.set_title(f"{vocoder}: {len(rs)} pairs, detection EER {eer}" if row == 0 else "", fontsize=9)
    fig.suptitle("Agreement with the ground-truth mask, target spoof (dots: pairs; box: quartiles; diamond: mean and "
                 "bootstrap 95 % CI)", fontsize=10)  # fmt: skip
    with cli.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)


def plot_faithfulness_summary(path: Path, summary: dict) -> None:
    """Mean bona fide score against k % swapped pixels, per ranking, with its bootstrap 95 % band."""
    from matplotlib.figure import Figure

    vocoders = [v for v, s in summary["vocoders"].items() if "faithfulness" in s]
    if not vocoders:
        return
    fig = Figure(figsize=(4.6 * len(vocoders) + 1, 7.5), layout="constrained")
    axes = fig.subplots(2, len(vocoders), squeeze=False)
    for col, vocoder in enumerate(vocoders):
        f = summary["vocoders"][vocoder]["faithfulness"]
        ks = [0, *f["ks"]]
        for row, (direction, title) in enumerate((("restore", "real pixels put into the vocoded input"),
                                                  ("insert", "vocoded pixels put into the real input"))):  # fmt: skip
            ax = axes[row, col]
            start = f[direction]["start"]["mean"]
            for ranking, per in f[direction]["rankings"].items():
                name, colour = RANKING_STYLE[ranking]
                mean = [start] + [c["mean"] for c in per["curve"]]
                lo = [start] + [c["ci"][0] for c in per["curve"]]
                hi = [start] + [c["ci"][1] for c in per["curve"]]
                ax.plot(ks, mean, "o-", ms=3, color=colour, label=f"{name} (AOPC {per['aopc']['mean']:+.2f})")
                ax.fill_between(ks, lo, hi, color=colour, alpha=0.15, lw=0)
            ax.set(xlabel="k: % of explained pixels swapped (in ranking order)",
                   ylabel="bona fide score")  # fmt: skip
            ax.set_title(f"{vocoder}: {title}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle("Faithfulness: does the decision move sooner where a map points than at random? (mean over pairs, "
                 "bootstrap 95 % bands)", fontsize=10)  # fmt: skip
    with cli.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)


# ----------------------------------------------------------------------------- the run: many pairs, resumable


def run_settings(info: ModelInfo, layer_name: str, args) -> dict:
    """What a pair's numbers depend on: a rerun into the same --out with other settings is refused."""
    keys = ("mask_quantile", "time_size", "freq_size", "time_var", "freq_var", "eps", "map_quantile", "random_seeds",
            "reinit_seeds", "faith_ks", "start_s", "align", "max_lag_s")  # fmt: skip
    return {"checkpoint_sha256": info.sha256, "random_model_seed": None if info.trained else args.seed,
            "frontend": info.frontend, "num_frames": info.num_frames, "pad": info.pad, "bf16": info.bf16,
            "layer": layer_name, **{k: getattr(args, k) for k in keys}}  # fmt: skip


def explain_pairs(specs: list[PairSpec], model, frontend, info: ModelInfo, layer, layer_name: str, args, out: Path):
    """Explain every pair, writing each result as it finishes; pairs already in `out/pairs` are skipped.

    A pair that fails (unreadable audio, an optional vocoder missing, ...) is named, listed in out/failed.json and
    skipped; the run goes on (`main` then exits 1 unless --skip-bad). A single pair's failure is raised. Returns (the results of all `specs` present in out/pairs, in order; the failures).
    """
    pairs_dir = out / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    settings = run_settings(info, layer_name, args)
    run_file = out / "run.json"
    if run_file.is_file():
        old = json.loads(run_file.read_text())
        differ = [k for k in settings if old.get(k) != settings[k]]
        if differ:
            raise ValueError(f"--out {out} holds pairs explained with other settings ({', '.join(differ)}): delete "
                             "its pairs/ or choose another --out")  # fmt: skip
    with cli.atomic_write(run_file) as f:
        json.dump(settings, f, indent=1)
    done = {p.stem for p in pairs_dir.glob("*.json")}
    todo = [s for s in specs if s.pair_id not in done]
    if len(todo) < len(specs):
        print(f"resuming {out}: {len(specs) - len(todo):,} of {len(specs):,} pairs already explained, "
              f"{len(todo):,} to go")  # fmt: skip
    figure_ids = {s.pair_id for s in specs[: args.figures]}
    bar = cli.Progress(len(todo), "explain", unit="pairs", every=0 if len(todo) <= 20 else 10.0)
    failed = []
    for spec in todo:
        try:
            res, pm = explain_pair(spec, model, frontend, info, layer, args)
        except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
            if len(specs) == 1:  # one pair asked for: its error is the run's (one line), nothing to go on with
                raise
            failed.append({"pair": spec.pair_id, "real": spec.real, "error": str(e)})
            print(f"pair {spec.pair_id} failed, skipped: {e}", file=sys.stderr)
            bar.update(1)
            continue
        with cli.atomic_write(pairs_dir / f"{spec.pair_id}.json") as f:
            f.write(res.to_json())
        if spec.pair_id in figure_ids:
            plot_pair(out / f"pair_{spec.pair_id}.png", res, pm, frontend)
            plot_maps(out / f"maps_{spec.pair_id}.png", res, pm, frontend, args.map_quantile)
            if pm.maps_random:  # (--reinit-seeds 0: no sanity check, no figure)
                plot_sanity(out / f"sanity_{spec.pair_id}.png", res, pm, frontend)
        bar.update(1, extra=f"  {spec.pair_id}: P(bona fide) real {res.pred_real.p_bonafide:.2f}, vocoded "
                            f"{res.pred_fake.p_bonafide:.2f}; {res.compute_s:.1f} s")  # fmt: skip
    bar.close()
    with cli.atomic_write(out / "failed.json") as f:
        json.dump(failed, f, indent=1)
    results = [PairResult.from_json((pairs_dir / f"{s.pair_id}.json").read_text())
               for s in specs if (pairs_dir / f"{s.pair_id}.json").is_file()]  # fmt: skip
    return results, failed


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Pair sources: exactly one of --utt, --real, --split, --real-dir, or --vocv4-root "
                                       "alone.")  # fmt: skip
    g = p.add_argument_group("pairs")
    g.add_argument("--utt", help="one ASVspoof 2019 LA utterance (any split under --data-root), e.g. LA_T_4179989")
    g.add_argument("--real", help="one bona fide audio file")
    g.add_argument("--fake", nargs="+", default=[], help="vocoded copies of --real (any number)")
    g.add_argument("--split", choices=corpora.SPLITS, help="every bona fide file of this LA split (with --vocode)")
    g.add_argument("--real-dir", help="every .flac/.wav under this folder as a bona fide recording (with --vocode)")
    g.add_argument("--vocv4-root", help="extracted vocv4 voc.v4 folder (protocol.txt, wav/): with --utt its copies of "
                                        "that utterance, alone every pair it holds")  # fmt: skip
    g.add_argument("--vocoders", nargs="+", default=None,
                   help="vocv4 vocoders to use (default: hifigan waveglow with --utt, all alone)")  # fmt: skip
    g.add_argument("--vocode", nargs="*", choices=sorted(vocoders.VOCODERS), default=None,
                   help="local vocoders making the fake side (default griffinlim melgl when no vocv4 / --fake; "
                        "world and mlsa need pyworld / pysptk)")  # fmt: skip
    g.add_argument("--speakers", nargs="+", help="only these speakers (LA_0079 ...; from the protocol or file names)")
    g.add_argument("--limit", type=int, default=0, help="only the first N bona fide recordings (0: all)")
    g.add_argument("--max-lag-s", type=float, default=0.1, help="largest offset searched by cross-correlation (s)")
    g.add_argument("--align", choices=ALIGN_METHODS, default="envelope",
                   help="cross-correlate 10 ms RMS envelopes (robust to re-synthesised phase) or raw waveforms")  # fmt: skip
    g.add_argument("--start-s", type=float, default=0.0, help="start of the model's input window in the pair (s)")
    g = p.add_argument_group("model, attributions, faithfulness")
    g.add_argument("--ckpt", help="train.py checkpoint (default: the newest runs/*/best.pt)")
    g.add_argument("--random-model", action="store_true", help="explain a randomly initialised LCNN (a baseline)")
    g.add_argument("--layer", default="features.mfm27",
                   help="Grad-CAM layer (default features.mfm27: the last MFM, before the last max-pool)")  # fmt: skip
    g.add_argument("--reinit-seeds", type=int, default=5, help="re-initialised models in the sanity check")
    g.add_argument("--random-seeds", type=int, default=20, help="random maps averaged for the floor")
    g.add_argument("--map-quantile", type=float, default=0.95, help="maps binarised above this quantile (top 5 %%)")
    g.add_argument("--faith-ks", nargs="*", type=float, default=list(FAITH_KS),
                   help="faithfulness: %% of pixels swapped (default 1 2 5 10 15 20; none: no faithfulness test)")  # fmt: skip
    g = p.add_argument_group("ground-truth mask (Eq. 2 of arXiv:2506.03425; Gaussian of a published reproduction)")
    g.add_argument("--mask-quantile", type=float, default=MASK_DEFAULTS["quantile"], help="paper: 0.95 (top 5 %%)")
    g.add_argument("--time-size", type=int, default=MASK_DEFAULTS["time_size"], help="Gaussian taps in time (3)")
    g.add_argument("--freq-size", type=int, default=MASK_DEFAULTS["freq_size"], help="Gaussian taps in frequency (11)")
    g.add_argument("--time-var", type=float, default=MASK_DEFAULTS["time_var"], help="variance in frames^2 (3)")
    g.add_argument("--freq-var", type=float, default=MASK_DEFAULTS["freq_var"], help="variance in bins^2 (5)")
    g.add_argument("--eps", type=float, default=MASK_DEFAULTS["eps"], help="denominator floor (1e-8)")
    p.add_argument("--out", help="output folder (default explain_out/<utt, file, split or folder>/)")
    p.add_argument("--figures", type=int, default=3, help="draw pair/maps/sanity figures of the first N pairs")
    cli.add_common_args(p)
    data.add_input_args(p)
    model_lib.add_model_args(p)
    p.set_defaults(frontend=None, num_frames=None, pad=None)  # None: as the checkpoint says
    return p


def check_flags(args) -> None:
    """Impossible values stop the run before any work, naming the flag."""
    for flag in ("mask_quantile", "map_quantile"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1), got {getattr(args, flag)}")
    for flag, low in (("reinit_seeds", 0), ("random_seeds", 1), ("limit", 0), ("figures", 0)):
        if getattr(args, flag) < low:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least {low}, got {getattr(args, flag)}")
    if any(not 0 < k <= 100 for k in args.faith_ks):
        raise ValueError(f"--faith-ks must be percentages in (0, 100], got {args.faith_ks}")
    if args.max_lag_s < 0 or args.start_s < 0:
        raise ValueError("--max-lag-s and --start-s must be 0 or more")
    for flag in ("time_size", "freq_size"):
        if getattr(args, flag) < 1 or getattr(args, flag) % 2 == 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be an odd number of taps, got {getattr(args, flag)}")
    for flag in ("time_var", "freq_var", "eps"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.ckpt and args.random_model:
        raise ValueError("--random-model explains an untrained LCNN: give it or --ckpt, not both")
    if args.vocoders is None:
        args.vocoders = ["hifigan", "waveglow"] if args.utt else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_flags(args)
    device = cli.resolve_device(args.device)
    model_lib.configure_backend(device)
    model, info = load_model(args, device)
    frontend = data.make_frontend(info.frontend).to(device)
    layer = find_layer(model, args.layer)
    layer_name = next(n for n, m in model.named_modules() if m is layer)
    specs, stem = collect_pairs(args, info)
    out = cli.check_output_path(Path(args.out) if args.out else Path("explain_out") / stem, "--out", folder=True)
    print(f"{len(specs):,} pair(s): {len({s.name for s in specs}):,} bona fide recording(s) x "
          f"{', '.join(dict.fromkeys(s.vocoder for s in specs)) if len(specs) < 50 else 'vocoders'}; output {out}")  # fmt: skip
    results, failed = explain_pairs(specs, model, frontend, info, layer, layer_name, args, out)
    if not results:
        raise RuntimeError(f"no pair could be explained ({len(failed)} failed; first: {failed[0]['error']})")
    summary = summarise_pairs(results)
    summary.update(model=dataclasses.asdict(info), layer=layer_name, settings=run_settings(info, layer_name, args),
                   failed=failed, mask={"equation": "Eq. 2 of arXiv:2506.03425",
                   "gaussian_source": "published reproduction make_masks_min_asv19orig.py (3 x 11, variances 3 and 5)",
                   "grid": f"{info.frontend} front-end of the model (magnitude = sqrt of power)"},
                   seconds_per_pair=bootstrap_ci([r.compute_s for r in results]))  # fmt: skip
    with cli.atomic_write(out / "summary.json") as f:  # a killed run never leaves half a summary
        f.write(json.dumps(finite_or_none(summary), indent=1, allow_nan=False) + "\n")
    plot_agreement_summary(out / "summary_agreement.png", results, summary)
    plot_faithfulness_summary(out / "summary_faithfulness.png", summary)
    print()
    print(format_summary(summary))
    if not info.trained:
        print("WARNING: the model is randomly initialised: these maps explain nothing.", file=sys.stderr)
    print(f"{len(results):,} pair(s) in {out}/pairs; summary.json, summary_agreement.png, summary_faithfulness.png; "
          f"{summary['seconds_per_pair']['mean']:.1f} s a pair")  # fmt: skip
    if failed:  # the summary covers the others; the exit status says that some were left out (the bad-file policy)
        text = (f"{len(failed)} pair(s) failed and were skipped (listed in {out / 'failed.json'}); first: "
                f"{failed[0]['pair']}: {failed[0]['error']}")  # fmt: skip
        if not args.skip_bad:
            print(f"error: {text}; pass --skip-bad to accept a run without them", file=sys.stderr)
            return 1
        print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run_cli(main)
