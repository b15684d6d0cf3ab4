"""Downloads against a local HTTP server (with Range support, drops and stalls) instead of Google Drive."""

import importlib
import io
import json
import pickle
import re
import socket
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sceneseg.data.download import DownloadFailed, cached_archive_path, fetch_archive
from sceneseg.data.sources import materialize
from sceneseg.data.synthetic import generate_movie

DRIVE_ID = "1oZSOkd4lFmbY205VKQ9aPv1Hz3T_-N6e"
HINT = (f"download https://drive.google.com/file/d/{DRIVE_ID}/view in a browser, then set "
        "data.source: local and data.path: <the downloaded zip>")


@pytest.fixture(autouse=True)
def _fast_gdown(monkeypatch):
    """gdown waits up to 2**attempt s (random) between retries, and writes 512 KiB chunks:
    tests need no wait, and small chunks so that half of a tiny archive reaches the disk."""
    gdown_download = importlib.import_module("gdown.download")
    monkeypatch.setattr(gdown_download, "_wait_or_cancel", lambda **kw: None)
    monkeypatch.setattr(gdown_download, "CHUNK_SIZE", 1024)


def _archive(counts: dict[str, int]) -> bytes:
    """A zip in the archive's layout (data/tt*.pkl) of tiny synthetic movies at real dims."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, (imdb_id, n) in enumerate(counts.items()):
            z.writestr(f"data/{imdb_id}.pkl", pickle.dumps(generate_movie(np.random.default_rng(k), imdb_id, n)))
    return buf.getvalue()


@contextmanager
def serve(body: bytes):
    """Serve ``body`` at /data.zip. ``state['drops']``: how many next responses stop halfway;
    ``state['stall']``: hold responses until released. ``state['ranges']`` logs each Range header."""
    state = {"drops": 0, "stall": False, "ranges": [], "body": body}
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state["ranges"].append(rng)
            if state["stall"]:
                release.wait(10)
                return
            data = state["body"]
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1]) if rng else 0
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Content-Type", "application/zip")
            self.end_headers()
            if state["drops"] > 0:  # the connection dies halfway through the body
                state["drops"] -= 1
                self.wfile.write(data[start: start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/data.zip", state
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_once_then_use_the_cache(tmp_path):
    body = _archive({"tt0000001": 4})
    with serve(body) as (url, state):
        path = fetch_archive(tmp_path / "cache", url=url, timeout_s=5, retries=0, quiet=True)
        assert path == cached_archive_path(tmp_path / "cache", DRIVE_ID, url)
        assert path.read_bytes() == body
        assert fetch_archive(tmp_path / "cache", url=url, timeout_s=5, retries=0, quiet=True) == path
        assert state["ranges"] == [None]  # the second call did not ask the server again
    assert _leftovers(tmp_path / "cache") == [path.name]


def test_dropped_connection_is_resumed_by_a_retry(tmp_path):
    body = _archive({"tt0000001": 5, "tt0000002": 4})
    with serve(body) as (url, state):
        state["drops"] = 1
        path = fetch_archive(tmp_path, url=url, timeout_s=5, retries=2, quiet=True)
        assert state["ranges"][0] is None and len(state["ranges"]) == 2
        resumed_at = int(re.fullmatch(r"bytes=(\d+)-", state["ranges"][1])[1])
        assert 0 < resumed_at <= len(body) // 2  # the retry asked only for the rest
    assert path.read_bytes() == body


def test_failed_download_says_how_to_proceed_and_the_next_run_resumes(tmp_path):
    body = _archive({"tt0000001": 5, "tt0000002": 4})
    cache = tmp_path / "cache"
    with serve(body) as (url, state):
        state["drops"] = 2
        with pytest.raises(DownloadFailed) as e:
            fetch_archive(cache, url=url, timeout_s=5, retries=1, quiet=True)
        msg = str(e.value)
        assert msg.startswith(f"could not download the MovieScenes archive from {url} (DownloadError: ")
        assert f"Any partial download is kept in {cache} and the next run resumes it" in msg
        assert HINT in msg
        parts = [p for p in cache.iterdir() if p.name.endswith(".part")]
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(body)  # no final archive, one partial file
        assert not cached_archive_path(cache, DRIVE_ID, url).exists()

        kept = parts[0].stat().st_size
        path = fetch_archive(cache, url=url, timeout_s=5, retries=0, quiet=True)
        assert state["ranges"][-1] == f"bytes={kept}-"
    assert path.read_bytes() == body
    assert _leftovers(cache) == [path.name]


def test_offline_fails_at_once_with_the_manual_route(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadFailed, match=r"\(ConnectionError: ") as e:
        fetch_archive(tmp_path / "cache", url=f"http://127.0.0.1:{port}/data.zip", timeout_s=2, retries=0, quiet=True)
    assert HINT in str(e.value)
    assert not cached_archive_path(tmp_path / "cache", DRIVE_ID, f"http://127.0.0.1:{port}/data.zip").exists()


def test_stalled_server_times_out(tmp_path):
    with serve(b"") as (url, state):
        state["stall"] = True
        with pytest.raises(DownloadFailed, match=r"\((ReadTimeout|ConnectionError): .*" + re.escape(HINT)):
            fetch_archive(tmp_path, url=url, timeout_s=0.3, retries=0, quiet=True)


def test_html_page_instead_of_the_archive_is_refused(tmp_path):
    with serve(b"<!DOCTYPE html><html>Google Drive - Quota exceeded</html>") as (url, _):
        with pytest.raises(DownloadFailed, match=r"but it is not a zip archive: found an HTML page .*" + re.escape(HINT)):
            fetch_archive(tmp_path, url=url, timeout_s=5, retries=0, quiet=True)
    assert _leftovers(tmp_path) == []  # nothing cached: the next run downloads again


def _published(monkeypatch, counts: dict[str, int]) -> None:
    """Pretend the published set is ``counts`` (the real manifest needs the 1.4 GiB archive)."""
    monkeypatch.setattr("sceneseg.data.validate.load_manifest", lambda: dict(counts))


def test_moviescenes_source_converts_the_published_set(tmp_path, monkeypatch):
    counts = {"tt0000001": 5, "tt0000002": 3}
    _published(monkeypatch, counts)
    with serve(_archive(counts)) as (url, _):
        summary = materialize("moviescenes", tmp_path / "out" / "movies", url=url, cache_dir=tmp_path / "cache",
                              timeout_s=5, retries=0)
    assert summary["n_movies"] == 2 and summary["n_shots"] == 8 and summary["published_set"] is True
    index = json.loads((tmp_path / "out" / "movies" / "index.json").read_text())
    assert index["movies"] == [{"imdb_id": "tt0000001", "n_shots": 5}, {"imdb_id": "tt0000002", "n_shots": 3}]
    assert index["source"] == "moviescenes" and index["published_set"] is True and index["warnings"] == []
    assert _leftovers(tmp_path / "out") == ["movies"]


def test_moviescenes_source_refuses_another_set_and_leaves_no_output(tmp_path, monkeypatch):
    _published(monkeypatch, {"tt0000001": 5, "tt0000002": 3})
    with serve(_archive({"tt0000001": 5, "tt0000002": 4})) as (url, _):
        with pytest.raises(ValueError, match=r"not the published MovieScenes set: tt0000002 has 4 shots, "
                                             r"the published movie has 3 \(if the cached archive is damaged, delete"):
            materialize("moviescenes", tmp_path / "out" / "movies", url=url, cache_dir=tmp_path / "cache", retries=0)
    assert _leftovers(tmp_path / "out") == []


def test_moviescenes_source_refuses_an_archive_without_movies(tmp_path, monkeypatch):
    _published(monkeypatch, {"tt0000001": 5})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photos/cat.jpg", b"\xff\xd8 not a movie")
    with serve(buf.getvalue()) as (url, _):
        with pytest.raises(ValueError, match=r"\.zip: expected movie pickles tt\*.pkl, found none"):
            materialize("moviescenes", tmp_path / "out" / "movies", url=url, cache_dir=tmp_path / "cache", retries=0)
    assert _leftovers(tmp_path / "out") == []


def test_moviescenes_download_failure_leaves_no_output(tmp_path):
    with serve(b"") as (url, state):
        state["stall"] = True
        with pytest.raises(DownloadFailed):
            materialize("moviescenes", tmp_path / "out" / "movies", url=url, cache_dir=tmp_path / "cache",
                        timeout_s=0.3, retries=0)
    assert _leftovers(tmp_path / "out") == []
