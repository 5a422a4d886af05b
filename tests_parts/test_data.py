"""Tests of data.py: protocols, layouts, audio, front-ends, Dataset, --check / --show / --download (all offline)."""

import http.server
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

DATA_REPO = Path(__file__).resolve().parent
while not (DATA_REPO / "data.py").is_file() and DATA_REPO.parent != DATA_REPO:
    DATA_REPO = DATA_REPO.parent
sys.path.insert(0, str(DATA_REPO))

import data  # noqa: E402


def data_shared() -> Path | None:
    """../shared/data seen from the repository (works from tests_parts/ and from the merged test_all.py)."""
    for p in Path(__file__).resolve().parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return None


DATA_SHARED = data_shared()
DATA_MINI = DATA_SHARED / "asvspoof2019_la_mini" / "LA" if DATA_SHARED else None
DATA_PROTOCOLS = DATA_SHARED / "protocols" / "asvspoof2019_la" if DATA_SHARED else None
data_needs_mini = pytest.mark.skipif(DATA_MINI is None or not DATA_MINI.is_dir(), reason="../shared/data absent")
data_needs_protocols = pytest.mark.skipif(
    DATA_PROTOCOLS is None or not DATA_PROTOCOLS.is_dir(), reason="../shared/data/protocols absent"
)
DATA_MINI_COUNTS = {
    "train": (279, 228, {"A01": 6, "A02": 4, "A03": 11, "A04": 14, "A05": 7, "A06": 9}),
    "dev": (101, 50, {"A01": 12, "A02": 7, "A03": 5, "A04": 8, "A05": 10, "A06": 9}),
    "eval": (1, 0, {"A09": 1}),
}


# --- helpers: synthetic trees, a copy of the mini tree, a local HTTP server ---


