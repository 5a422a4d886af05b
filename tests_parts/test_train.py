# --- model.py and train.py ---
# LCNN shapes and size, MFM, A-softmax; train.py recipes, checkpoints, resume (also after kill -9), torchrun/DDP,
# bad files, NaN stop, resume mismatch. Real data: ../shared/data/asvspoof2019_la_mini (skipped when absent).
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch


def _train_project_root() -> Path:
    """The folder that holds train.py (repo root), from tests_parts/ or from the merged test_all.py."""
    for p in Path(__file__).resolve().parents:
        if (p / "train.py").is_file():
            return p
    raise RuntimeError("train.py not found above this test file")


TRAIN_ROOT = _train_project_root()
sys.path.insert(0, str(TRAIN_ROOT))

import model as lcnn_model  # noqa: E402
import train as lcnn_train  # noqa: E402


def _train_mini_root() -> Path | None:
    for p in Path(__file__).resolve().parents:
        mini = p / "../shared/data/asvspoof2019_la_mini/LA"
        if mini.is_dir():
            return mini.resolve()
    return None


TRAIN_MINI = _train_mini_root()
needs_mini = pytest.mark.skipif(TRAIN_MINI is None, reason="../shared/data/asvspoof2019_la_mini is absent")


def _train_small_flags(out, *extra) -> list[str]:
    """Seconds-long runs on the mini tree: 48 train / 24 dev files, 20 x 64 mel inputs."""
    return [
        "--recipe", "tiny", "--data-root", str(TRAIN_MINI), "--out", str(out), "--limit-train", "48",
        "--limit-dev", "24", "--num-frames", "64", "--device", "cpu", "--num-workers", "0", "--augment", *extra,
    ]  # fmt: skip


def _train_metrics(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _train_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


# ----------------------------------------------------------------------------- model.py


def _lcnn_expected_parameters(in_bins: int, num_frames: int) -> int:
    """Parameter count written out from the STC table (arXiv:1904.05576, Table 1), not from the model."""

    def conv(cin, filters, k):
        return cin * filters * k * k + filters

    def bn(c):
        return 2 * c

    convs = (conv(1, 64, 5) + conv(32, 64, 1) + bn(32) + conv(32, 96, 3) + bn(48) + conv(48, 96, 1) + bn(48)
             + conv(48, 128, 3) + conv(64, 128, 1) + bn(64) + conv(64, 64, 3) + bn(32) + conv(32, 64, 1) + bn(32)
             + conv(32, 64, 3))  # fmt: skip
    h, w = in_bins, num_frames
    for _ in range(4):  # pool3, pool9, pool16, pool28
        h, w = h // 2, w // 2
    fc29 = 32 * h * w * 160 + 160
    return convs + fc29 + bn(80) + 80 * 2 + 2


def test_lcnn_parameter_count_matches_the_stc_table():
    net = lcnn_model.LCNN(863, 600)
    expected = _lcnn_expected_parameters(863, 600)
    assert 32 * 53 * 37 == 62_752  # FC29 inputs for 863 x 600
    assert lcnn_model.count_parameters(net) == expected == 10_198_818  # "about 10.2 M"
    assert net.classifier.fc29.weight.numel() / expected > 0.98  # the first FC layer holds most of it
    assert lcnn_model.count_parameters(lcnn_model.LCNN(20, 600, 0.1)) == _lcnn_expected_parameters(20, 600)


@pytest.mark.parametrize("in_bins,num_frames", [(863, 600), (20, 600), (20, 64)])
def test_lcnn_outputs_two_logits_for_stft_and_mel_inputs(in_bins, num_frames):
    net = lcnn_model.LCNN(in_bins, num_frames).eval()
    with torch.no_grad():
        h = net.features(torch.zeros(1, 1, in_bins, num_frames))
        out = net(torch.randn(2, 1, in_bins, num_frames))
    assert tuple(h.shape[1:]) == net.feature_shape()
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=rf"expects \(B, 1, {in_bins}, {num_frames}\)"):
        net(torch.zeros(2, 1, in_bins, num_frames + 16))


