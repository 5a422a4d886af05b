# --- explain.py ---
# Hand-written Grad-CAM / InputXGradient against pytorch-grad-cam and Captum (test-only references), the Eq. 2
# mask, alignment, local vocoders, agreement metrics, Spearman against scipy, and the CLI end to end.

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "explain.py").is_file())
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import data  # noqa: E402
import explain  # noqa: E402
import model as model_lib  # noqa: E402


def explain_shared_data() -> Path | None:
    for p in Path(__file__).resolve().parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return None


EXPLAIN_SHARED = explain_shared_data()
EXPLAIN_MINI = EXPLAIN_SHARED / "asvspoof2019_la_mini" if EXPLAIN_SHARED else None
EXPLAIN_NII = EXPLAIN_SHARED / "vocoded_pairs" / "nii_wave_replacement" if EXPLAIN_SHARED else None
explain_needs_mini = pytest.mark.skipif(
    EXPLAIN_MINI is None or not EXPLAIN_MINI.is_dir(), reason="../shared/data/asvspoof2019_la_mini absent"
)
explain_needs_nii = pytest.mark.skipif(
    EXPLAIN_NII is None or not EXPLAIN_NII.is_dir(), reason="../shared/data/vocoded_pairs absent"
)


@pytest.fixture(scope="module")
def explain_small_lcnn():
    """A small random LCNN (32 bins x 48 frames) in eval mode, BatchNorm statistics made non-trivial."""
    torch.manual_seed(0)
    m = model_lib.LCNN(in_bins=32, num_frames=48, dropout=0.5)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def explain_small_input():
    torch.manual_seed(1)
    return torch.randn(1, 1, 32, 48)


