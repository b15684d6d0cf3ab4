"""Fetch the MovieScenes archive (Google Drive, via gdown) into a cache, resumably.

The archive lands in ``cache_dir`` (outside DVC outputs) under a name derived from its
source, so a rerun finds it and does not download again. gdown writes into a ``.part``
file and only renames it when complete; we then check it is a zip before giving it its
final cache name. A failure leaves the partial bytes for the next run to resume and
raises ``DownloadFailed`` with one message saying how to proceed by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

from sceneseg.progress import plain_lines_on_stderr

log = logging.getLogger(__name__)

MOVIESCENES_GDRIVE_ID = "1oZSOkd4lFmbY205VKQ9aPv1Hz3T_-N6e"


class DownloadFailed(ValueError):
    """The archive could not be fetched; the message says what failed and what to do by hand.

    A ValueError so that the stage runner's boundary-error handling (one line, exit 1) applies.
    """


def drive_view_url(gdrive_id: str) -> str:
    return f"https://drive.google.com/file/d/{gdrive_id}/view"


def cached_archive_path(cache_dir: Path, gdrive_id: str, url: str = "") -> Path:
    """Where the archive of this source lives in the cache (one name per Drive id or URL)."""
    if url:
        return Path(cache_dir) / f"archive-{hashlib.sha256(url.encode()).hexdigest()[:16]}.zip"
    return Path(cache_dir) / f"moviescenes-{gdrive_id}.zip"


def _manual_hint(gdrive_id: str) -> str:
    return (
        f"To proceed by hand: download {drive_view_url(gdrive_id)} in a browser, then set "
        "data.source: local and data.path: <the downloaded zip> in params.yaml."
    )


def _describe_head(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page (Google Drive may have refused: quota exceeded or no public access)"
    return f"{path.stat().st_size} bytes starting with {head[:16]!r}"


def fetch_archive(
    cache_dir: Path,
    *,
    gdrive_id: str = MOVIESCENES_GDRIVE_ID,
    url: str = "",
    timeout_s: float = 60.0,
    retries: int = 3,
    quiet: bool = False,
) -> Path:
    """Return the path of the cached archive, downloading it first if it is not cached.

    ``url`` (non-empty) replaces the Google Drive URL (a plain HTTP server; resume uses HTTP
    Range). ``timeout_s`` bounds connecting and each wait for bytes; ``retries`` extra attempts
    resume where the transfer stopped. Raises ``DownloadFailed`` on any failure.
    """
    import gdown  # imported here: only the download needs it (and it pulls in requests, bs4)
    import requests

    cache_dir = Path(cache_dir)
    final = cached_archive_path(cache_dir, gdrive_id, url)
    source = url or drive_view_url(gdrive_id)
    if final.exists():
        if zipfile.is_zipfile(final):
            log.info("using the cached archive %s (delete it to download again)", final)
            return final
        log.warning("%s: cached file is not a zip archive, downloading again", final)
        final.unlink()

    cache_dir.mkdir(parents=True, exist_ok=True)
    # gdown downloads into "<output>XXXXXXXX.part" and renames to <output> when complete;
    # resume=True picks up such a partial file left by an earlier failed run.
    incoming = final.with_name(final.name + ".download")
    try:
        with plain_lines_on_stderr():  # off a terminal, gdown's bar becomes a line every 30 s
            gdown.download(
                url=url or None,
                id=None if url else gdrive_id,
                output=str(incoming),
                quiet=quiet,
                resume=True,
                timeout=(timeout_s, timeout_s),
                retries=retries,
                use_cookies=False,  # do not read or write ~/.cache/gdown/cookies.txt
            )
    except (requests.exceptions.RequestException, gdown.exceptions.DownloadError,
            gdown.exceptions.FileURLRetrievalError, OSError) as e:
        reason = " ".join(str(e).split())[:400]
        raise DownloadFailed(
            f"could not download the MovieScenes archive from {source} ({type(e).__name__}: {reason}). "
            f"Any partial download is kept in {cache_dir} and the next run resumes it. {_manual_hint(gdrive_id)}"
        ) from None

    if not zipfile.is_zipfile(incoming):
        what = _describe_head(incoming)
        incoming.unlink()
        raise DownloadFailed(
            f"downloaded {source} but it is not a zip archive: found {what}. {_manual_hint(gdrive_id)}"
        )
    os.replace(incoming, final)
    log.info("downloaded %s to %s (%d bytes)", source, final, final.stat().st_size)
    return final