def test_lcnn_layers_are_named_as_the_table_rows():
    net = lcnn_model.LCNN(20, 64)
    names = list(dict(net.features.named_children()))
    assert names[:3] == ["conv1", "mfm2", "pool3"] and names[-2:] == ["mfm27", "pool28"]
    assert isinstance(net.features.mfm27, lcnn_model.MFM)
    assert list(dict(net.classifier.named_children())) == ["fc29", "mfm30", "dropout", "bn31", "fc32"]
    assert net.classifier.dropout.p == 0.75  # the STC recipe's default


def test_mfm_keeps_the_max_of_the_two_channel_halves():
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])  # halves [1, -2] and [3, 0.5]
    assert torch.equal(lcnn_model.MFM()(x), torch.tensor([[3.0, 0.5]]))
    x4 = torch.randn(2, 6, 3, 5)
    assert torch.equal(lcnn_model.MFM()(x4), torch.maximum(x4[:, :3], x4[:, 3:]))
    with pytest.raises(ValueError, match="even number of channels"):
        lcnn_model.MFM()(torch.zeros(1, 3))


def test_asoftmax_margin_applies_only_to_the_target_class():
    torch.manual_seed(0)
    emb, labels = torch.randn(16, 80), torch.randint(0, 2, (16,))
    heads = {m: lcnn_model.AngleLinear(80, 2, margin=m) for m in (1, 2, 4)}
    for m in (2, 4):
        heads[m].weight.data.copy_(heads[1].weight.data)
    plain = heads[4](emb)  # scoring: ||x|| cos(theta), no margin
    w = torch.nn.functional.normalize(heads[4].weight, dim=1)
    assert torch.allclose(plain, emb @ w.T, atol=1e-5)
    assert torch.allclose(heads[1](emb, labels), plain, atol=1e-5)  # m = 1: psi = cos, no margin
    target = torch.nn.functional.one_hot(labels, 2).bool()
    for m in (2, 4):
        margin = heads[m](emb, labels)
        assert torch.equal(margin[~target], plain[~target])  # non-target logits untouched
        assert (margin[target] < plain[target] - 1e-4).all()  # psi(theta) < cos(theta): a harder target
        annealed = heads[m](emb, labels, lamb=1e6)  # huge lambda: back to the plain logits
        assert torch.allclose(annealed, plain, atol=1e-3)
    assert lcnn_model.asoftmax_lambda(0) == 1500 and lcnn_model.asoftmax_lambda(10**6) == 5
    with pytest.raises(ValueError, match="margin"):
        lcnn_model.AngleLinear(80, 2, margin=7)


def test_build_model_rejects_unknown_arguments_and_bad_heads():
    assert lcnn_model.build_model({"in_bins": 20, "num_frames": 64, "dropout": 0.1, "head": "linear"}).in_bins == 20
    with pytest.raises(ValueError, match="unknown LCNN argument.*n_bins"):
        lcnn_model.build_model({"n_bins": 20})
    with pytest.raises(ValueError, match="head must be"):
        lcnn_model.LCNN(head="arcface")


def test_load_checkpoint_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        lcnn_model.load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a train.py checkpoint"):
        lcnn_model.load_checkpoint(tmp_path / "foreign.pt")


# ----------------------------------------------------------------------------- train.py: flags


@pytest.mark.parametrize("recipe", sorted(lcnn_train.RECIPES))
def test_every_recipe_parses_and_an_explicit_flag_beats_it(recipe):
    args = lcnn_train.parse_args(["--recipe", recipe])
    for key, value in lcnn_train.RECIPES[recipe].items():
        assert getattr(args, key) == value
    args = lcnn_train.parse_args(["--recipe", recipe, "--epochs", "7", "--frontend", "stft", "--no-augment"])
    assert (args.epochs, args.frontend, args.augment, args.recipe) == (7, "stft", False, recipe)


