"""``hub data``: the catalogue, downloads from a loopback HTTP server (Range supported), and
where each kind of data is found by default."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubclient.errors import HubError
from hubclient.inputs import data
from hubclient.inputs.data import Dataset, Source

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A loopback HTTP server of in-memory files; honours ``Range: bytes=N-``. ``cut[path] = n``
    makes the next full response stop after ``n`` bytes (an interrupted download)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if self.path in outer.cut and not rng:
                    payload = payload[: outer.cut.pop(self.path)]
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def make_tar(files: dict[str, bytes], prefix: str = "pack") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def fixture_dataset(server: Server, name: str = "tiny", corrupt: bool = False, size: int = 200_000) -> Dataset:
    """A FLORES-like archive (dev/, devtest/) plus one plain file, served by ``server``."""
    text = "".join(f"sentence {i}\n" for i in range(size // 12)).encode()
    archive = make_tar({"devtest/eng_Latn.devtest": text, "devtest/spa_Latn.devtest": text, "dev/eng_Latn.dev": b"a\nb\n"}, prefix="tiny_dataset")
    extra = b"licence text\n"
    server.files[f"/{name}.tar.gz"] = archive
    server.files[f"/{name}/LICENSE"] = extra
    return Dataset(
        name=name, description="test data", licence="CC0", size="1 MB", homepage="http://example.invalid", folder=name,
        sources=(
            Source(server.url(f"/{name}.tar.gz"), sha256=("0" * 64 if corrupt else sha(archive)), unpack="tar.gz", strip="tiny_dataset"),
            Source(server.url(f"/{name}/LICENSE"), "LICENSE", sha(extra)),
        ),
        marker=(f"{name}/devtest/eng_Latn.devtest",), by_hand="unpack it into tiny/",
    )


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


def test_fetch_success_unpacks_atomically(server, tmp_path):
    ds = fixture_dataset(server)
    folder = data.fetch(ds, tmp_path, progress=False)
    assert folder == tmp_path / "tiny"
    assert (folder / "devtest" / "eng_Latn.devtest").read_text().startswith("sentence 0\n")
    assert (folder / "dev" / "eng_Latn.dev").read_text() == "a\nb\n"
    assert (folder / "LICENSE").read_bytes() == b"licence text\n"
    assert (folder / data.RECORD).is_file()
    assert leftovers(tmp_path) == ["tiny"]  # no temp folder, no .downloads
    n = len(server.requests)
    assert data.fetch(ds, tmp_path, progress=False) == folder  # present: nothing downloaded
    assert len(server.requests) == n


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    ds = fixture_dataset(server, corrupt=True)
    with pytest.raises(HubError, match="checksum mismatch for http://127.0.0.1:.*/tiny.tar.gz"):
        data.fetch(ds, tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    ds = fixture_dataset(server)
    path = "/tiny.tar.gz"
    server.cut[path] = 5000
    with pytest.raises(HubError, match="interrupted after 5000 bytes.*again to resume"):
        data.fetch(ds, tmp_path, progress=False)
    part = tmp_path / ".downloads" / "tiny" / "tiny.tar.gz.part"
    assert part.stat().st_size == 5000
    assert not (tmp_path / "tiny").exists()
    folder = data.fetch(ds, tmp_path, progress=False)
    assert (path, "bytes=5000-") in server.requests
    assert (folder / "devtest" / "spa_Latn.devtest").is_file()
    assert leftovers(tmp_path) == ["tiny"]


def test_two_processes_fetch_at_once(server, tmp_path):
    ds = fixture_dataset(server, size=2_000_000)
    code = (
        "import sys; from hubclient.inputs import data; from hubclient.inputs.data import Dataset, Source\n"
        f"ds = Dataset(name='tiny', description='', licence='', size='', homepage='', folder='tiny', marker=('tiny/devtest/eng_Latn.devtest',), "
        f"sources=(Source({ds.sources[0].url!r}, sha256={ds.sources[0].sha256!r}, unpack='tar.gz', strip='tiny_dataset'), Source({ds.sources[1].url!r}, 'LICENSE', {ds.sources[1].sha256!r})))\n"
        "print(data.fetch(ds, sys.argv[1], progress=False))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert out.strip() == str(tmp_path / "tiny")
    archive_gets = [r for r in server.requests if r[0] == "/tiny.tar.gz"]
    assert len(archive_gets) == 1  # the second process waited for the lock and found the data
    assert leftovers(tmp_path) == ["tiny"]
    assert (tmp_path / "tiny" / "devtest" / "eng_Latn.devtest").stat().st_size > 1_000_000


def test_offline_message_names_url_and_hand_placement(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connection refused
    url = f"http://127.0.0.1:{port}/flores200_dataset.tar.gz"
    ds = Dataset(name="off", description="", licence="", size="", homepage="", folder="off", sources=(Source(url, unpack="tar.gz"),), marker=("off/x",), by_hand="unpack it into off/")
    with pytest.raises(HubError) as info:
        data.fetch(ds, tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot download {url} (connection refused)" in message
    assert f"place the files by hand: download {url} into {tmp_path / 'off'}; unpack it into off/" in message


def test_cli_data_get_and_list(server, tmp_path, monkeypatch):
    from hubclient.cli import app

    ds = fixture_dataset(server, name="flores200")
    monkeypatch.setitem(data.CATALOGUE, "flores200", Dataset(**{**ds.__dict__, "marker": ("flores200/devtest/eng_Latn.devtest",)}))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    assert "absent: hub data get flores200" in result.output
    result = runner.invoke(app, ["data", "get", "flores200"])
    assert result.exit_code == 0, result.output
    assert f"flores200: {tmp_path / 'flores200'}" in result.output
    assert "present:" in runner.invoke(app, ["data", "list"]).output
    # by name: FLORES codes now resolve to the data folder
    from hubclient.inputs.parallel import flores_file, flores_folder

    monkeypatch.delenv("HUB_FLORES_DIR", raising=False)
    assert flores_folder(None) == tmp_path / "flores200" / "devtest"
    assert flores_file("spa_Latn", None) == tmp_path / "flores200" / "devtest" / "spa_Latn.devtest"
    result = runner.invoke(app, ["data", "get", "nope"])
    assert result.exit_code == 2 and "error: unknown data set 'nope'" in result.output


def test_catalogue_entries_are_complete():
    for ds in data.CATALOGUE.values():
        assert ds.name and ds.description and ds.licence and ds.size and ds.homepage.startswith("https://")
        for source in ds.sources:
            assert source.url.startswith("https://")
            assert source.sha256 is None or len(source.sha256) == 64
    assert set(data.CATALOGUE) == {"flores200", "cogs", "mbpp", "latent-language-words", "sentiment"}


# --------------------------------------------------------------------------- precedence
def test_precedence_explicit_env_data_folder(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for sub in ("cogs", "latent-language-words", "sentiment", "mbpp", "flores200/devtest"):
        (root / sub).mkdir(parents=True)
    (root / "mbpp" / "mbpp.jsonl").write_text("{}\n")
    monkeypatch.setenv("HUB_DATA_DIR", str(root))
    for env in ("HUB_COGS_DIR", "HUB_MBPP", "HUB_CLOZE_DIR", "HUB_SENTIMENT_DIR", "HUB_FLORES_DIR"):
        monkeypatch.delenv(env, raising=False)
    from hubclient.inputs.parallel import flores_folder

    assert data.cogs_folder() == root / "cogs"
    assert data.mbpp_file() == root / "mbpp" / "mbpp.jsonl"
    assert data.cloze_folder() == root / "latent-language-words"
    assert data.sentiment_folder() == root / "sentiment"
    assert flores_folder() == root / "flores200" / "devtest"
    monkeypatch.setenv("HUB_COGS_DIR", "/env/cogs")
    monkeypatch.setenv("HUB_FLORES_DIR", "/env/flores")
    assert data.cogs_folder() == Path("/env/cogs")
    assert flores_folder() == Path("/env/flores")
    assert data.cogs_folder("/given") == Path("/given")
    assert flores_folder("/given") == Path("/given")
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("HUB_COGS_DIR")
    monkeypatch.delenv("HUB_FLORES_DIR")
    assert data.cogs_folder() is None and data.mbpp_file() is None and flores_folder() is None


def test_shared_data_found_by_name(monkeypatch):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "flores200-devtest").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HUB_SHARED_DATA)")
    monkeypatch.setenv("HUB_DATA_DIR", str(SHARED_DATA))
    monkeypatch.delenv("HUB_FLORES_DIR", raising=False)
    from hubclient.inputs.parallel import read_flores
    from hubclient.inputs.tasks import TaskOptions, similarity_corpus

    corpus = read_flores(["eng_Latn", "zho_Hans"], None, n=3)
    assert corpus.languages == ["eng_Latn", "zho_Hans"] and corpus.n == 3
    assert similarity_corpus(TaskOptions(task="cogs", n=3)).n == 3
    rows = {row["name"]: row["location"] for row in data.catalogue_rows()}
    assert rows["cogs"] == SHARED_DATA / "cogs" and rows["flores200"] == SHARED_DATA / "flores200-devtest"
