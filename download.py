"""download.py -- fetch ASVspoof 2019 LA (official LA.zip or the Kaggle copy) and the voc.v4 vocoded set.

    python download.py --to /data/asvspoof2019 [--source datashare|kaggle] [--url MIRROR] [--keep-archive]
    python download.py --to /data/vocv4 --source vocv4

(`python data.py --download ...` does the same and then runs `--check` on the tree.)

lhotse's recipe idea: idempotent (a `.completed-*` marker in the target folder), resumable (an HTTP Range request
continues a `.part` file), extraction that cannot write outside the folder, fail-fast offline (DNS and connect
within --timeout) with a one-line message saying how to download by hand. Standard library only.

Inside: `download` (+ `copy_response`, `check_reachable`, `parse_content_range`, `ensure_free_space`),
`extract_archive`, `fetch_with_kaggle`, `download_la`, `download_vocv4`, `summarize_vocv4`, `hand_download_message`,
and the command line (`build_parser`, `main`).
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
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from cli import ArgumentParser, Progress, run_cli
from corpora import PROTOCOL_DIR, find_la_root, find_vocv4_root

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


# ----------------------------------------------------------------------------- command line

SOURCES = ("datashare", "kaggle", "vocv4")


def add_download_args(g) -> None:
    """The download flags, shared by this script and `data.py --download`."""
    g.add_argument("--to", metavar="DIR", help="folder to download and extract into")
    g.add_argument("--source", choices=SOURCES, default="datashare",
                   help="official LA.zip (datashare), the Kaggle copy (your `kaggle` tool) or voc.v4")  # fmt: skip
    g.add_argument("--url", help="another URL for the archive (a mirror)")
    g.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    g.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")


def fetch(args: argparse.Namespace) -> Path:
    """Run the download the flags ask for; returns the folder to check (LA) or the voc.v4 folder."""
    if not args.to:
        raise ValueError("--download needs --to DIR, the folder to download and extract into")
    if args.source == "vocv4":
        return download_vocv4(args.to, args.url, args.keep_archive, args.timeout)
    return download_la(args.to, args.source, args.url, args.keep_archive, args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_download_args(parser.add_argument_group("download.py"))
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    where = fetch(args)
    if args.source == "vocv4":
        print(summarize_vocv4(where))
    else:
        print(f"{where}: downloaded; check it with: python data.py --data-root {where} --check")
    return 0


if __name__ == "__main__":
    run_cli(main)
