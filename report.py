"""report.py -- what explain.py measured, as typed results, numbers over many pairs, and figures. No command line.

Imports xai.py (the methods' names and the AOPC), metrics.py (the EER) and data.py (labels, atomic writes); explain.py
imports this file, never the reverse. Inside:

  results of one pair   TARGETS, METHODS, TARGET_INDEX, Prediction, Agreement, Faithfulness (AOPC and normalised AOPC
                        per ranking), PairResult (one JSON file per pair: to_json / from_json), read_pair, PairMaps
                        (the tensors for its figures), finite_or_none
  numbers over pairs    N_BOOT, bootstrap_ci, paired_vs, zero_filled, detection, summarise_sanity,
                        summarise_maps, summarise_faithfulness, summarise_pairs, fmt_ci, format_summary
  figures of one pair   FIG_DPI, to_db, plot_pair (real vs fake by eye), plot_maps (mask vs maps, binarised),
                        plot_sanity (trained vs re-initialised maps and the cascade)
  figures over pairs    RANKING_STYLE, plot_agreement_summary, plot_faithfulness_summary, plot_sanity_summary

Every number a summary shows is a mean over pairs with a percentile-bootstrap 95 % confidence interval; with one
pair there is no interval and the summary says n = 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import cli
import corpora
import metrics
import xai

TARGETS, METHODS = ("spoof", "predicted"), ("gradcam", "ixg", "ixg_abs")
TARGET_INDEX = {"spoof": corpora.LABEL_SPOOF, "bonafide": corpora.LABEL_BONAFIDE}

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
    """How a map agrees with the ground-truth mask (see `xai.agreement`)."""

    iou: float
    precision: float
    recall: float
    mass_accuracy: float
    rank_accuracy: float


@dataclass
class Faithfulness:
    """The target logit against k % of the pixels swapped, per ranking (xai.FAITH_RANKINGS + xai.BOUND_RANKINGS):
    "restore" puts real pixels into the vocoded input, "insert" vocoded pixels into the real one.

    `target` is the class whose logit the maps explain and the curves read -- the same quantity, by construction.
    """

    target: str  # "spoof" (or "bonafide")
    ks: list[float]
    start_fake: float  # the target logit of each side before any swap (k = 0)
    start_real: float
    restore: dict[str, list[float]]
    insert: dict[str, list[float]]

    def curve(self, direction: str) -> dict[str, list[float]]:
        return self.restore if direction == "restore" else self.insert

    def start(self, direction: str) -> float:
        return self.start_fake if direction == "restore" else self.start_real

    def aopc(self, direction: str, ranking: str) -> float:
        """Raw AOPC (`xai.aopc`, trapezoidal, in logit units): how far the target logit moves the expected way."""
        sign = xai.curve_sign(direction, TARGET_INDEX[self.target], corpora.LABEL_SPOOF)
        return xai.aopc(self.ks, self.curve(direction)[ranking], self.start(direction), sign)

    def bounds(self, direction: str) -> tuple[float, float]:
        """The lowest and highest AOPC of the orderings measured on this pair (the maps, the Eq. 2 ranking, random,
        and the first-order oracle and its reverse): the range the normalised AOPC is taken on."""
        values = [self.aopc(direction, r) for r in self.curve(direction)]
        return min(values), max(values)

    def naopc(self, direction: str, ranking: str) -> float | None:
        """Normalised AOPC in [0, 1] (Edin et al., arXiv:2408.08137) on this pair's `bounds`."""
        return xai.normalised_aopc(self.aopc(direction, ranking), *self.bounds(direction))


