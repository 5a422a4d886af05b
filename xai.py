"""xai.py -- the explanation methods for one real/vocoded pair: no command line, no files, no statistics over pairs.

Imports only torch, numpy and model.py (`classify`, `bonafide_score`); explain.py runs these on pairs and report.py
summarises them. Inside, in pipeline order:

  alignment      ALIGN_METHODS, rms_envelope, cross_correlation_lag, estimate_lag, align_pair, envelope_correlation,
                 IDENTICAL_MAX_DIFF, UNRELATED_MAX_CORR, pair_problem (identical, unrelated, offset beyond the search?)
  Eq. 2 mask     PAPER_GRID, MASK_DEFAULTS, mask_kernel (the reproduction's Gaussian scaled to a front-end's grid),
                 gaussian_kernel1d, mirror_pad, smooth_gaussian, relative_difference, ranking, binarise_top,
                 ground_truth_mask
  attributions   find_layer, gradcam_lowres, minmax_normalise, upsample, gradcam, input_gradient, input_x_gradient,
                 attribution_maps
  agreement      METRICS, agreement, level_profile, random_map, random_floor, rankdata, spearman
  sanity         reinitialise, randomised_copy (every layer at once), cascade_stages, cascading_randomisation (top
                 layer first, Adebayo et al. 2018), layer_of, sanity_check
  faithfulness   FAITH_KS, FAITH_RANKINGS, BOUND_RANKINGS, DIRECTIONS, perturbation_curves, curve_sign,
                 first_order_effect, aopc, normalised_aopc

The maps, the sanity check and the faithfulness curves all explain one quantity: the raw logit of a target class
(`target`, 0 spoof / 1 bona fide), as pytorch-grad-cam's ClassifierOutputTarget and Captum's `target` do.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import model as model_lib

# ----------------------------------------------------------------------------- alignment

# "start": the copy starts where the real starts (vocv4's copies: NII's vocoders keep the start and add up to one hop
# at the end), so lag 0; the other two estimate the lag by cross-correlation (local vocoders: WORLD really shifts).
ALIGN_METHODS = ("envelope", "waveform", "start")


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
    one). "waveform" cross-correlates the samples themselves (exact for copies that keep the phase). "start"
    estimates with the envelope too (the estimate is then a diagnostic; `align_pair` applies lag 0).

    Args:
        real, fake: (N1,) and (N2,) waveforms. max_lag: largest |lag| searched.
    """
    if method == "waveform":
        return cross_correlation_lag(real, fake, max_lag)
    if method in ("envelope", "start"):
        return cross_correlation_lag(rms_envelope(real), rms_envelope(fake), max_lag)
    raise ValueError(f"--align must be one of {', '.join(ALIGN_METHODS)}, got {method!r}")