def data_tone(seconds: float = 0.5, sr: int = 16000, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * 440 * t) * (1 + 0.1 * np.random.default_rng(0).standard_normal(t.size))
    return np.stack([x] * channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


def data_make_tree(la: Path, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    """An official-layout LA tree at `la` with short synthetic FLAC files: splits = {split: [(utt, system, key)]}."""
    (la / data.PROTOCOL_DIR).mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        flac = la / f"ASVspoof2019_LA_{split}" / "flac"
        flac.mkdir(parents=True, exist_ok=True)
        lines = [f"LA_0079 {utt} - {system} {key}" for utt, system, key in rows]
        (la / data.PROTOCOL_DIR / data.PROTOCOL_FILES[split]).write_text("\n".join(lines) + "\n")
        for utt, _, _ in rows:
            sf.write(flac / f"{utt}.flac", data_tone(), 16000, subtype="PCM_16")
    return la


def data_small_tree(la: Path) -> Path:
    return data_make_tree(
        la,
        {
            "train": [
                ("LA_T_0000001", "-", "bonafide"),
                ("LA_T_0000002", "A01", "spoof"),
                ("LA_T_0000003", "A02", "spoof"),
            ],
            "dev": [("LA_D_0000001", "-", "bonafide"), ("LA_D_0000002", "A03", "spoof")],
            "eval": [("LA_E_0000001", "A09", "spoof")],
        },
    )


def data_truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.unlink()  # replaces a symlink by a real, shorter file
    path.write_bytes(raw[: int(len(raw) * keep)])


def data_link_copy(src: Path, dst: Path) -> Path:
    """A copy of an LA tree whose audio files are symlinks (protocols are real copies)."""
    for dirpath, _, files in os.walk(src):
        out = dst / Path(dirpath).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith(".flac"):
                (out / name).symlink_to(Path(dirpath) / name)
            else:
                shutil.copy(Path(dirpath) / name, out / name)
    return dst


def data_zip_of(folder: Path, top: str = "LA") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, f"{top}/{p.relative_to(folder)}")
    return buf.getvalue()


class DataServer:
    """http.server on 127.0.0.1 in a thread serving `files` ({url path: bytes}); optionally honours Range."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def data_server():
    servers = []

    def start(files, ranges=True):
        servers.append(DataServer(files, ranges))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def data_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- protocols ---


@data_needs_protocols
@pytest.mark.parametrize(
    "split,lines,bonafide,spoof,systems",
    [
        ("train", 25_380, 2_580, 22_800, [f"A{i:02d}" for i in range(1, 7)]),
        ("dev", 24_844, 2_548, 22_296, [f"A{i:02d}" for i in range(1, 7)]),
        ("eval", 71_237, 7_355, 63_882, [f"A{i:02d}" for i in range(7, 20)]),
    ],
)
def test_data_real_protocol_counts(split, lines, bonafide, spoof, systems):
    entries = data.read_cm_protocol(DATA_PROTOCOLS / data.PROTOCOL_FILES[split])
    assert len(entries) == lines
    assert sum(e.label == data.LABEL_BONAFIDE for e in entries) == bonafide
    assert sum(e.key == "spoof" for e in entries) == spoof
    assert sorted({e.system for e in entries if e.key == "spoof"}) == systems
    assert {e.system for e in entries if e.key == "bonafide"} == {"-"}
    first = entries[0]
    assert isinstance(first, data.ProtocolEntry) and first.speaker.startswith("LA_") and first.utt_id.startswith("LA_")


@pytest.mark.parametrize(
    "bad_line,expected",
    [
        ("LA_0079 LA_T_2 - bonafide", r"expected 5 fields \(speaker utt_id - system key\), got 4"),
        ("LA_0079 LA_T_2 - - genuine", r"key must be 'bonafide' or 'spoof', got 'genuine'"),
        ("LA_0079 LA_T_2 - B01 spoof", r"system must be '-' for bonafide and A01..A19 for spoof, got 'B01'"),
        ("LA_0079 LA_T_2 - A20 spoof", r"A01..A19 for spoof, got 'A20'"),
        ("LA_0079 LA_T_2 - A01 bonafide", r"got 'A01' with key 'bonafide'"),
    ],
)
def test_data_malformed_protocol_line_names_file_line_and_expectation(tmp_path, bad_line, expected):
    p = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    p.write_text(f"LA_0079 LA_T_1 - - bonafide\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"ASVspoof2019\.LA\.cm\.train\.trn\.txt line 2: .*" + expected) as err:
        data.read_cm_protocol(p)
    assert bad_line in str(err.value)


def test_data_protocol_repeated_utt_and_missing_file(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_1 - A01 spoof\n")
    with pytest.raises(ValueError, match="p.txt line 2: utt id LA_T_1 already on line 1"):
        data.read_cm_protocol(p)
    with pytest.raises(FileNotFoundError, match="CM protocol not found"):
        data.read_cm_protocol(tmp_path / "absent.txt")


# --- layouts ---


@data_needs_mini
def test_data_layouts_official_parent_and_kaggle_copy(tmp_path):
    kaggle = tmp_path / "kaggle"
    (kaggle / "LA").mkdir(parents=True)
    (kaggle / "LA" / "LA").symlink_to(DATA_MINI.resolve())
    want = DATA_MINI.resolve()
    for root in (DATA_MINI, DATA_MINI.parent, kaggle, kaggle / "LA"):
        layout = data.find_la_root(root)
        assert layout.root.resolve() == want
        assert layout.audio_path("train", "LA_T_4179989").is_file()
        assert layout.protocol_path("eval").is_file()


def test_data_wrong_root_lists_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.find_la_root(tmp_path)
    msg = str(err.value)
    for c in (tmp_path, tmp_path / "LA", tmp_path / "LA" / "LA"):
        assert str(c) in msg
    assert "ASVspoof2019_LA_cm_protocols" in msg and "--data-root" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.find_la_root(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no --data-root given"):
        data.find_la_root(None)


# --- audio: fix_length, augmentation ---


def test_data_fix_length_repeat_zeros_and_crop():
    w = torch.arange(5.0)
    assert data.fix_length(w, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert data.fix_length(w, 7, pad="zeros").tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert data.fix_length(w, 3).tolist() == [0, 1, 2]  # evaluation: from the start
    assert data.fix_length(w, 5, random_crop=True).tolist() == w.tolist()
    torch.manual_seed(0)
    starts = set()
    for _ in range(50):
        c = data.fix_length(torch.arange(100.0), 10, random_crop=True)
        assert c.tolist() == list(range(int(c[0]), int(c[0]) + 10))  # one contiguous window
        starts.add(int(c[0]))
    assert len(starts) > 10 and max(starts) <= 90
    with pytest.raises(ValueError, match="pad must be 'repeat' or 'zeros'"):
        data.fix_length(w, 9, pad="reflect")
    with pytest.raises(ValueError, match="non-empty waveform"):
        data.fix_length(torch.zeros(0), 9)


def test_data_augment_draws_each_branch_and_volume_is_exactly_125_percent():
    torch.manual_seed(0)
    w = torch.linspace(-0.5, 0.5, 1000)
    seen = set()
    for _ in range(60):
        out = data.augment_waveform(w)
        if torch.equal(out, w):
            seen.add("same")
        elif torch.equal(out, w * 1.25):
            seen.add("volume")
        else:
            noise = out - w
            assert 0.002 < float(noise.std()) < 0.01  # additive Gaussian, std 0.005
            seen.add("noise")
    assert seen == {"same", "volume", "noise"}


@data_needs_mini
def test_data_augment_is_refused_outside_training():
    with pytest.raises(ValueError, match="training only"):
        data.ASVspoof2019LA(DATA_MINI, "dev", 16000, augment=True)
    with pytest.raises(ValueError, match="training only"):
        data.ASVspoof2019LA(DATA_MINI, "eval", 16000, augment=True)


# --- front-ends ---


def test_data_stft_frontend_matches_torchaudio_spectrogram():
    import torchaudio

    torch.manual_seed(0)
    fe = data.STFTFrontEnd()
    wave = 0.1 * torch.randn(2, fe.num_samples(50))
    ref = torchaudio.transforms.Spectrogram(
        n_fft=1724, win_length=1724, hop_length=130, window_fn=torch.blackman_window, power=2
    )(wave)
    ours = fe(wave)
    assert ours.shape == (2, 1, 863, 50)
    torch.testing.assert_close(ours[:, 0], torch.log(ref + fe.eps), rtol=1e-4, atol=1e-4)
    assert fe.n_bins == 863 and fe.num_samples(600) == 77_870
    assert fe.bin_frequencies()[-1] == 8000 and abs(fe.frame_times(2)[1] - 0.008125) < 1e-9


def test_data_mel_frontend_matches_torchaudio_melspectrogram():
    import torchaudio

    torch.manual_seed(0)
    fe = data.LogMelFrontEnd()
    wave = 0.1 * torch.randn(2, fe.num_samples(60))
    ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=320, hop_length=160, n_mels=20)(
        wave
    )
    ours = fe(wave)
    assert ours.shape == (2, 1, 20, 60)
    torch.testing.assert_close(ours[:, 0], torch.log(ref + fe.eps), rtol=1e-4, atol=1e-4)
    centres = fe.bin_frequencies()
    assert centres.shape == (20,) and np.all(np.diff(centres) > 0) and 0 < centres[0] < centres[-1] < 8000


@data_needs_mini
@pytest.mark.parametrize("frontend,shape", [("stft", (1, 863, 600)), ("mel", (1, 20, 600))])
def test_data_item_shapes_on_real_files(frontend, shape):
    fe = data.make_frontend(frontend)
    ds = data.ASVspoof2019LA(DATA_MINI, "train", fe.num_samples(600), frontend=fe, pad="zeros")
    i = [e.utt_id for e in ds.entries].index("LA_T_4179989")
    x, label, utt_id, system, speaker = ds[i]
    assert tuple(x.shape) == shape and torch.isfinite(x).all()
    assert (label, utt_id, system, speaker) == (data.LABEL_BONAFIDE, "LA_T_4179989", "-", "LA_0079")
    raw = data.ASVspoof2019LA(DATA_MINI, "eval", fe.num_samples(600))  # frontend=None: waveforms
    wave, label, _, system, _ = raw[0]
    assert tuple(wave.shape) == (fe.num_samples(600),) and (label, system) == (data.LABEL_SPOOF, "A09")


# --- --check ---


@data_needs_mini
@pytest.mark.parametrize("where", ["official", "parent", "kaggle"])
def test_data_check_json_on_the_mini_tree(tmp_path, capsys, where):
    root = {"official": DATA_MINI, "parent": DATA_MINI.parent, "kaggle": tmp_path / "k"}[where]
    if where == "kaggle":
        (root / "LA").mkdir(parents=True)
        (root / "LA" / "LA").symlink_to(DATA_MINI.resolve())
    assert data.main(["--data-root", str(root), "--check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == 0 and Path(report["root"]) == DATA_MINI.resolve()
    for split, (files, bonafide, systems) in DATA_MINI_COUNTS.items():
        s = report["splits"][split]
        assert (s["files"], s["bonafide"], s["spoof"], s["systems"]) == (files, bonafide, files - bonafide, systems)
        assert s["checked"] == files and s["problems"] == [] and s["duration_s"] > 0


@data_needs_mini
def test_data_check_table_and_split_flag(capsys):
    assert data.main(["--data-root", str(DATA_MINI), "--check", "--split", "dev", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "dev" in out and "A01 12" in out and "no problems found" in out and "train" not in out.split("\n", 2)[2]


@data_needs_mini
def test_data_check_deep_names_deleted_and_truncated_files(tmp_path, capsys):
    la = data_link_copy(DATA_MINI, tmp_path / "LA")
    deleted = la / "ASVspoof2019_LA_train" / "flac" / "LA_T_4179989.flac"
    truncated = la / "ASVspoof2019_LA_dev" / "flac" / "LA_D_1105131.flac"
    deleted.unlink()
    data_truncate(truncated)
    for deep in (["--deep"], []):  # the default header check catches the truncation too
        assert data.main(["--data-root", str(la), "--check", "--json", *deep]) == 1
        report = json.loads(capsys.readouterr().out)
        problems = {p["utt_id"]: p for s in report["splits"].values() for p in s["problems"]}
        assert report["problems"] == 2 and set(problems) == {"LA_T_4179989", "LA_D_1105131"}
        assert problems["LA_T_4179989"]["problem"].startswith("missing") and problems["LA_T_4179989"]["path"] == str(
            deleted
        )
        assert "truncated" in problems["LA_D_1105131"]["problem"] and problems["LA_D_1105131"]["path"] == str(truncated)
    assert data.main(["--data-root", str(la), "--check"]) == 1
    out = capsys.readouterr().out
    assert str(deleted) in out and str(truncated) in out and "2 problem(s)" in out


def test_data_check_audio_file_flags_rate_stereo_silence_empty_and_garbage(tmp_path):
    sf.write(tmp_path / "ok.flac", data_tone(), 16000)
    sf.write(tmp_path / "rate.flac", data_tone(sr=22050), 22050)
    sf.write(tmp_path / "stereo.flac", data_tone(channels=2), 16000)
    sf.write(tmp_path / "silent.flac", np.zeros(8000, dtype=np.float32), 16000)
    sf.write(tmp_path / "noframes.wav", np.zeros(0, dtype=np.float32), 16000)
    (tmp_path / "garbage.flac").write_bytes(b"not audio at all" * 10)
    assert data.check_audio_file(tmp_path / "ok.flac", deep=True) == (0.5, [])
    assert "wrong sample rate: 22050 Hz, expected 16000 Hz" in data.check_audio_file(tmp_path / "rate.flac")[1]
    assert "2 channels, expected mono" in data.check_audio_file(tmp_path / "stereo.flac")[1]
    assert data.check_audio_file(tmp_path / "silent.flac")[1] == []  # silence needs --deep
    assert data.check_audio_file(tmp_path / "silent.flac", deep=True)[1][0].startswith("silent: peak amplitude")
    assert "empty" in data.check_audio_file(tmp_path / "noframes.wav")[1][0]
    assert data.check_audio_file(tmp_path / "garbage.flac")[1][0].startswith("unreadable")


def test_data_check_reports_missing_folder_protocol_and_empty_file(tmp_path, capsys):
    la = data_small_tree(tmp_path / "LA")
    shutil.rmtree(la / "ASVspoof2019_LA_eval")
    (la / data.PROTOCOL_DIR / data.PROTOCOL_FILES["dev"]).unlink()
    (la / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000002.flac").write_bytes(b"")
    sf.write(la / "ASVspoof2019_LA_train" / "flac" / "LA_T_9999999.flac", data_tone(), 16000)  # in no protocol
    report = data.check_dataset(la)
    train, dev, ev = (report["splits"][s] for s in data.SPLITS)
    assert [p["problem"] for p in train["problems"]] == ["empty file (0 bytes)"] and train["unlisted"] == 1
    assert "CM protocol not found" in dev["problems"][0]["problem"]
    assert ev["problems"][0]["problem"].startswith("missing folder") and ev["files"] == 1
    assert report["problems"] == 3
    assert data.main(["--data-root", str(la), "--check"]) == 1
    assert "missing folder" in capsys.readouterr().out


# --- Dataset over a tree with problems, collate ---


def test_data_dataset_lists_every_problem_or_skips_and_counts(tmp_path, capsys):
    la = data_small_tree(tmp_path / "LA")
    (la / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000002.flac").unlink()
    data_truncate(la / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000003.flac")
    with pytest.raises(FileNotFoundError, match=r"(?s)1 problem\(s\).*LA_T_0000002\.flac: missing"):
        data.ASVspoof2019LA(la, "train", 8000)
    with pytest.raises(RuntimeError) as err:
        data.ASVspoof2019LA(la, "train", 8000, verify=True)
    assert "2 problem(s)" in str(err.value) and "LA_T_0000002.flac: missing" in str(err.value)
    assert "LA_T_0000003.flac: truncated" in str(err.value) and "--skip-bad" in str(err.value)
    with pytest.raises(RuntimeError, match=r"(?s)2 problem\(s\).*LA_T_0000002\.flac: missing.*LA_T_0000003\.flac"):
        data.ASVspoof2019LA(la, "train", 8000, cache=True)
    capsys.readouterr()
    for kwargs in ({"verify": True}, {"cache": True}):
        ds = data.ASVspoof2019LA(la, "train", 8000, skip_bad=True, **kwargs)
        assert [e.utt_id for e in ds.entries] == ["LA_T_0000001"] and len(ds.skipped) == 2
        assert "skipped 2 of 3 files" in capsys.readouterr().err
        assert ds[0][0].shape == (8000,)
    ds = data.ASVspoof2019LA(la, "train", 8000, skip_bad=True)  # no verify: the truncated file is met later
    assert len(ds) == 2 and ds[1] is None
    batch = data.collate([ds[0], ds[1], ds[0]])
    assert batch["x"].shape == (2, 8000) and batch["n_bad"] == 1 and batch["label"].tolist() == [1, 1]
    assert batch["utt_id"] == ["LA_T_0000001"] * 2 and batch["system"] == ["-", "-"]
    assert data.collate([None, None]) == {"n_bad": 2, "x": None}


def test_data_dataset_fails_on_missing_folder_even_when_skipping(tmp_path):
    la = data_small_tree(tmp_path / "LA")
    shutil.rmtree(la / "ASVspoof2019_LA_dev")
    for skip in (False, True):
        with pytest.raises(FileNotFoundError, match="missing folder"):
            data.ASVspoof2019LA(la, "dev", 8000, skip_bad=skip)


# --- --show ---


@data_needs_mini
@pytest.mark.parametrize(
    "flags", [["--frontend", "stft"], ["--frontend", "mel", "--pad", "zeros", "--num-frames", "300"]]
)
def test_data_show_writes_a_png(tmp_path, capsys, flags):
    out = tmp_path / "pics" / f"{flags[1]}.png"
    argv = ["--data-root", str(DATA_MINI.parent), "--show", "LA_T_4179989", "--out", str(out), *flags]
    assert data.main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert str(out) in capsys.readouterr().out


@data_needs_mini
def test_data_show_unknown_utt_and_missing_out(tmp_path):
    with pytest.raises(ValueError, match="utt id 'LA_T_0000000' is in no CM protocol"):
        data.main(["--data-root", str(DATA_MINI), "--show", "LA_T_0000000", "--out", str(tmp_path / "x.png")])
    with pytest.raises(ValueError, match="--show needs --out"):
        data.main(["--data-root", str(DATA_MINI), "--show", "LA_T_4179989"])


def test_data_flags_of_another_action_are_refused():
    with pytest.raises(ValueError, match="--json goes with --check"):
        data.main(["--download", "--to", "x", "--json"])
    with pytest.raises(ValueError, match="--to goes with --download"):
        data.main(["--check", "--to", "x"])


# --- --download (local server only: never the internet) ---


def test_data_download_extract_and_check_from_a_local_server(tmp_path, data_server, capsys):
    body = data_zip_of(data_small_tree(tmp_path / "src" / "LA"))
    server = data_server({"/LA.zip": body})
    to = tmp_path / "dl"
    assert data.main(["--download", "--to", str(to), "--url", server.url + "/LA.zip"]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert (to / "LA" / data.PROTOCOL_DIR).is_dir() and (to / ".completed-LA").is_file()
    assert not (to / "LA.zip").exists() and not list(to.glob(".LA.zip.extracting-*"))
    server.close()  # idempotent: a second run needs no network
    assert data.main(["--download", "--to", str(to), "--url", server.url + "/LA.zip"]) == 0
    assert "already downloaded" in capsys.readouterr().err


@pytest.mark.parametrize("ranges", [True, False])
def test_data_download_resumes_a_partial_file(tmp_path, data_server, ranges):
    body = os.urandom(3_000_000)
    server = data_server({"/big.bin": body}, ranges=ranges)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(body[:1_234_567])
    assert data.download(server.url + "/big.bin", dest, progress=False) == dest
    assert dest.read_bytes() == body and not (tmp_path / "big.bin.part").exists()
    assert server.requests == [("/big.bin", "bytes=1234567-")]  # asked for the rest only


def test_data_download_part_already_whole_and_http_error(tmp_path, data_server):
    body = b"x" * 1000
    server = data_server({"/f": body})
    (tmp_path / "f.part").write_bytes(body)
    assert data.download(server.url + "/f", tmp_path / "f", progress=False).read_bytes() == body  # 416 -> done
    with pytest.raises(ConnectionError, match="HTTP 404.*by hand"):
        data.download(server.url + "/absent", tmp_path / "g", hand="download it by hand", progress=False)


def test_data_download_offline_fails_fast_with_hand_instructions(tmp_path):
    url = f"http://127.0.0.1:{data_closed_port()}/LA.zip"
    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        data.main(["--download", "--to", str(tmp_path / "dl"), "--url", url, "--timeout", "3"])
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "datashare.ed.ac.uk/handle/10283/3336" in msg and "by hand" in msg and str(tmp_path / "dl") in msg
    with pytest.raises(ConnectionError, match="zenodo.org/records/7314976"):
        data.main(["--download", "--to", str(tmp_path / "v"), "--source", "vocv4", "--url", url])


def test_data_extract_refuses_damaged_archive_and_existing_target(tmp_path):
    bad = tmp_path / "LA.zip"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match="not a zip or tar|damaged"):
        data.extract_archive(bad, tmp_path)
    good = tmp_path / "good.zip"
    good.write_bytes(data_zip_of(data_small_tree(tmp_path / "src" / "LA")))
    (tmp_path / "LA").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        data.extract_archive(good, tmp_path)
    assert not list(tmp_path.glob(".good.zip.extracting-*"))


def test_data_download_vocv4_tar(tmp_path, data_server, capsys):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, payload in [
            ("voc.v4/protocol.txt", b"LA_0079 LA_T_1 - - spoof\n"),
            ("voc.v4/wav/LA_T_1.wav", b"RIFF"),
        ]:
            info = tarfile.TarInfo(f"project09-voc.v4/{name}")
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    server = data_server({"/project09-voc.v4.tar": buf.getvalue()})
    to = tmp_path / "voc"
    url = server.url + "/project09-voc.v4.tar"
    assert data.main(["--download", "--to", str(to), "--source", "vocv4", "--url", url, "--keep-archive"]) == 0
    assert (to / "project09-voc.v4.tar").read_bytes() == buf.getvalue() and (to / ".completed-vocv4").is_file()
    root = to / "project09-voc.v4" / "voc.v4"
    assert "1 protocol lines, 1 wav files" in capsys.readouterr().out and data.find_vocv4_root(to) == root
    with pytest.raises(FileNotFoundError, match="no voc.v4 folder"):
        data.find_vocv4_root(tmp_path / "src")


def test_data_kaggle_without_the_tool_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FileNotFoundError, match=r"pip install kaggle.*kaggle\.json"):
        data.main(["--download", "--to", str(tmp_path), "--source", "kaggle"])


def test_data_kaggle_with_a_fake_tool_gives_the_la_la_nesting(tmp_path, monkeypatch, capsys):
    zip_path = tmp_path / "asvpoof-2019-dataset.zip"
    zip_path.write_bytes(data_zip_of(data_small_tree(tmp_path / "src" / "LA"), top="LA/LA"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "kaggle"
    tool.write_text(
        f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\n"
        f"assert args[:3] == ['datasets', 'download', '-d'] and args[3] == {data.KAGGLE_DATASET!r}\n"
        f"shutil.copy({str(zip_path)!r}, args[args.index('-p') + 1])\n"
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    to = tmp_path / "dl"
    assert data.main(["--download", "--to", str(to), "--source", "kaggle"]) == 0
    assert (to / "LA" / "LA" / data.PROTOCOL_DIR).is_dir() and not (to / ".kaggle-download").exists()
    assert data.find_la_root(to).root == to / "LA" / "LA"
    assert "no problems found" in capsys.readouterr().out


# --- progress line ---


def test_data_progress_line_in_megabytes_and_unknown_total():
    stream = io.StringIO()
    bar = data.Progress(3_000_000, "LA.zip", unit="MB", scale=1e6, stream=stream)
    bar.update(1_500_000)
    assert "LA.zip: 1.5/3.0 MB (50%)" in stream.getvalue() and "MB/s" in stream.getvalue()
    unknown = data.Progress(0, "x", unit="MB", scale=1e6, stream=io.StringIO(), every=1e9)
    unknown.update(10)
    unknown.update(10)
    assert unknown.stream.getvalue().count("\n") == 1 and "ETA ?" in unknown.stream.getvalue()