@dataclass
class PairResult:
    """Everything measured on one pair; one JSON file per pair (`to_json` / `read_pair`), read by the summary."""

    pair_id: str  # "<vocoder>__<name>"
    name: str  # the bona fide recording (utterance id or file stem)
    vocoder: str  # the vocoder, or the fake file's stem
    source: str  # where the fake came from
    speaker: str | None
    align: str  # xai.ALIGN_METHODS: "start" for vocv4 (lag 0), else the cross-correlation used
    lag: int  # samples of offset corrected
    lag_estimate: int  # the envelope cross-correlation's estimate (a diagnostic when align is "start")
    envelope_corr: float | None  # normalised correlation of the aligned pair's 10 ms envelopes (`xai.pair_problem`)
    start_s: float
    seconds: float
    frames: int  # frames explained (of real audio)
    mask_pixels: int
    mask_quantile: float
    mask_kernel: dict[str, float]  # the Gaussian G on the model's grid (xai.mask_kernel unless set by flags)
    pred_real: Prediction
    pred_fake: Prediction
    agreement: dict[str, dict[str, Agreement]]  # target ("spoof", "predicted") -> method -> agreement
    floor: Agreement  # random maps, mean over --random-seeds
    floor_std: Agreement
    sanity: dict[str, list[float | None]]  # method -> Spearman(trained, fully re-initialised) per seed; None: constant
    cascade_stages: list[str]  # the cascade's stages, top layer first (xai.cascade_stages)
    cascade: dict[str, list[float | None]]  # method -> Spearman(trained, model after each stage)
    faithfulness: Faithfulness | None
    level_profile: dict[str, dict[str, float]]  # mask / map -> loudness of its pixels
    vs_input: dict[str, float | None]  # Spearman(map, input features)
    between_maps: dict[str, float | None]  # Grad-CAM vs |x*grad|
    compute_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(finite_or_none(dataclasses.asdict(self)), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PairResult:
        """Raises ValueError (only) for text that is not a PairResult: invalid JSON, a wrong type, a missing key."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise TypeError(f"a JSON {type(d).__name__}, not an object")
            d["pred_real"], d["pred_fake"] = Prediction(**d["pred_real"]), Prediction(**d["pred_fake"])
            d["agreement"] = {t: {m: Agreement(**a) for m, a in per.items()} for t, per in d["agreement"].items()}
            d["floor"], d["floor_std"] = Agreement(**d["floor"]), Agreement(**d["floor_std"])
            d["faithfulness"] = Faithfulness(**d["faithfulness"]) if d.get("faithfulness") else None
            return cls(**d)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # json.JSONDecodeError is a ValueError
            kind = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise ValueError(kind) from None


def read_pair(path: Path) -> PairResult:
    """A pair file written by explain.py. Raises ValueError naming the file when it is not one (empty, {}, [],
    truncated, or written by another version)."""
    try:
        return PairResult.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a pair result of this explain.py ({e})") from None


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


# ----------------------------------------------------------------------------- numbers over pairs

N_BOOT = 2000


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean and percentile-bootstrap 95 % confidence interval of the mean: {"mean", "ci": [lo, hi], "n"}.

    Resamples pairs with replacement (`n_boot` times, a fixed seed: the same numbers every run). None / NaN values
    are left out (n counts the rest). With one value there is no interval: "ci" is [None, None].
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    if v.size == 1:
        return {"mean": float(v[0]), "ci": [None, None], "n": 1}
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return {"mean": float(v.mean()), "ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": int(v.size)}  # fmt: skip


def paired_vs(values, baseline) -> dict:
    """`bootstrap_ci` of the per-pair differences value - baseline, and the share of pairs above the baseline."""
    d = [a - b for a, b in zip(values, baseline) if a is not None and b is not None]
    out = bootstrap_ci(d)
    out["share_above"] = float(np.mean([x > 0 for x in d])) if d else None
    return out


def zero_filled(rhos: list[float | None]) -> float | None:
    """Mean rank correlation counting an undefined one (a constant, all-zero map) as 0: nothing of the trained map
    survives in it. None for an empty list."""
    return float(np.mean([0.0 if r is None else r for r in rhos])) if rhos else None


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


def summarise_sanity(rs: list[PairResult]) -> dict:
    """Per method: the full re-initialisation's mean rho per pair with constant maps as 0 (the reading reported) and
    without them, the share of constant maps; and the cascade's zero-filled rho per stage."""
    out = {}
    for method in METHODS:
        per = [r.sanity.get(method, []) for r in rs]
        n_all = sum(len(p) for p in per)
        out[method] = {
            "rho": bootstrap_ci([zero_filled(p) for p in per]),
            "rho_defined_only": bootstrap_ci(
                [
                    float(np.mean([x for x in p if x is not None])) if any(x is not None for x in p) else None
                    for p in per
                ]
            ),  # fmt: skip
            "constant_share": (sum(x is None for p in per for x in p) / n_all) if n_all else None,
        }
    with_cascade = [r for r in rs if r.cascade_stages]
    if with_cascade:
        stages = with_cascade[0].cascade_stages
        same = [r for r in with_cascade if r.cascade_stages == stages]
        out["cascade"] = {"stages": stages, "n": len(same)}
        for method in METHODS:
            out["cascade"][method] = [
                bootstrap_ci([0.0 if r.cascade[method][j] is None else r.cascade[method][j] for r in same])
                for j in range(len(stages))
            ]
    return out


def summarise_maps(rs: list[PairResult]) -> dict:
    """What the mask and the maps prefer, over pairs: the share of their top-5 % pixels quieter than the real
    recording's median pixel (0.5 = no preference), Spearman of each map with the input features, and how the two
    maps agree with each other (Spearman, IoU of their top 5 %)."""
    return {
        "quiet_share": {k: bootstrap_ci([r.level_profile[k]["quiet_share"] for r in rs if k in r.level_profile])
                        for k in ("mask", "gradcam", "ixg_abs")},
        "vs_input": {k: bootstrap_ci([r.vs_input.get(k) for r in rs]) for k in ("gradcam", "ixg_abs")},
        "between": {k: bootstrap_ci([r.between_maps.get(k) for r in rs]) for k in ("spearman", "iou_top")},
    }  # fmt: skip


def summarise_faithfulness(rs: list[PairResult]) -> dict | None:
    """Per direction and ranking: the mean curve, the raw AOPC, the normalised AOPC, both also against random."""
    faith = [r.faithfulness for r in rs if r.faithfulness is not None]
    if not faith:
        return None
    ks = faith[0].ks
    faith = [f for f in faith if f.ks == ks]
    out = {"ks": ks, "target": faith[0].target, "n": len(faith)}
    for direction in xai.DIRECTIONS:
        per = {}
        for ranking in (*xai.FAITH_RANKINGS, *xai.BOUND_RANKINGS):
            curves = np.array([f.curve(direction)[ranking] for f in faith])  # (pairs, ks)
            raw = [f.aopc(direction, ranking) for f in faith]
            norm = [f.naopc(direction, ranking) for f in faith]
            per[ranking] = {
                "curve": [bootstrap_ci(curves[:, j]) for j in range(len(ks))],
                "aopc": bootstrap_ci(raw),
                "aopc_vs_random": paired_vs(raw, [f.aopc(direction, "random") for f in faith]),
                "naopc": bootstrap_ci(norm),
                "naopc_vs_random": paired_vs(norm, [f.naopc(direction, "random") for f in faith]),
            }
        out[direction] = {"start": bootstrap_ci([f.start(direction) for f in faith]), "rankings": per}
    return out


def summarise_pairs(results: list[PairResult]) -> dict:
    """The numbers over pairs, per vocoder: detection, alignment (applied lag and the estimate), agreement (mean, CI,
    paired difference to the random floor, share of pairs above it), the floor, the sanity check and its cascade,
    faithfulness curves, raw and normalised AOPC (vs random too)."""
    out = {"n_pairs": len(results), "vocoders": {}}
    for vocoder in dict.fromkeys(r.vocoder for r in results):
        rs = [r for r in results if r.vocoder == vocoder]
        v = {"n": len(rs), "detection": detection(rs), "agreement": {}, "floor": {},
             "alignment": {"methods": sorted({r.align for r in rs}),
                           "median_abs_lag": float(np.median([abs(r.lag) for r in rs])),
                           "median_abs_lag_estimate": float(np.median([abs(r.lag_estimate) for r in rs])),
                           "envelope_corr": bootstrap_ci([r.envelope_corr for r in rs])}}  # fmt: skip
        for m in xai.METRICS:
            v["floor"][m] = bootstrap_ci([getattr(r.floor, m) for r in rs])
        for t in TARGETS:
            v["agreement"][t] = {}
            for method in METHODS:
                per = {}
                for m in xai.METRICS:
                    vals = [getattr(r.agreement[t][method], m) for r in rs]
                    per[m] = bootstrap_ci(vals)
                    per[m]["vs_floor"] = paired_vs(vals, [getattr(r.floor, m) for r in rs])
                v["agreement"][t][method] = per
        v["sanity"] = summarise_sanity(rs)
        v["maps"] = summarise_maps(rs)
        faith = summarise_faithfulness(rs)
        if faith is not None:
            v["faithfulness"] = faith
        out["vocoders"][vocoder] = v
    return out


def fmt_ci(s: dict, digits: int = 3, pct: bool = False) -> str:
    """'0.123 [0.100, 0.150]'; '0.123 (n = 1)' without an interval; 'n/a' without a value."""
    if s["mean"] is None:
        return "n/a"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
    if s["ci"][0] is None:
        return f"{f(s['mean'])} (n = {s['n']})"
    return f"{f(s['mean'])} [{f(s['ci'][0])}, {f(s['ci'][1])}]"


def format_summary(summary: dict) -> str:
    """The printed summary: per vocoder, detection, agreement against the floor, sanity, faithfulness."""
    lines = []
    for vocoder, v in summary["vocoders"].items():
        d, al = v["detection"], v["alignment"]
        eer = "n/a" if d["eer"] is None else f"{d['eer']:.2f} %"
        ci = "bootstrap 95 % CI" if v["n"] > 1 else "one pair: no confidence interval"
        lines += [f"== {vocoder}: {v['n']} pair(s) ({ci}); detection EER real vs vocoded {eer}; P(bona fide) real "
                  f"{d['p_bonafide_real']:.3f}, vocoded {d['p_bonafide_fake']:.3f}; vocoded called spoof "
                  f"{100 * d['fake_called_spoof']:.0f} %",
                  f"alignment {'/'.join(al['methods'])}: median |lag| applied {al['median_abs_lag']:.0f} samples, "
                  f"estimated {al['median_abs_lag_estimate']:.0f}; envelope correlation {fmt_ci(al['envelope_corr'], 2)}",
                  f"{'target':<10}{'map':<9}{'IoU':>26}{'IoU - floor':>26}{'> floor':>8}"
                  f"{'rank acc.':>26}{'rank - floor':>26}{'> floor':>8}"]  # fmt: skip
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
        s = v["sanity"]
        lines.append("sanity, Spearman(trained map, every layer re-initialised), all-zero maps as 0: "
                     + ", ".join(f"{k} {fmt_ci(s[k]['rho'], 2)}" for k in METHODS))  # fmt: skip
        lines.append("  without the all-zero maps: " + ", ".join(
            f"{k} {fmt_ci(s[k]['rho_defined_only'], 2)} ({100 * (s[k]['constant_share'] or 0):.0f} % all-zero)"
            for k in METHODS))  # fmt: skip
        if "cascade" in s:
            c = s["cascade"]
            lines.append(f"  cascade, top layer first ({c['n']} pair(s)), mean rho after each stage:")
            for k in METHODS:
                lines.append(f"    {k:<8}" + " ".join(f"{st.split('.')[-1]} {x['mean']:+.2f}"
                                                   for st, x in zip(c["stages"], c[k])))  # fmt: skip
        mp = v["maps"]
        lines.append("quiet pixels (share below the real's median level): "
                     + ", ".join(f"{k} {fmt_ci(x, 2)}" for k, x in mp["quiet_share"].items())
                     + "; Spearman with the input: " + ", ".join(f"{k} {fmt_ci(x, 2)}" for k, x in mp["vs_input"].items())
                     + f"; Grad-CAM vs |x*grad|: Spearman {fmt_ci(mp['between']['spearman'], 2)}, top-5 % IoU "
                     f"{fmt_ci(mp['between']['iou_top'], 2)}")  # fmt: skip
        if "faithfulness" in v:
            f = v["faithfulness"]
            lines.append(f"faithfulness: the {f['target']} logit (the quantity the maps explain) against k = "
                         f"{', '.join(f'{k:g}' for k in f['ks'])} % swapped; AOPC = trapezoidal area of its move the "
                         "expected way / max k (logit units); nAOPC = (AOPC - lowest) / (highest - lowest) over the "
                         "orderings measured on the pair, incl. the first-order oracle (Edin et al. 2024)")  # fmt: skip
            lines.append(f"  {'ranking':<14}{'restore AOPC':>24}{'nAOPC':>24}{'nAOPC - random':>24}"
                         f"{'insert AOPC':>24}{'nAOPC':>24}{'nAOPC - random':>24}")  # fmt: skip
            for k in (*xai.FAITH_RANKINGS, *xai.BOUND_RANKINGS):
                cells = ""
                for direction in xai.DIRECTIONS:
                    per = f[direction]["rankings"][k]
                    vs = "" if k == "random" else fmt_ci(per["naopc_vs_random"], 2)
                    cells += f"{fmt_ci(per['aopc'], 2):>24}{fmt_ci(per['naopc'], 2):>24}{vs:>24}"
                lines.append(f"  {k:<14}{cells}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures of one pair

FIG_DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _save(fig, path: Path, dpi: int = FIG_DPI) -> None:
    with cli.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


def plot_pair(path: Path, res: PairResult, pm: PairMaps, frontend) -> None:
    """The manual comparison, dB re. the real's maximum, on the model's grid.

    Top: real | fake | long-term average spectra. Bottom: fake - real (dB) | fake (grey) with the ground-truth
    mask (red) | per-frame share of mask pixels with the real's level, over time.
    """
    plt, t0 = _pyplot(), res.start_s
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
    _save(fig, path)
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
    plt, t0 = _pyplot(), res.start_s
    targets = [("spoof", pm.maps["spoof"])]
    if res.pred_fake.pred != corpora.LABEL_SPOOF:
        targets.append(("bona fide (predicted)", pm.maps["predicted"]))
    cols = 1 + 2 * len(targets)
    fig, axes = plt.subplots(2, cols, figsize=(4.4 * cols, 6.6), sharex=True, sharey=True, constrained_layout=True)
    mask = pm.mask.numpy()
    rel = np.log10(pm.rel.clamp(min=1e-3).numpy())
    im = _show(axes[0, 0], rel, frontend, t0, cmap="viridis", vmin=-3, vmax=max(1.0, float(np.percentile(rel, 99.5))))
    fig.colorbar(im, ax=axes[0, 0], label="log10 relative difference")
    k = res.mask_kernel
    _spec_axes(axes[0, 0], frontend, f"Eq. 2 relative difference (G: {k['time_size']} x {k['freq_size']} px)")
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
            binary = xai.binarise_top(maps[key], map_quantile).numpy()
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
    _save(fig, path)
    plt.close(fig)


def _rho_text(rhos: list[float | None]) -> str:
    if not rhos:
        return "not computed"
    n_const = sum(r is None for r in rhos)
    return f"{zero_filled(rhos):.2f} over {len(rhos)} re-initialisation(s)" + (
        f", {n_const} all-zero counted as 0" if n_const else "")  # fmt: skip


def plot_sanity(path: Path, res: PairResult, pm: PairMaps, frontend) -> None:
    """Trained vs fully re-initialised model maps (target spoof) with their Spearman rank correlation, and the
    cascade: the correlation after each stage, top layer first (Adebayo et al. 2018, their Fig. 2 in one panel)."""
    plt, t0 = _pyplot(), res.start_s
    fig = plt.figure(figsize=(13, 6), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.1])
    for row, (key, name) in enumerate((("gradcam", "Grad-CAM"), ("ixg_abs", "|InputXGradient|"))):
        for col, (maps, which) in enumerate(((pm.maps["spoof"], "trained"), (pm.maps_random, "re-initialised"))):
            ax = fig.add_subplot(grid[row, col])
            m = maps[key].numpy()
            _show(ax, m, frontend, t0, cmap="inferno", vmin=0, vmax=float(np.percentile(m, 99.5)) or 1.0)
            _spec_axes(ax, frontend, f"{name}, {which} model")
            if col == 1:
                ax.set_title(ax.get_title() + f"\nSpearman with trained: {_rho_text(res.sanity[key])}", fontsize=9)
    ax = fig.add_subplot(grid[:, 2])
    if res.cascade_stages:
        x = np.arange(len(res.cascade_stages))
        for key in METHODS:
            name, colour = RANKING_STYLE[key]
            ax.plot(x, [0.0 if r is None else r for r in res.cascade[key]], "o-", ms=3, color=colour, label=name)
        ax.set_xticks(x, [s.split(".")[-1] for s in res.cascade_stages], rotation=60, fontsize=8)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set(ylim=(-1.05, 1.05), xlabel="re-initialised down to (cumulative, top layer first)",
               ylabel="Spearman(trained, randomised); all-zero map = 0")  # fmt: skip
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_title("cascading randomisation", fontsize=9)
    fig.suptitle(f"{res.vocoder}: model-parameter randomisation check (Adebayo et al. 2018)", fontsize=10)
    _save(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- figures over pairs

RANKING_STYLE = {"gradcam": ("Grad-CAM", "tab:orange"), "ixg": ("x*grad", "tab:blue"),
                 "ixg_abs": ("|x*grad|", "tab:cyan"), "ground_truth": ("ground truth (Eq. 2)", "tab:green"),
                 "random": ("random", "0.5"), "bound_best": ("first-order oracle", "tab:purple"),
                 "bound_worst": ("its reverse", "tab:pink")}  # fmt: skip


def _errorbar(ax, x: float, s: dict) -> None:
    """The mean as a diamond with its 95 % CI (no bar with one pair)."""
    if s["mean"] is None:
        return
    yerr = None if s["ci"][0] is None else [[s["mean"] - s["ci"][0]], [s["ci"][1] - s["mean"]]]
    ax.errorbar(x, s["mean"], yerr=yerr, fmt="D", color="k", ms=4, capsize=3)


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
                _errorbar(ax, i + 0.32, bootstrap_ci(vals))
            ax.set_xticks(range(len(columns)), [c[0] for c in columns], fontsize=8)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, axis="y")
            d = summary["vocoders"][vocoder]["detection"]
            eer = "n/a" if d["eer"] is None else f"{d['eer']:.1f} %"
            ax.set_title(f"{vocoder}: {len(rs)} pairs, detection EER {eer}" if row == 0 else "", fontsize=9)
    fig.suptitle("Agreement with the ground-truth mask, target spoof (dots: pairs; box: quartiles; diamond: mean and "
                 "bootstrap 95 % CI)", fontsize=10)  # fmt: skip
    _save(fig, path, dpi=90)


def plot_faithfulness_summary(path: Path, summary: dict) -> None:
    """Mean target logit against k % swapped pixels, per ranking, with its bootstrap 95 % band; nAOPC in the legend."""
    from matplotlib.figure import Figure

    vocoders = [v for v, s in summary["vocoders"].items() if "faithfulness" in s]
    if not vocoders:
        return
    fig = Figure(figsize=(max(8.0, 4.8 * len(vocoders) + 1), 7.5), layout="constrained")
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
                style = ":" if ranking in xai.BOUND_RANKINGS else "-"
                n = per["naopc"]["mean"]
                label = f"{name} (AOPC {per['aopc']['mean']:+.2f}" + ("" if n is None else f", nAOPC {n:.2f}") + ")"
                ax.plot(ks, mean, "o" + style, ms=3, color=colour, label=label)
                if per["curve"][0]["ci"][0] is not None:
                    lo = [start] + [c["ci"][0] for c in per["curve"]]
                    hi = [start] + [c["ci"][1] for c in per["curve"]]
                    ax.fill_between(ks, lo, hi, color=colour, alpha=0.15, lw=0)
            ax.set(xlabel="k: % of explained pixels swapped (in ranking order)", ylabel=f"{f['target']} logit")
            ax.set_title(f"{vocoder}: {title}", fontsize=9)
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
    fig.suptitle("Faithfulness: does the logit the maps explain move sooner where a map points than at random? (mean "
                 "over pairs, bootstrap 95 % bands)", fontsize=10)  # fmt: skip
    _save(fig, path, dpi=90)


def plot_sanity_summary(path: Path, summary: dict) -> None:
    """The cascade over pairs: mean Spearman(trained, randomised) after each stage, per method, with 95 % CIs."""
    from matplotlib.figure import Figure

    vocoders = [v for v, s in summary["vocoders"].items() if "cascade" in s["sanity"]]
    if not vocoders:
        return
    fig = Figure(figsize=(max(9.0, 5.2 * len(vocoders) + 1), 4.6), layout="constrained")
    axes = fig.subplots(1, len(vocoders), squeeze=False)[0]
    for ax, vocoder in zip(axes, vocoders):
        c = summary["vocoders"][vocoder]["sanity"]["cascade"]
        x = np.arange(len(c["stages"]))
        for key in METHODS:
            name, colour = RANKING_STYLE[key]
            ax.plot(x, [s["mean"] for s in c[key]], "o-", ms=3, color=colour, label=name)
            if c[key][0]["ci"][0] is not None:
                ax.fill_between(x, [s["ci"][0] for s in c[key]], [s["ci"][1] for s in c[key]], color=colour,
                                alpha=0.15, lw=0)  # fmt: skip
        ax.set_xticks(x, [s.split(".")[-1] for s in c["stages"]], rotation=60, fontsize=8)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set(ylim=(-1.05, 1.05), ylabel="Spearman(trained, randomised); all-zero map = 0")
        ax.set_title(f"{vocoder}: {c['n']} pair(s)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Cascading randomisation, top layer first (Adebayo et al. 2018): a map that explains the model "
                 "decorrelates as the layers it depends on are randomised", fontsize=10)  # fmt: skip
    _save(fig, path, dpi=90)
