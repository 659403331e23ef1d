"""Data sets by name: the catalogue behind ``hub data list`` / ``hub data get``, and where each
kind of data is found when a command is given no path.

The data folder is ``$HUB_DATA_DIR`` when set, else ``platformdirs.user_data_dir("hub")``
(``~/.local/share/hub`` on Linux). Each data set lives in its own sub-folder
(:attr:`Dataset.folder`); :func:`fetch` downloads it there:

* with a rich progress bar (on stderr);
* **resumable**: bytes go to ``<data>/.downloads/<name>/<file>.part``; an interrupted
  download continues with an HTTP ``Range`` request on the next ``hub data get``;
* **checksum-verified**: every file's sha256 is compared with the catalogue before anything is
  unpacked; on a mismatch the partial file and the temporary folder are deleted;
* **atomic**: files are unpacked into a temporary folder next to the target, which is renamed
  into place only when everything is there, so a data set folder is complete or absent;
* **safe when two processes fetch at once**: a :class:`filelock.FileLock` per data set; the
  second process waits, then finds the data present.

Where the data is looked up when no path is given (one function per kind, each one
"explicit path > environment variable > data folder > ``None``"): :func:`cogs_folder`,
:func:`mbpp_file`, :func:`cloze_folder`, :func:`sentiment_folder`, and
:func:`flores_default` (used by :func:`hubclient.inputs.parallel.flores_folder`).

Checksums. The sha256 of every plain file below was computed from the project's shared copy
(``../shared/data``, the authors' files); for COGS ``train.tsv`` and ``dev.tsv`` and the
Chinese word list their MD5 also matches an independent public pin of the upstream file.
Two checksums are **placeholders** (``sha256=None``) to be filled on the first verified
download, because no copy was available here: the FLORES-200 archive
(``flores200_dataset.tar.gz``) and COGS ``gen.tsv``. For those, :func:`fetch` prints the
sha256 it computed and records it in the data set's ``.hub-data.json`` as unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from hubclient.errors import HubError

#: Environment variable naming the data folder.
DATA_ENV = "HUB_DATA_DIR"
#: Name of the record written into each fetched data set's folder.
RECORD = ".hub-data.json"
CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """One file of a data set.

    Attributes:
        url: where it is downloaded from.
        target: path inside the data set's folder (plain files); ignored for archives.
        sha256: expected sha256 (hex), or ``None`` (a placeholder: not verified yet).
        unpack: ``"tar.gz"`` or ``"zip"`` to unpack an archive; ``None`` for a plain file.
        strip: for archives, a leading member folder dropped when unpacking (``flores200_dataset/``).
    """

    url: str
    target: str = ""
    sha256: str | None = None
    unpack: str | None = None
    strip: str = ""

    @property
    def filename(self) -> str:
        """The file name the download is stored under (``target``'s, else the URL's last part)."""
        return (self.target or self.url.rstrip("/").rsplit("/", 1)[-1]).replace("/", "__")


@dataclass(frozen=True)
class Dataset:
    """One catalogue entry.

    Attributes:
        name: what ``hub data get`` takes.
        description: one line.
        licence: licence of the data.
        size: approximate download size.
        homepage: the authors' page.
        folder: sub-folder of the data folder it is unpacked into.
        sources: the files to download.
        marker: a file (relative to the data folder) whose presence means "present";
            alternatives (other layouts, such as the shared ``flores200-devtest/``) too.
        by_hand: how to place the files by hand (for the offline message).
    """

    name: str
    description: str
    licence: str
    size: str
    homepage: str
    folder: str
    sources: tuple[Source, ...]
    marker: tuple[str, ...]
    by_hand: str = ""
    used_by: str = ""

    def present(self, root: Path | None = None) -> Path | None:
        """The folder holding this data set in the data folder ``root``, or ``None``."""
        base = data_dir(root)
        for rel in self.marker:
            if (base / rel).is_file():
                return base / rel.split("/")[0]
        return None


_RAW = "https://raw.githubusercontent.com"
_COGS = f"{_RAW}/najoungkim/COGS/main/data"
_WENDLER = f"{_RAW}/epfl-dlab/llm-latent-language/main/data/langs"
_SENT = f"{_RAW}/tyqiangz/multilingual-sentiment-datasets/main/data"

CATALOGUE: dict[str, Dataset] = {
    ds.name: ds
    for ds in (
        Dataset(
            name="flores200",
            description="FLORES-200 dev (997) and devtest (1,012) sentences, 204 languages, multi-way parallel",
            licence="CC BY-SA 4.0",
            size="~25 MB",
            homepage="https://github.com/facebookresearch/flores/tree/main/flores200",
            folder="flores200",
            sources=(Source("https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz", sha256=None, unpack="tar.gz", strip="flores200_dataset"),),
            marker=("flores200/devtest/eng_Latn.devtest", "flores200-devtest/eng_Latn.devtest"),
            by_hand="unpack it so that flores200/dev/<code>.dev and flores200/devtest/<code>.devtest exist",
            used_by="FLORES codes of similarity, language-probs, translation-lens, neurons, ablate",
        ),
        Dataset(
            name="cogs",
            description="COGS (Kim & Linzen 2020): sentence TAB logical form TAB generalisation type",
            licence="MIT",
            size="~9 MB",
            homepage="https://github.com/najoungkim/COGS",
            folder="cogs",
            sources=(
                Source(f"{_COGS}/train.tsv", "train.tsv", "220b3804b562c0156ee986eff1bdd15c27e52142549362a64f57baf86e304c78"),
                Source(f"{_COGS}/dev.tsv", "dev.tsv", "ab66388a309c7ac1ad210c781a6a0ce12281a9ef24619a12422a752cef61bc21"),
                Source(f"{_COGS}/test.tsv", "test.tsv", "68f8e51e9f6d9cd22d64efe68dd21d7ea5ba327e9a2359481030161aea757035"),
                Source(f"{_COGS}/gen.tsv", "gen.tsv", None),
            ),
            marker=("cogs/test.tsv",),
            by_hand="save train.tsv, dev.tsv, test.tsv (and gen.tsv) in cogs/",
            used_by="hub analyze similarity --task cogs",
        ),
        Dataset(
            name="mbpp",
            description="MBPP (Austin et al. 2021): 974 short Python programs with tests, JSONL",
            licence="CC BY 4.0",
            size="~0.6 MB",
            homepage="https://github.com/google-research/google-research/tree/master/mbpp",
            folder="mbpp",
            sources=(Source("https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl", "mbpp.jsonl", "0b5e07b5b40fedd01c57b7c9177b79f8b2eebd72c304c928605d91a7237d2f33"),),
            marker=("mbpp/mbpp.jsonl",),
            by_hand="save it as mbpp/mbpp.jsonl",
            used_by="hub analyze logit-lens --task code, hub analyze task-lens --task code",
        ),
        Dataset(
            name="latent-language-words",
            description="Wendler et al. 2024 ('Do Llamas Work in English?') word lists with cloze prompts: de, en, fr, ru, zh",
            licence="research use (see the authors' repository)",
            size="~0.2 MB",
            homepage="https://github.com/epfl-dlab/llm-latent-language",
            folder="latent-language-words",
            sources=tuple(
                Source(f"{_WENDLER}/{lang}/clean.csv", f"{lang}/clean.csv", sha)
                for lang, sha in (
                    ("de", "361a99c13b048e25d436fc1b7ba12c1eb7e8c3e19e81986a5927b72b3386531f"),
                    ("en", "7d8633a0ee169ebf88d8664df273bec814061b6abe09d48b69ddde33b50030e2"),
                    ("fr", "8b21471cda4931448d46298f31c4311191a3aa69db35c8611ba84455146d13e9"),
                    ("ru", "0c0cb526e5af8d7d2412b8b75ff8b6766bebc6dd8e3a5d7195985fdfb303b041"),
                    ("zh", "c87f2a137554ab87aadb638d072a7f7718d8bf9260e183e9b2d65319a6b8dafb"),
                )
            ),
            marker=("latent-language-words/zh/clean.csv",),
            by_hand="save each <lang>/clean.csv under latent-language-words/",
            used_by="hub analyze translation-lens --cloze-lang",
        ),
        Dataset(
            name="sentiment",
            description="Multilingual sentiment (text,label,source; positive/neutral/negative): english, spanish, chinese",
            licence="per source data set (Amazon reviews, SemEval 2017, InterTASS 2017)",
            size="~2 MB",
            homepage="https://github.com/tyqiangz/multilingual-sentiment-datasets",
            folder="sentiment",
            sources=tuple(
                Source(f"{_SENT}/{path}", path, sha)
                for path, sha in (
                    ("english/train.csv", "08abf3a6995d732dc1af70892fdcd6728fb27cac00e0dbdde7aa1ac015ff6056"),
                    ("english/valid.csv", "32a36e15fed9d7bf8b857e6a48217715d9e38b001ab8c34824ce2dfc6709617c"),
                    ("english/test.csv", "a7db671f797205d15a0570091e967f9a04c1fc071cb53b4c4197b79b287f8f37"),
                    ("spanish/train.csv", "25ae7837279100e20f113a8f1c3ea64299a264dbeecc53611e80d1db48238269"),
                    ("spanish/valid.csv", "83e85b71571dcec666c5c085fb751ea7882a42e3478a4fe8f48223fce120a357"),
                    ("spanish/test.csv", "ab50d69bf7fc6e7b32d30f692a0b72edec6a5a6cc4553634ff1d9e993b1bf79d"),
                    ("chinese/valid.csv", "c1b20e7b276ce73f9f477e5c0b0359aed101373098bbb9464e2dfe7ae514903f"),
                    ("chinese/test.csv", "5e44c1335c36d5694dc50bff125d0a0c0d4b869968c06fa54ef43606767acce3"),
                )
            ),
            marker=("sentiment/english/test.csv",),
            by_hand="save <language>/<split>.csv under sentiment/",
            used_by="hub intervene steer (--sentiment-data)",
        ),
    )
}


# --------------------------------------------------------------------------- where data lives
def data_dir(root: Path | str | None = None) -> Path:
    """The data folder: ``root`` when given, else ``$HUB_DATA_DIR`` when set and not empty,
    else ``platformdirs.user_data_dir("hub")``. It need not exist."""
    if root is not None and str(root) != "":
        return Path(root)
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("hub"))


def get(name: str) -> Dataset:
    """The catalogue entry ``name``.

    Raises:
        HubError: an unknown name (listing the known ones).
    """
    if name not in CATALOGUE:
        raise HubError(f"unknown data set {name!r}; choose one of {', '.join(CATALOGUE)} (hub data list)")
    return CATALOGUE[name]


def _resolve(given: Path | str | None, env: str, default: Callable[[Path], Path], check: Callable[[Path], bool]) -> Path | None:
    if given is not None and str(given) != "":
        return Path(given)
    value = os.environ.get(env, "").strip() if env else ""
    if value:
        return Path(value)
    path = default(data_dir())
    return path if check(path) else None


def flores_default() -> Path | None:
    """The FLORES folder in the data folder, if present: ``<data>/flores200/devtest`` (from
    ``hub data get flores200``), else ``<data>/flores200-devtest`` (the shared layout)."""
    root = data_dir()
    for candidate in (root / "flores200" / "devtest", root / "flores200-devtest"):
        if candidate.is_dir():
            return candidate
    return None


def cogs_folder(given: Path | str | None = None) -> Path | None:
    """The COGS folder: ``given`` (``--cogs-dir``) > ``$HUB_COGS_DIR`` > ``<data>/cogs`` when it
    exists > ``None``."""
    return _resolve(given, "HUB_COGS_DIR", lambda root: root / "cogs", Path.is_dir)


def mbpp_file(given: Path | str | None = None) -> Path | None:
    """The MBPP JSONL file: ``given`` (``--mbpp``) > ``$HUB_MBPP`` > ``<data>/mbpp/mbpp.jsonl``
    when it exists > ``None``."""
    return _resolve(given, "HUB_MBPP", lambda root: root / "mbpp" / "mbpp.jsonl", Path.is_file)


def cloze_folder(given: Path | str | None = None) -> Path | None:
    """The Wendler et al. word lists (``<lang>/clean.csv``): ``given`` (``--cloze-dir``) >
    ``$HUB_CLOZE_DIR`` > ``<data>/latent-language-words`` when it exists > ``None``."""
    return _resolve(given, "HUB_CLOZE_DIR", lambda root: root / "latent-language-words", Path.is_dir)


def sentiment_folder(given: Path | str | None = None) -> Path | None:
    """The sentiment data folder (``{english,spanish,chinese}/*.csv``): ``given``
    (``--sentiment-data``) > ``$HUB_SENTIMENT_DIR`` > ``<data>/sentiment`` when it exists > ``None``."""
    return _resolve(given, "HUB_SENTIMENT_DIR", lambda root: root / "sentiment", Path.is_dir)


def catalogue_rows(root: Path | str | None = None) -> list[dict[str, Any]]:
    """One row per data set for ``hub data list``: name, description, licence, size, source
    URL(s), whether every checksum is known, and where it is (``None`` when absent)."""
    rows = []
    for ds in CATALOGUE.values():
        urls = [s.url for s in ds.sources]
        rows.append({
            "name": ds.name,
            "description": ds.description,
            "licence": ds.licence,
            "size": ds.size,
            "source": urls[0] if len(urls) == 1 else f"{urls[0].rsplit('/', 2)[0]}/… ({len(urls)} files)",
            "urls": urls,
            "homepage": ds.homepage,
            "verified": all(s.sha256 for s in ds.sources),
            "location": ds.present(root),
            "used_by": ds.used_by,
        })
    return rows


# --------------------------------------------------------------------------- fetching
def fetch(dataset: Dataset | str, root: Path | str | None = None, force: bool = False, progress: bool = True, echo: Callable[[str], None] | None = None, timeout: float = 30.0) -> Path:
    """Download, verify and unpack one data set into the data folder; return its folder.

    Does nothing (but return the folder) when the data set is already present, unless
    ``force``. Safe to call from several processes at once (a file lock per data set).

    Args:
        dataset: a catalogue name or a :class:`Dataset`.
        root: the data folder (default :func:`data_dir`).
        force: download again even when present (the old folder is replaced atomically).
        progress: show a rich progress bar on stderr.
        echo: where to print notes (unverified checksums); default: stderr.
        timeout: seconds to wait for the server.

    Raises:
        HubError: an unknown name; the server cannot be reached (one line naming the URL and
            how to place the files by hand); an HTTP error; an interrupted download (run again
            to resume); a checksum mismatch (the partial download is deleted); an unsafe or
            broken archive.
    """
    from filelock import FileLock

    ds = get(dataset) if isinstance(dataset, str) else dataset
    base = data_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    say = echo or _stderr
    target = base / ds.folder
    with FileLock(str(base / f".{ds.name}.lock")):
        if not force and ds.present(base) is not None:
            return ds.present(base)  # type: ignore[return-value]
        downloads = base / ".downloads" / ds.name
        downloads.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"name": ds.name, "licence": ds.licence, "files": []}
        parts = []
        for source in ds.sources:
            part = downloads / f"{source.filename}.part"
            _download(source.url, part, ds, target, progress, timeout)
            digest = _sha256(part)
            if source.sha256 is not None and digest != source.sha256:
                shutil.rmtree(downloads, ignore_errors=True)
                _remove_empty(base / ".downloads")
                raise HubError(
                    f"checksum mismatch for {source.url}: expected sha256 {source.sha256}, got {digest}; "
                    "the download was deleted, run hub data get again (or the file changed upstream)"
                )
            if source.sha256 is None:
                say(f"note: {source.url} has no checksum in the catalogue; sha256 {digest} (unverified, recorded in {ds.folder}/{RECORD})")
            record["files"].append({"url": source.url, "sha256": digest, "verified": source.sha256 is not None})
            parts.append((source, part))
        tmp = Path(tempfile.mkdtemp(prefix=f".{ds.name}-", dir=base))
        try:
            for source, part in parts:
                if source.unpack:
                    _unpack(part, source, tmp)
                else:
                    dest = tmp / PurePosixPath(source.target)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(part, dest)
            (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{ds.name}-old-", dir=base))
                os.replace(target, old / "data")
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(downloads, ignore_errors=True)
        _remove_empty(base / ".downloads")
    return ds.present(base) or target


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline(url: str, ds: Dataset, target: Path, reason: str) -> HubError:
    how = f"; {ds.by_hand}" if ds.by_hand else ""
    return HubError(f"cannot download {url} ({reason}); offline? place the files by hand: download {url} into {target}{how}, then run hub data list")


def _download(url: str, part: Path, ds: Dataset, target: Path, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    import httpx

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
            if response.status_code == 416 and have:
                return  # the partial file is already complete
            if response.status_code not in (200, 206):
                raise HubError(f"download of {url} failed: HTTP {response.status_code}; check the URL or place the files by hand in {target} (hub data list)")
            append = response.status_code == 206
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            total = (have if append else 0) + expected if expected is not None else None
            received = 0
            with open(part, "ab" if append else "wb") as handle, _bar(progress, part.name[:-5], total, have if append else 0) as advance:
                for chunk in response.iter_bytes():  # no chunk_size: nothing buffered is lost if the stream breaks
                    handle.write(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            if expected is not None and received < expected:
                raise HubError(f"download of {url} was interrupted after {part.stat().st_size} bytes; run hub data get {ds.name} again to resume")
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _offline(url, ds, target, _reason(exc)) from None
    except (httpx.TransportError, httpx.StreamError) as exc:
        size = part.stat().st_size if part.exists() else 0
        raise HubError(f"download of {url} was interrupted after {size} bytes ({_reason(exc)}); run hub data get {ds.name} again to resume") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


class _bar:
    """A rich progress bar for one file, or nothing when ``enabled`` is false."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int) -> None:
        self.enabled, self.label, self.total, self.done = enabled, label, total, done
        self.progress: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total, completed=self.done)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


def _unpack(archive: Path, source: Source, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, dropping ``source.strip``; refuse members outside it."""
    strip = PurePosixPath(source.strip) if source.strip else None

    def relative(name: str) -> PurePosixPath | None:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise HubError(f"{source.url}: unsafe path {name!r} in the archive; not unpacked")
        if strip is not None:
            if path == strip or not path.parts[: len(strip.parts)] == strip.parts:
                return None
            path = PurePosixPath(*path.parts[len(strip.parts):])
        return path if path.parts else None

    try:
        if source.unpack == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = relative(info.filename)
                    if rel is None or info.is_dir():
                        continue
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf.getmembers():
                    rel = relative(member.name)
                    if rel is None or not member.isfile():
                        continue
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    assert src is not None
                    with src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise HubError(f"cannot unpack {archive.name} from {source.url}: {exc}; run hub data get again with --force") from None


__all__ = ["CATALOGUE", "DATA_ENV", "Dataset", "Source", "catalogue_rows", "cloze_folder", "cogs_folder", "data_dir", "fetch", "flores_default", "get", "mbpp_file", "sentiment_folder"]