def test_recipes_hold_what_the_issue_asks():
    stc, seed, tiny = (lcnn_train.parse_args(["--recipe", r]) for r in ("stc", "seed", "tiny"))
    assert (stc.frontend, stc.num_frames, stc.lr, stc.lr_step, stc.lr_gamma, stc.batch_size, stc.dropout) == (
        "stft", 600, 3e-4, 10, 0.5, 64, 0.75)  # fmt: skip
    assert (seed.frontend, seed.pad, seed.num_frames, seed.dropout, seed.augment, seed.epochs, seed.seed) == (
        "mel", "zeros", 600, 0.1, True, 75, 1)  # fmt: skip
    assert tiny.out == "runs/tiny" and lcnn_train.parse_args([]).recipe == "stc"


def test_unknown_recipe_and_bad_values_stop_at_start():
    with pytest.raises(ValueError, match="--recipe 'fast' is unknown; choose one of stc, seed, tiny"):
        lcnn_train.parse_args(["--recipe", "fast"])
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        lcnn_train.parse_args(["--epochs", "0"])
    with pytest.raises(SystemExit):  # argparse: wrong type
        lcnn_train.parse_args(["--lr", "fast"])


def test_spread_limit_takes_both_classes_of_a_sorted_protocol():
    entries = ["bonafide"] * 228 + ["spoof"] * 51  # the mini train protocol's order
    picked = lcnn_train.spread(entries, 20)
    assert len(picked) == 20 and set(picked) == {"bonafide", "spoof"}
    assert lcnn_train.spread(entries, 0) == entries


# ----------------------------------------------------------------------------- train.py: runs


@pytest.fixture(scope="module")
def train_small_run(tmp_path_factory):
    """Three epochs of a small run, uninterrupted (the reference for the resume tests)."""
    if TRAIN_MINI is None:
        pytest.skip("../shared/data/asvspoof2019_la_mini is absent")
    run = tmp_path_factory.mktemp("train") / "run"
    assert lcnn_train.main(_train_small_flags(run, "--epochs", "3")) == 0
    return run


@needs_mini
@pytest.mark.slow
def test_tiny_recipe_lowers_the_loss_and_writes_the_run_folder(tmp_path):
    run = tmp_path / "RUN"
    cmd = [sys.executable, str(TRAIN_ROOT / "train.py"), "--recipe", "tiny", "--data-root", str(TRAIN_MINI), "--out",
           str(run)]  # fmt: skip
    done = subprocess.run(cmd, cwd=TRAIN_ROOT, env=_train_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    history = _train_metrics(run)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1, history
    assert all(h["n_train"] == 279 and h["n_dev"] == 101 and h["n_bad"] == 0 for h in history)
    for name in ("last.pt", "best.pt", "curves.png", "metrics.jsonl", "args.json", "dev_scores.txt"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "args.json").read_text())["recipe"] == "tiny"
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == min(history, key=lambda h: h["dev_eer"])["epoch"]
    assert "recipe tiny" in done.stdout and "ETA" in done.stderr and "loss" in done.stderr  # flags and progress
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temporary files