def align_pair(
    real: torch.Tensor, fake: torch.Tensor, max_lag: int, method: str = "envelope"
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Shift the fake onto the real (the real is the time reference) and trim the longer one at the end.

    With method "start" the fake is known to start with the real (vocv4): lag 0, only the end is trimmed, as NII's
    own code cuts a copy to the bona fide length. The cross-correlation estimate is still returned, as a diagnostic.

    Returns:
        (real, fake) of equal length, the lag applied, and the lag estimated (`estimate_lag`; equal to the applied
        one unless method is "start").
    """
    estimate = estimate_lag(real, fake, max_lag, method)
    lag = 0 if method == "start" else estimate
    fake = fake[lag:] if lag > 0 else F.pad(fake, (-lag, 0))
    n = min(real.numel(), fake.numel())
    return real[:n], fake[:n], lag, estimate


def envelope_correlation(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Pearson correlation of the 10 ms RMS envelopes of two aligned, equally long waveforms (1: same loudness
    contour; about 0 for unrelated recordings). NaN when an envelope is constant (silence)."""
    a, b = rms_envelope(real), rms_envelope(fake)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


# Thresholds of `pair_problem`. Measured on the demo tree's train files: Griffin-Lim and melgl copies have envelope
# correlations 0.97-0.999 with their real, NII's neural copy in ../shared/data 0.994; two different LA utterances
# (28 pairs of 8 files) -0.32 to 0.59 at their best lag -- silence at both ends is shared by all LA files.
IDENTICAL_MAX_DIFF = 1e-4  # max |real - fake| at or below this: the same recording (16-bit rounding is 3e-5)
UNRELATED_MAX_CORR = 0.8  # envelope correlation at or below this: not a copy of the real


def pair_problem(real: torch.Tensor, fake: torch.Tensor, estimate: int, max_lag: int) -> str | None:
    """What makes an aligned pair not a real/vocoded pair, or None. The measures are named in the message.

    Args:
        real, fake: the aligned pair (`align_pair`), equal length.
        estimate: the cross-correlation lag estimate; max_lag: the search limit (samples).
    """
    diff = float((real - fake).abs().max()) if real.numel() else 0.0
    if diff <= IDENTICAL_MAX_DIFF:
        return (f"the fake is the real recording (max |real - fake| = {diff:.1e} <= {IDENTICAL_MAX_DIFF:g}): nothing "
                "was vocoded, there is nothing to explain")  # fmt: skip
    if max_lag > 0 and abs(estimate) >= max_lag:
        return (f"the envelope cross-correlation peaks at the search limit (lag {estimate:+d} samples, --max-lag-s "
                f"allows {max_lag}): the fake is offset by more than the search or is another recording; cut it to "
                "start with the real, or raise --max-lag-s")  # fmt: skip
    corr = envelope_correlation(real, fake)
    if not corr > UNRELATED_MAX_CORR:
        return (f"the fake does not follow the real (normalised cross-correlation of 10 ms envelopes {corr:.2f} <= "
                f"{UNRELATED_MAX_CORR}): another recording, not a vocoded copy of this one")  # fmt: skip
    return None


# ----------------------------------------------------------------------------- ground-truth mask (arXiv:2506.03425)

# Eq. 2 of arXiv:2506.03425: mask = top (1 - q) of |G(M_fake) - G(M_real)| / (G(M_real) + eps). The smoothing G
# follows a published reproduction of the paper (`make_masks_min_asv19orig.py`): separable Gaussian, 3 frames x
# 11 bins, variances 3 (time) and 5 (frequency), kernels truncated at those sizes and normalised, edges mirrored
# (scipy.ndimage 'reflect'), eps 1e-8 on linear magnitudes -- on its own grid, a Hann STFT of 1024 points with hop
# 256 at 16 kHz (16 ms x 15.6 Hz pixels), where the kernel spans 48 ms x 172 Hz.
PAPER_GRID = {"hop_s": 256 / 16000, "bin_hz": 16000 / 1024, "time_size": 3, "freq_size": 11, "time_var": 3.0,
              "freq_var": 5.0}  # fmt: skip
MASK_DEFAULTS = {"quantile": 0.95, "eps": 1e-8}


def mask_kernel(hop_s: float, bin_hz: float) -> dict[str, float]:
    """The reproduction's Gaussian with the same extent in seconds and hertz on another grid.

    The mask is computed on the model's own grid (so mask and maps compare pixel for pixel); only the kernel is
    rescaled: the standard deviations and the truncation radii scale by paper pixel / our pixel. On the STC STFT
    (Blackman 1724 / hop 130: 8.1 ms x 9.3 Hz pixels) that is 5 frames x 17 bins, variances 11.6 and 14.2, instead of
    3 x 11 with variances 3 and 5, which would span only 24 ms x 102 Hz. Where our pixel is wider than the paper's
    whole kernel (20 mel bands, ~300 Hz apart) the kernel shrinks to one tap on that axis.

    Args:
        hop_s: frame hop of the grid (s). bin_hz: spacing of its frequency bins (Hz; the median spacing for mel).
    Returns:
        {"time_size", "freq_size", "time_var", "freq_var"}: odd tap counts, variances in pixels^2.
    """
    out = {}
    for axis, ratio in (("time", PAPER_GRID["hop_s"] / hop_s), ("freq", PAPER_GRID["bin_hz"] / bin_hz)):
        radius = round((PAPER_GRID[f"{axis}_size"] // 2) * ratio)
        out[f"{axis}_size"] = 2 * radius + 1
        out[f"{axis}_var"] = PAPER_GRID[f"{axis}_var"] * ratio**2
    return out


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
    time_size: int = PAPER_GRID["time_size"],
    freq_size: int = PAPER_GRID["freq_size"],
    time_var: float = PAPER_GRID["time_var"],
    freq_var: float = PAPER_GRID["freq_var"],
) -> torch.Tensor:
    """G of Eq. 2: separable Gaussian smoothing of a (F, T) map, time then frequency (conv2d, mirrored edges).
    The defaults are the reproduction's kernel in pixels of its own grid; `mask_kernel` gives it for another."""
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


def ranking(values: torch.Tensor) -> torch.Tensor:
    """Pixel indices of a map, highest value first, ties in a fixed pseudo-random order (seed 0, the same for every
    map of that size). Not by position: the pixels are flattened frequency-major, so a position tie-break would hand
    an all-zero (or partly zero) Grad-CAM's top pixels to the lowest bins -- where WORLD's mask lies. With random
    ties a constant map ranks like a random map, which is what it says."""
    flat = values.detach().flatten().cpu()
    perm = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))
    return perm[torch.argsort(flat[perm], descending=True, stable=True)]


