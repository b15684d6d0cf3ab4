"""How long the download path takes for an archive of the real size, over a local HTTP server.

The Google Drive link cannot be reached from the development machine, so this serves a zip
(stored, not compressed: random float32 bytes do not compress) of ``--mib`` MiB from a local
``http.server`` (with HTTP Range, like a CDN) and times ``sceneseg.data.download.fetch_archive`` with
``url=`` pointing at it: gdown's streaming, progress bar, zip check and the rename into the
cache. The real download is bounded by the network; this shows the client's own cost.

    .venv/bin/python bench/bench_download.py --mib 1400
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sceneseg.data.download import fetch_archive


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=N-`` support (what resume asks for)."""

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        start = int(rng.split("=")[1].split("-")[0])
        size = path.stat().st_size
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1400, help="archive size in MiB (the real one is ~1.4 GiB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serve = tmp / "serve"
        serve.mkdir()
        t0 = time.perf_counter()
        with zipfile.ZipFile(serve / "data.zip", "w", zipfile.ZIP_STORED) as z:
            chunk = os.urandom(1 << 20)
            with z.open("data/tt0000001.pkl", "w", force_zip64=True) as f:
                for _ in range(args.mib):
                    f.write(chunk)
        size = (serve / "data.zip").stat().st_size
        print(f"made a {size / 2**20:.0f} MiB zip in {time.perf_counter() - t0:.1f} s")
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(serve)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/data.zip"
        try:
            t0 = time.perf_counter()
            path = fetch_archive(tmp / "cache", url=url, timeout_s=30, retries=1, quiet=True)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fetch_archive(tmp / "cache", url=url, timeout_s=30, retries=1, quiet=True)
            cached = time.perf_counter() - t0
        finally:
            server.shutdown()
        print(f"download + zip check over loopback: {first:.1f} s ({size / 2**20 / first:.0f} MiB/s), "
              f"into {path.name}")
        print(f"second call (cached, no download): {cached:.2f} s")


if __name__ == "__main__":
    main()