@needs_mini
def test_checkpoint_is_a_plain_dict_that_loads_with_weights_only(train_small_run):
    ckpt = torch.load(train_small_run / "last.pt", weights_only=True)
    for key in ("model", "model_args", "args", "epoch", "optimizer", "scheduler", "best_dev_eer", "dev_eer", "rng"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 3 and ckpt["args"]["frontend"] == "mel" and ckpt["args"]["recipe"] == "tiny"
    assert ckpt["model_args"] == {"in_bins": 20, "num_frames": 64, "dropout": 0.1, "head": "linear", "margin": 4}
    net, loaded = lcnn_model.load_checkpoint(train_small_run / "best.pt")
    assert not net.training and loaded["epoch"] == loaded["best_epoch"]
    history = _train_metrics(train_small_run)
    assert loaded["best_dev_eer"] == min(h["dev_eer"] for h in history)


@needs_mini
def test_resume_reaches_the_metrics_of_an_uninterrupted_run(train_small_run, tmp_path):
    run = tmp_path / "run"
    lcnn_train.main(_train_small_flags(run, "--epochs", "1"))
    assert len(_train_metrics(run)) == 1
    lcnn_train.main(["--resume", str(run), "--epochs", "3"])  # the checkpoint's flags, 2 more epochs
    keys = ("epoch", "train_loss", "dev_loss", "dev_eer", "lr", "best_epoch")
    assert [{k: h[k] for k in keys} for h in _train_metrics(run)] == [
        {k: h[k] for k in keys} for h in _train_metrics(train_small_run)
    ]
    a = torch.load(run / "last.pt", weights_only=True)["model"]
    b = torch.load(train_small_run / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_mini
@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_identical_metrics(tmp_path):
    # reference and victim both run as subprocesses: the same thread count, so float sums agree bit for bit
    def command(run, *extra):
        return [sys.executable, str(TRAIN_ROOT / "train.py"), *_train_small_flags(run, "--epochs", "3"), *extra]

    ref = subprocess.run(command(tmp_path / "ref"), cwd=TRAIN_ROOT, env=_train_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(command(run), cwd=TRAIN_ROOT, env=_train_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid epoch 2 (or while writing its checkpoint)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] in (1, 2)
    done = subprocess.run([sys.executable, str(TRAIN_ROOT / "train.py"), "--resume", str(run)], cwd=TRAIN_ROOT,
                          env=_train_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    keys = ("epoch", "train_loss", "dev_loss", "dev_eer", "best_epoch")
    assert [{k: h[k] for k in keys} for h in _train_metrics(run)] == [
        {k: h[k] for k in keys} for h in _train_metrics(tmp_path / "ref")
    ]


@needs_mini
def test_resume_with_another_frontend_or_into_a_used_folder_is_a_clear_error(train_small_run):
    with pytest.raises(ValueError, match=r"cannot resume .*last\.pt: trained with --frontend mel, flags say stft"):
        lcnn_train.parse_args(["--resume", str(train_small_run), "--frontend", "stft"])
    with pytest.raises(ValueError, match=r"trained with --num-frames 64, flags say 600"):
        lcnn_train.parse_args(["--resume", str(train_small_run), "--num-frames", "600"])
    with pytest.raises(FileExistsError, match="already holds a run"):
        lcnn_train.main(_train_small_flags(train_small_run))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        lcnn_train.parse_args(["--resume", str(train_small_run / "nothing")])


@needs_mini
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = []
    real = lcnn_train.compute_loss

    def nan_from_epoch_2(logits, labels):
        calls.append(1)
        loss = real(logits, labels)
        return loss * float("nan") if len(calls) > 2 else loss  # 48 files / batch 32: 2 steps per epoch

    monkeypatch.setattr(lcnn_train, "compute_loss", nan_from_epoch_2)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="epoch 2 step 1: the training loss is nan"):
        lcnn_train.main(_train_small_flags(run, "--epochs", "3"))
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert len(_train_metrics(run)) == 1


def _train_tree_with_a_corrupt_file(tmp_path: Path) -> tuple[Path, str]:
    """A copy of a few mini-tree entries (symlinked audio) plus one train file that is not audio."""
    src, dst = TRAIN_MINI, tmp_path / "LA"
    protocols = dst / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True)
    for split, n in (("train", 12), ("dev", 10)):
        name = lcnn_train.find_la_root(src).protocol_path(split).name
        lines = (src / "ASVspoof2019_LA_cm_protocols" / name).read_text().splitlines()
        lines = lcnn_train.spread(lines, n)
        (dst / f"ASVspoof2019_LA_{split}" / "flac").mkdir(parents=True)
        for line in lines:
            utt = line.split()[1]
            (dst / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac").symlink_to(
                src / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac"
            )
        if split == "train":
            lines.append("LA_0079 LA_T_9999999 - - bonafide")
            (dst / "ASVspoof2019_LA_train" / "flac" / "LA_T_9999999.flac").write_bytes(b"not audio" * 100)
        (protocols / name).write_text("\n".join(lines) + "\n")
    return dst, "LA_T_9999999.flac"


@needs_mini
def test_corrupt_file_is_skipped_and_counted_with_skip_bad_and_an_error_without(tmp_path):
    root, bad = _train_tree_with_a_corrupt_file(tmp_path)
    flags = ["--recipe", "tiny", "--data-root", str(root), "--num-frames", "64", "--device", "cpu", "--epochs", "1"]
    lcnn_train.main([*flags, "--out", str(tmp_path / "ok"), "--skip-bad", "--num-workers", "0"])
    (h,) = _train_metrics(tmp_path / "ok")
    assert (h["n_bad"], h["n_train"], h["n_dev"]) == (1, 12, 10)
    with pytest.raises(RuntimeError, match=rf"{bad}: cannot decode audio.*pass --skip-bad"):
        lcnn_train.main([*flags, "--out", str(tmp_path / "fail"), "--num-workers", "1"])  # error from a worker


@needs_mini
def test_asoftmax_bf16_channels_last_cached_run_trains_and_scores(tmp_path):
    run = tmp_path / "run"
    flags = ["--epochs", "1", "--loss", "asoftmax", "--amp", "bf16", "--channels-last", "--cache-audio"]
    lcnn_train.main(_train_small_flags(run, *flags))
    (h,) = _train_metrics(run)
    assert np.isfinite(h["train_loss"]) and 0 <= h["dev_eer"] <= 100
    net, ckpt = lcnn_model.load_checkpoint(run / "last.pt")
    assert ckpt["model_args"]["head"] == "asoftmax" and isinstance(net.classifier.fc32, lcnn_model.AngleLinear)


@needs_mini
def test_patience_stops_when_dev_eer_stops_improving_and_eval_is_never_read(tmp_path, monkeypatch):
    monkeypatch.setattr(lcnn_train, "dev_metrics", lambda scores: dict(dev_loss=0.5, dev_eer=10.0))
    layout_class, splits = type(lcnn_train.find_la_root(TRAIN_MINI)), []
    for method in ("protocol_path", "audio_dir"):  # record every split train.py asks the layout for
        real = getattr(layout_class, method)
        monkeypatch.setattr(
            layout_class, method, lambda self, split, real=real: splits.append(split) or real(self, split)
        )
    lcnn_train.main(_train_small_flags(tmp_path / "run", "--epochs", "5", "--patience", "2", "--limit-train", "16"))
    history = _train_metrics(tmp_path / "run")
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[-1]["best_epoch"] == 1  # ties: earlier epoch
    assert set(splits) == {"train", "dev"}  # the eval split is never touched


@needs_mini
@pytest.mark.slow
def test_torchrun_two_cpu_processes_gather_every_dev_file_once(tmp_path):
    run = tmp_path / "ddp"
    flags = _train_small_flags(run, "--epochs", "1", "--limit-train", "32", "--limit-dev", "21")  # 21: uneven shards
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TRAIN_ROOT / "train.py"), *flags]  # fmt: skip
    env = {k: v for k, v in _train_env().items() if k not in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run(cmd, cwd=TRAIN_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("epoch 1/1: train loss") == 1  # only rank 0 prints
    (h,) = _train_metrics(run)
    # every dev file of the run exactly once, from both ranks
    expected = sorted(e.utt_id for e in lcnn_train.spread(lcnn_train.find_la_root(TRAIN_MINI).protocol("dev"), 21))
    lines = [line.split() for line in (run / "dev_scores.txt").read_text().splitlines()]
    assert sorted(line[0] for line in lines) == expected and h["n_dev"] == 21
    scores = {line[0]: float(line[3]) for line in lines}
    # scoring the same checkpoint in one process gives the same scores and the same EER
    args = lcnn_train.parse_args(["--resume", str(run)])
    frontend = lcnn_train.make_frontend("mel")
    _, dev_loader, _ = lcnn_train.make_loaders(args, frontend)
    net, _ = lcnn_model.load_checkpoint(run / "last.pt")
    single = lcnn_train.gather_scores(lcnn_train.evaluate(net, frontend, dev_loader, torch.device("cpu")))
    assert single["utt_id"] == expected
    assert np.allclose([scores[u] for u in single["utt_id"]], single["score"], atol=1e-5)
    assert lcnn_train.dev_metrics(single)["dev_eer"] == pytest.approx(h["dev_eer"], abs=1e-9)