def explain_speechlike(seconds: float = 0.6, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """Harmonic tone with vibrato in six 30 ms 'syllables', plus a little noise: enough structure to vocode."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 140 + 15 * torch.sin(2 * torch.pi * 3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sr
    wave = sum(torch.sin(k * phase) / k for k in range(1, 20))
    env = sum(torch.exp(-0.5 * ((t - c) / 0.03) ** 2) for c in torch.rand(6, generator=g) * seconds)
    return (0.3 * env * wave + 0.002 * torch.randn(t.shape, generator=g)).float()


# --- attributions against the reference libraries


@pytest.mark.parametrize("layer_name", ["features.mfm27", "features.mfm15"])
@pytest.mark.parametrize("target", [0, 1])
def test_explain_gradcam_equals_pytorch_grad_cam(explain_small_lcnn, explain_small_input, layer_name, target):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = explain_small_lcnn, explain_small_input
    layer = explain.find_layer(model, layer_name)
    cam_lowres, _, _ = explain.gradcam_lowres(model, x, target, layer)
    assert cam_lowres.max() > 0, "degenerate test: the CAM is all zero"
    ours = explain.gradcam(model, x, target, layer, normalise=True)  # (F, T)

    with GradCAM(model=model, target_layers=[layer]) as ref:
        targets = [ClassifierOutputTarget(target)]
        theirs = ref(input_tensor=x, targets=targets)[0]  # (F, T): ReLU, min-max, cv2.resize
        acts = ref.activations_and_grads.activations[0].numpy()
        grads = ref.activations_and_grads.gradients[0].numpy()
        theirs_lowres = np.maximum(ref.get_cam_image(x, layer, targets, acts, grads), 0)[0]  # before scaling

    # 1. the un-normalised CAM at the layer's resolution, from the library's own internals
    np.testing.assert_allclose(cam_lowres.numpy(), theirs_lowres, rtol=1e-5, atol=1e-7)
    # 2. the final map: min-max, bilinear resize (ours: torch, theirs: cv2) to the input grid, min-max again
    assert ours.shape == theirs.shape == (32, 48)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("target", [0, 1])
def test_explain_input_x_gradient_equals_captum(explain_small_lcnn, explain_small_input, target):
    from captum.attr import InputXGradient

    model, x = explain_small_lcnn, explain_small_input
    ours = explain.input_x_gradient(model, x, target)
    theirs = InputXGradient(model).attribute(x.clone().requires_grad_(True), target=target).detach()[0, 0]
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    maps = explain.attribution_maps(model, x, target, explain.find_layer(model, "mfm27"))
    torch.testing.assert_close(maps["ixg"], ours, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps["ixg_abs"], ours.abs(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps["gradcam"], explain.gradcam(model, x, target, explain.find_layer(model, "mfm27")))


def test_explain_attributions_leave_parameter_grads_alone(explain_small_lcnn, explain_small_input):
    explain_small_lcnn.zero_grad(set_to_none=True)  # the reference libraries' backward() filled them
    explain.attribution_maps(explain_small_lcnn, explain_small_input, 0, explain_small_lcnn.features.mfm27)
    assert all(p.grad is None for p in explain_small_lcnn.parameters())


def test_explain_unknown_layer_lists_the_layers(explain_small_lcnn):
    with pytest.raises(ValueError, match=r"--layer 'mfm99'.*features\.mfm27"):
        explain.find_layer(explain_small_lcnn, "mfm99")
    assert explain.find_layer(explain_small_lcnn, "mfm27") is explain_small_lcnn.features.mfm27


def test_explain_randomised_copy_changes_every_weight_and_keeps_the_original(explain_small_lcnn):
    before = {k: v.clone() for k, v in explain_small_lcnn.state_dict().items()}
    rand = explain.randomised_copy(explain_small_lcnn, seed=3)
    for name, p in rand.named_parameters():
        assert not torch.equal(p, dict(explain_small_lcnn.named_parameters())[name]) or p.eq(p.flatten()[0]).all()
    for k, v in explain_small_lcnn.state_dict().items():
        assert torch.equal(v, before[k])
    again = explain.randomised_copy(explain_small_lcnn, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(rand.parameters(), again.parameters()))


# --- ground-truth mask


def test_explain_gaussian_kernel_sums_to_one_and_is_separable():
    kt, kf = explain.gaussian_kernel1d(3, 3.0), explain.gaussian_kernel1d(11, 5.0)
    assert kt.sum().item() == pytest.approx(1.0) and kf.sum().item() == pytest.approx(1.0)
    assert torch.allclose(kf, kf.flip(0))
    delta = torch.zeros(21, 9, dtype=torch.float64)
    delta[10, 4] = 1.0
    response = explain.smooth_gaussian(delta)  # the 2-D kernel, centred
    torch.testing.assert_close(response[5:16, 3:6], torch.outer(kf, kt))
    assert response.sum().item() == pytest.approx(1.0)


def test_explain_smoothing_equals_scipy_gaussian_filter_of_the_reproduction():
    from scipy.ndimage import gaussian_filter1d

    spec = torch.rand(40, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    st, sf_ = np.sqrt(3.0), np.sqrt(5.0)  # variances 3 (time) and 5 (frequency); taps 3 and 11
    ref = gaussian_filter1d(spec.numpy(), st, axis=1, truncate=1 / st, mode="reflect")
    ref = gaussian_filter1d(ref, sf_, axis=0, truncate=5 / sf_, mode="reflect")
    np.testing.assert_allclose(explain.smooth_gaussian(spec).numpy(), ref, atol=1e-12)


def test_explain_mask_is_exactly_the_top_five_percent():
    rel = torch.rand(863, 40, generator=torch.Generator().manual_seed(1))
    mask = explain.binarise_top(rel, 0.95)
    k = round(0.05 * rel.numel())
    assert int(mask.sum()) == k
    assert rel[mask].min() >= rel[~mask].max()
    ties = torch.zeros(100)  # all tied: still exactly k pixels
    assert int(explain.binarise_top(ties, 0.95).sum()) == 5


def test_explain_identical_pair_has_zero_relative_difference():
    mag = torch.rand(50, 20, generator=torch.Generator().manual_seed(2)) + 0.1
    rel, mask = explain.ground_truth_mask(mag, mag.clone())
    assert float(rel.abs().max()) == 0.0 and int(mask.sum()) == round(0.05 * mag.numel())


def test_explain_mask_marks_where_the_fake_differs():
    real = torch.ones(100, 60)
    fake = real.clone()
    fake[70:80, 20:30] *= 3.0  # a block the vocoder changed
    rel, mask = explain.ground_truth_mask(real, fake)
    assert rel[75, 25] == pytest.approx(2.0, rel=0.05)
    assert mask[70:80, 20:30].float().mean() > 0.9
    with pytest.raises(ValueError, match="differ in shape"):
        explain.relative_difference(real, fake[:, :59])


# --- alignment and vocoders


@pytest.mark.parametrize("method", ["waveform", "envelope"])
@pytest.mark.parametrize("shift", [137, -250, 0])
def test_explain_alignment_recovers_a_known_shift(method, shift):
    real = explain_speechlike()
    fake = torch.nn.functional.pad(real, (shift, 0)) if shift >= 0 else real[-shift:]
    fake = torch.cat([fake, torch.zeros(500)])  # a vocoder pads its output at the end
    tolerance = 0 if method == "waveform" else 2
    assert abs(explain.estimate_lag(real, fake, 1600, method) - shift) <= tolerance
    r, f, lag = explain.align_pair(real, fake, 1600, method)
    assert r.numel() == f.numel() and abs(lag - shift) <= tolerance
    if method == "waveform":  # the fake now lies on the real (a late real is zero-padded at the fake's start)
        lo = max(0, -shift)
        torch.testing.assert_close(f[lo:], r[lo:])


def test_explain_envelope_alignment_survives_resynthesised_phase():
    real = explain_speechlike()
    fake = explain.vocode(torch.nn.functional.pad(real, (137, 0)), "griffinlim")  # late by 137, new phase
    assert abs(explain.estimate_lag(real, fake, 1600, "envelope") - 137) <= 65  # half a hop of the LCNN's STFT
    with pytest.raises(ValueError, match="--align must be"):
        explain.estimate_lag(real, fake, 1600, "phase")


def test_explain_local_vocoders_keep_length_and_lose_what_they_should():
    wave = explain_speechlike()
    spec = lambda w: torch.stft(w, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()  # noqa: E731
    ref = spec(wave)
    errors = {}
    for name in ("griffinlim", "melgl"):
        out = explain.vocode(wave, name)
        assert out.shape == wave.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert torch.corrcoef(torch.stack([out, wave]))[0, 1] < 0.9  # the phase is re-synthesised
        errors[name] = float((spec(out) - ref).norm() / ref.norm())  # spectral convergence
        torch.testing.assert_close(explain.vocode(wave, name), out)  # deterministic
    # Griffin-Lim keeps the magnitude on its own grid; mel inversion loses the harmonics between bands.
    assert errors["griffinlim"] < 0.35 and errors["melgl"] > errors["griffinlim"] + 0.1
    with pytest.raises(ValueError, match="unknown vocoder"):
        explain.vocode(wave, "hifigan")


def test_explain_world_vocoder_needs_pyworld_or_works():
    wave = explain_speechlike(0.3)
    try:
        import pyworld  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pyworld"):
            explain.vocode(wave, "world")
        return
    assert explain.vocode(wave, "world").shape == wave.shape


# --- agreement metrics


def test_explain_agreement_on_hand_built_maps():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[0, :] = True  # 10 pixels
    attribution = torch.zeros(10, 10)
    attribution[0, :5] = 4.0  # 5 top pixels inside the mask
    attribution[1, :5] = 3.0  # 5 outside
    attribution[2, :] = -1.0  # negative evidence: ignored by the mass accuracy
    a = explain.agreement(attribution, mask, map_quantile=0.9)  # top 10 % = 10 pixels
    assert a["iou"] == pytest.approx(5 / 15)
    assert a["precision"] == pytest.approx(0.5) and a["recall"] == pytest.approx(0.5)
    assert a["mass_accuracy"] == pytest.approx(20 / 35)
    assert a["rank_accuracy"] == pytest.approx(0.5)
    b = explain.agreement(attribution, mask, map_quantile=0.95)  # top 5 pixels: all inside
    assert (b["precision"], b["recall"], b["iou"]) == pytest.approx((1.0, 0.5, 0.5))
    perfect = explain.agreement(mask.float(), mask, map_quantile=0.9)
    assert all(v == pytest.approx(1.0) for v in perfect.values())


def test_explain_random_floor_is_the_mask_share():
    mask = explain.binarise_top(torch.rand(200, 100, generator=torch.Generator().manual_seed(3)), 0.95)
    floor = explain.random_floor(mask, seeds=5)
    assert floor["precision"]["mean"] == pytest.approx(0.05, abs=0.01)
    assert floor["mass_accuracy"]["mean"] == pytest.approx(0.05, abs=0.005)
    assert floor["iou"]["mean"] == pytest.approx(0.05 / 1.95, abs=0.006)
    assert floor["iou"]["std"] > 0


def test_explain_spearman_equals_scipy_with_ties():
    from scipy.stats import rankdata, spearmanr

    g = np.random.default_rng(0)
    a = g.normal(size=500)
    b = 0.5 * a + g.normal(size=500)
    a_tied = np.maximum(a, 0)  # many ties at zero, like a ReLU'd Grad-CAM
    for x, y in ((a, b), (a_tied, b), (a_tied, np.round(b))):
        assert explain.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
        np.testing.assert_allclose(explain.rankdata(x), rankdata(x))
    assert explain.spearman(torch.tensor(a), torch.tensor(a)) == pytest.approx(1.0)


# --- vocv4 reading


def explain_write_vocv4(folder: Path, utt: str, wave: torch.Tensor) -> Path:
    root = folder / "voc.v4"
    (root / "wav").mkdir(parents=True)
    (root / "protocol.txt").write_text(
        f"LA_0079 {utt} - bonafide bonafide\n"
        f"LA_0079 hifigan_{utt} - hifigan spoof\n"
        f"LA_0079 waveglow_{utt} - waveglow spoof\n"
        "LA_0080 hifigan_LA_T_1000000 - hifigan spoof\n"
    )
    for vocoder in ("hifigan", "waveglow"):
        sf.write(root / "wav" / f"{vocoder}_{utt}.wav", explain.vocode(wave, "griffinlim").numpy(), 16000)
    return root


def test_explain_vocv4_pairs_by_utterance_id(tmp_path):
    root = explain_write_vocv4(tmp_path, "LA_T_4179989", explain_speechlike(0.3))
    entries = explain.read_vocv4_protocol(root / "protocol.txt")
    assert [(e.vocoder, e.utt_id) for e in entries][:2] == [("hifigan", "LA_T_4179989"), ("waveglow", "LA_T_4179989")]
    found = explain.find_vocv4_files(tmp_path, "LA_T_4179989", ["waveglow", "hifigan"])  # parent folder works too
    assert list(found) == ["waveglow", "hifigan"] and found["hifigan"].name == "hifigan_LA_T_4179989.wav"
    with pytest.raises(ValueError, match="no melgan copy of LA_T_4179989.*hifigan, waveglow"):
        explain.find_vocv4_files(root, "LA_T_4179989", ["melgan"])
    with pytest.raises(FileNotFoundError, match="listed in .*but missing"):
        explain.find_vocv4_files(root, "LA_T_1000000", ["hifigan"])
    (root / "protocol.txt").write_text("LA_0079 hifigan_LA_T_4179989 hifigan spoof\n")
    with pytest.raises(ValueError, match="protocol.txt line 1: expected 5 fields"):
        explain.read_vocv4_protocol(root / "protocol.txt")
    with pytest.raises(FileNotFoundError, match="no protocol.txt"):
        explain.find_vocv4_files(tmp_path / "nowhere", "LA_T_4179989", ["hifigan"])


# --- CLI end to end (tiny inputs: 32 frames)


def explain_tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    m = model_lib.LCNN(in_bins=863, num_frames=32, dropout=0.1)
    ckpt = {"model": m.state_dict(), "model_args": m.model_args(),
            "args": {"frontend": "stft", "num_frames": 32, "pad": "repeat", "recipe": "test"},
            "epoch": 1, "best_dev_eer": 50.0}  # fmt: skip
    torch.save(ckpt, path)
    return path


@explain_needs_nii
def test_explain_cli_on_the_real_neural_pair(tmp_path, capsys):
    ckpt = explain_tiny_checkpoint(tmp_path / "best.pt")
    real = EXPLAIN_NII / "real" / "11463_11657_000002.flac"
    fake = EXPLAIN_NII / "voc" / "11463_11657_000002.flac"
    out = tmp_path / "out"
    code = explain.main(["--real", str(real), "--fake", str(fake), "--ckpt", str(ckpt), "--out", str(out),
                         "--random-seeds", "3", "--start-s", "1.0", "--device", "cpu"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    pair = summary["pairs"]["voc"]  # named after the fake's folder when the stems are equal
    assert summary["model"]["trained"] and summary["layer"] == "features.mfm27"
    assert abs(pair["lag_samples"]) < 160 and pair["frames"] == 32
    assert pair["mask_pixels"] == round(0.05 * 863 * 32)
    assert set(pair["random_floor"]) == set(explain.METRICS)
    assert set(pair["targets"]["spoof"]["maps"]) == {"gradcam", "ixg", "ixg_abs"}
    assert set(pair["sanity_spearman_trained_vs_reinit"]) == {"gradcam", "ixg", "ixg_abs"}
    assert set(summary["clips"]) == {"real", "voc"}
    for name in ("pair_voc.png", "maps_voc.png", "sanity_voc.png"):
        assert (out / name).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "random" in printed and "Spearman" in printed and "P(bona fide)" in printed


@explain_needs_mini
def test_explain_cli_short_form_with_local_vocoders_and_vocv4(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(explain, "find_default_checkpoint", lambda: None)  # no runs/: random model, loud warning
    monkeypatch.delenv("ASVSPOOF_ROOT", raising=False)
    utt = "LA_T_4179989"
    real = data.load_audio(EXPLAIN_MINI / "LA" / "ASVspoof2019_LA_train" / "flac" / f"{utt}.flac")
    vocv4 = explain_write_vocv4(tmp_path / "vocv4", utt, real)
    out = tmp_path / "out"
    code = explain.main(["--utt", utt, "--num-frames", "32", "--vocv4-root", str(vocv4), "--vocoders", "hifigan",
                         "--vocode", "melgl", "--out", str(out), "--random-seeds", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err and "asvspoof2019_la_mini" in captured.out
    summary = json.loads((out / "metrics.json").read_text())
    assert list(summary["pairs"]) == ["hifigan", "melgl"] and not summary["model"]["trained"]
    assert summary["pairs"]["hifigan"]["source"].startswith("vocv4")
    assert all((out / f"maps_{n}.png").is_file() for n in ("hifigan", "melgl"))


def test_explain_cli_rejects_contradictory_flags(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --utt"):
        explain.main(["--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--vocv4-root pairs"):
        explain.main(["--real", "x.flac", "--vocv4-root", str(tmp_path)])
    with pytest.raises(ValueError, match="--mask-quantile must be in"):
        explain.main(["--real", "x.flac", "--mask-quantile", "1.5"])