def binarise_top(values: torch.Tensor, quantile: float = 0.95) -> torch.Tensor:
    """Boolean map of exactly k = round((1 - quantile) * N) largest values, ties in `ranking`'s fixed random order.

    A deliberate difference from the reproduction, which keeps the values above np.quantile(values, 0.95): that
    selects the same pixels when the values are distinct, but with ties at the threshold it keeps all of them or
    none (a Grad-CAM map whose 95 % quantile falls in its ReLU zeros would keep every pixel). Taking exactly k keeps
    the mask and every map the same size, so precision, recall and rank accuracy stay comparable.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    flat = values.flatten()
    k = max(1, round((1 - quantile) * flat.numel()))
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[ranking(flat)[:k]] = True
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
        target: class index (0 spoof, 1 bona fide); the raw logit is differentiated, as pytorch-grad-cam's
            ClassifierOutputTarget does.
        bf16: under bf16 autocast (`--precision`); the activations and gradients are then bf16, cast to float32.
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


def input_gradient(model: nn.Module, x: torch.Tensor, target: int, bf16: bool = False) -> torch.Tensor:
    """d logit_target / dx for one (1, 1, F, T) input -> (F, T)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model_lib.classify(model, x, bf16)[0, target], x)
    return grad.detach()[0, 0]


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: int, bf16: bool = False) -> torch.Tensor:
    """InputXGradient (Shrikumar et al., 2016): x * d logit_target / dx, signed. x (1, 1, F, T) -> (F, T)."""
    return x.detach()[0, 0] * input_gradient(model, x, target, bf16)


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
    top = ranking(a)[:k]
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
    """Spearman rank correlation of two equally sized maps (Pearson correlation of average ranks); NaN when a map is
    constant (an all-zero Grad-CAM): the correlation is undefined, and the caller decides how to count it."""
    ra = rankdata(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    rb = rankdata(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b)
    if ra.size != rb.size:
        raise ValueError(f"spearman needs maps of equal size, got {ra.size} and {rb.size}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


# ----------------------------------------------------------------------------- sanity: model-parameter randomisation


def reinitialise(module: nn.Module) -> None:
    """Re-initialise one module's own parameters: its `reset_parameters` (BatchNorm: weight, bias and running
    statistics), else Xavier-uniform weights and zero biases (the A-softmax weight). Uses the global generator."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for p in module.parameters(recurse=False):
        nn.init.xavier_uniform_(p) if p.dim() >= 2 else nn.init.zeros_(p)


def randomised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every layer re-initialised at once: the last stage of Adebayo et al.'s cascade
    (`cascading_randomisation`), not the whole test. Uses its own generator state; the original is untouched."""
    copy_ = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in copy_.modules():
            if any(True for _ in module.parameters(recurse=False)):
                reinitialise(module)
    return copy_.eval()


def cascade_stages(model: nn.Module) -> list[list[str]]:
    """The model's weight layers from the output down, each with the BatchNorm layers that follow it before the next
    weight layer: for the LCNN [["classifier.fc32"], ["classifier.fc29", "classifier.bn31"], ["features.conv26"],
    ["features.conv23", "features.bn25"], ..., ["features.conv1"]] (11 stages)."""
    groups: list[list[str]] = []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups[::-1]


def cascading_randomisation(model: nn.Module, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018), cascading randomisation: re-initialise the
    layers from the top (the logits) down, one stage of `cascade_stages` at a time, keeping the earlier stages
    random. Yields (the stage's first layer name, the model after that stage) -- one copy, changed in place between
    yields, so use it before asking for the next. The last stage has every layer re-initialised. The original
    model is untouched; each stage draws from seed + its index with the global generator forked."""
    copy_ = copy.deepcopy(model).eval()
    modules = dict(copy_.named_modules())
    for i, group in enumerate(cascade_stages(copy_)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            for name in group:
                reinitialise(modules[name])
        yield group[0], copy_


def layer_of(copy_: nn.Module, original: nn.Module, layer: nn.Module) -> nn.Module:
    """The module of `copy_` that sits where `layer` sits in `original`."""
    name = next(n for n, m in original.named_modules() if m is layer)
    return dict(copy_.named_modules())[name]


def sanity_check(
    model: nn.Module, x: torch.Tensor, target: int, layer: nn.Module, trained: dict[str, torch.Tensor], seeds: int,
    valid: int, bf16: bool = False, cascade_seed: int | None = 1000,
) -> tuple[dict[str, list[float | None]], dict[str, list[float | None]], list[str], dict[str, torch.Tensor]]:  # fmt: skip
    """Spearman(trained map, re-initialised model's map) for each method, target `target`.

    Two parts: `seeds` models with every layer re-initialised at once (seeds 1000, 1001, ...), and one cascade
    (`cascading_randomisation`, seed `cascade_seed`; None: skipped) with the similarity after each stage. A
    re-initialised Grad-CAM can be all zero (every weighted sum negative before the ReLU): its rank correlation is
    undefined and is returned as None; report.py counts it as rho = 0 (nothing of the trained map survives) and
    also gives the mean without it.

    Returns:
        (method -> rho per full re-initialisation, method -> rho per cascade stage, the cascade's stage names,
        the maps of the first fully re-initialised model with a non-constant Grad-CAM, for the figure).
    """

    def rho(maps: dict[str, torch.Tensor], k: str) -> float | None:
        r = spearman(trained[k], maps[k])
        return r if math.isfinite(r) else None

    def maps_of(net: nn.Module) -> dict[str, torch.Tensor]:
        maps = attribution_maps(net, x, target, layer_of(net, model, layer), bf16)
        return {k: v[:, :valid].cpu() for k, v in maps.items()}

    full: dict[str, list[float | None]] = {k: [] for k in trained}
    shown: dict[str, torch.Tensor] = {}
    for seed in range(1000, 1000 + seeds):  # away from the small seeds a training run may have started from
        maps = maps_of(randomised_copy(model, seed))
        for k in trained:
            full[k].append(rho(maps, k))
        if not shown or (shown["gradcam"].max() == 0 and maps["gradcam"].max() > 0):
            shown = maps
    cascade: dict[str, list[float | None]] = {k: [] for k in trained}
    stages: list[str] = []
    if cascade_seed is not None:
        for stage, net in cascading_randomisation(model, cascade_seed):
            maps = maps_of(net)
            stages.append(stage)
            for k in trained:
                cascade[k].append(rho(maps, k))
    return full, cascade, stages, shown


# ----------------------------------------------------------------------------- faithfulness: deletion / insertion

FAITH_KS = (2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)  # percent of the explained pixels: uniform steps (--faith-ks)
FAITH_RANKINGS = ("gradcam", "ixg", "ixg_abs", "ground_truth", "random")
# the first-order oracle and its reverse: each pixel ranked by its linearised effect on the target logit; with the
# rankings above they bound the AOPC for `normalised_aopc`
BOUND_RANKINGS = ("bound_best", "bound_worst")
DIRECTIONS = ("restore", "insert")  # restore: real pixels into the vocoded input; insert: vocoded into the real one


def perturbation_curves(
    model: nn.Module,
    x_from: torch.Tensor,
    x_to: torch.Tensor,
    rankings: dict[str, torch.Tensor],
    ks: tuple[float, ...],
    valid: int,
    target: int,
    bf16: bool = False,
    batch_size: int = 8,
) -> dict[str, list[float]]:
    """The target logit of `x_from` with its top-k % pixels of each ranking taken from `x_to`, for k in `ks`.

    Deletion / insertion in the sense of Samek et al. 2017 and Petsiuk et al. 2018, with the other recording of the
    pair as the reference instead of a blur or zeros: a pixel is replaced by what the real (or the vocoded)
    recording has there, so the input stays a spectrogram of speech. The quantity read is the one the maps explain:
    the raw logit of `target` (not the bona fide score logit_bona - logit_spoof).

    Args:
        x_from, x_to: (1, 1, F, T) model inputs of the two sides of the pair.
        rankings: name -> (F, valid) map; higher = taken first (ties in `ranking`'s fixed random order).
        ks: percentages of the F x valid explained pixels.
        valid: frames of real audio (the pixels a map covers; the rest of the input is left alone).
        target: the class whose logit is read (0 spoof, 1 bona fide).
    Returns:
        name -> one target logit per k.
    """
    n_freq, n_time = x_from.shape[-2:]
    n = n_freq * valid
    base_from = x_from[0, 0, :, :valid].reshape(-1)
    base_to = x_to[0, 0, :, :valid].reshape(-1)
    inputs, names = [], []
    for name, r in rankings.items():
        order = ranking(r.double()).to(x_from.device)
        for k in ks:
            region = base_from.clone()
            idx = order[: round(k / 100 * n)]
            region[idx] = base_to[idx]
            x = x_from[0, 0].clone()
            x[:, :valid] = region.view(n_freq, valid)
            inputs.append(x)
            names.append(name)
    values: list[float] = []
    fmt = torch.channels_last if x_from.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    with torch.no_grad():
        for b in range(0, len(inputs), batch_size):
            x = torch.stack(inputs[b : b + batch_size])[:, None].contiguous(memory_format=fmt)  # (B, 1, F, T)
            values += model_lib.classify(model, x, bf16)[:, target].float().tolist()
    out: dict[str, list[float]] = {name: [] for name in rankings}
    for name, value in zip(names, values):
        out[name].append(value)
    return out


def curve_sign(direction: str, target: int, spoof: int = 0) -> int:
    """+1 when the target logit should rise along the curve, -1 when it should fall. Restoring real pixels into the
    vocoded input removes spoof evidence (the spoof logit falls); inserting vocoded pixels into the real adds it."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    toward_spoof = direction == "insert"
    return 1 if toward_spoof == (target == spoof) else -1


def first_order_effect(grad: torch.Tensor, x_from: torch.Tensor, x_to: torch.Tensor, valid: int) -> torch.Tensor:
    """The linearised change of the target logit when each pixel of x_from is replaced by x_to's: grad * (x_to -
    x_from) over the (F, valid) explained pixels. grad (F, T) is d logit_target / dx at x_from."""
    return (grad[:, :valid] * (x_to[0, 0, :, :valid] - x_from[0, 0, :, :valid])).detach().cpu()


def aopc(ks: list[float] | tuple[float, ...], curve: list[float], start: float, sign: int) -> float:
    """Area over the perturbation curve: the trapezoidal area under the move sign * (value - start) over k in [0,
    max k] (the move is 0 at k = 0), divided by max k -- the mean move in logit units. With uniform steps this is
    Samek et al.'s (2017) AOPC up to the half weights of the two ends (which give the trapezoid its meaning when the
    steps are not uniform). Higher = the pixels ranked first carry more of the logit."""
    k = np.array([0.0, *ks], dtype=np.float64)
    if np.any(np.diff(k) <= 0):
        raise ValueError(f"faithfulness k must increase from 0, got {list(ks)}")
    moves = np.array([0.0, *(sign * (v - start) for v in curve)], dtype=np.float64)
    return float(np.sum((moves[1:] + moves[:-1]) / 2 * np.diff(k)) / k[-1])


def normalised_aopc(value: float, lower: float, upper: float) -> float | None:
    """(AOPC - lower) / (upper - lower): Edin et al.'s normalised AOPC (arXiv:2408.08137), which makes AOPCs of
    different models or inputs comparable by the range the model allows on that input. None when the range is 0."""
    return (value - lower) / (upper - lower) if upper > lower else None
