"""A self-contained HTML template for ``dvc plots show/diff`` that renders offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so without internet it is
blank. This builds a template with the three libraries inlined, taken from the npm registry at
setup time (``npm pack``; versions and tarball hashes pinned below, nothing vendored in git).
``.dvc/config`` points at it with ``plots.html_template = plots_template.html`` (relative to
``.dvc/``). DVC fills ``{plot_divs}`` (and ``{refresh_tag}``); the template has no ``{scripts}``,
so DVC adds no CDN tags.

    python -m sceneseg.evaluation.plots_template --out .dvc/plots_template.html --cache build/npm
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

# The versions dvc-render 1.0.2 itself loads from the CDN, so pages look the same online and off.
# (npm spec, script inside the tarball, the registry's sha512 "integrity" of the tarball)
PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("vega@5.20.2", "package/build/vega.min.js",
     "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    ("vega-lite@5.2.0", "package/build/vega-lite.min.js",
     "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    ("vega-embed@6.18.2", "package/build/vega-embed.min.js",
     "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)
# DVC substitutes these with str.replace over the whole page: they must not occur in the scripts.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plots</title>
    <!-- {versions}: inlined from the npm registry by sceneseg.evaluation.plots_template (works offline) -->
{inline_scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def integrity(path: Path) -> str:
    """npm's ``integrity`` string of a file: ``sha512-`` and the base64 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(Path(path).read_bytes()).digest()).decode()


def tarball_name(spec: str) -> str:
    """``vega-lite@5.2.0`` -> ``vega-lite-5.2.0.tgz``, the file ``npm pack`` writes."""
    name, version = spec.rsplit("@", 1)
    return f"{name}-{version}.tgz"


def fetch_tarballs(cache: Path, npm: str = "npm") -> list[Path]:
    """The pinned tarballs in ``cache``, fetched with ``npm pack`` when absent; hashes are checked."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec, _, expected in PACKAGES:
        path = cache / tarball_name(spec)
        if not path.exists() or integrity(path) != expected:
            if shutil.which(npm) is None:
                raise ValueError(f"{npm}: expected the npm client to fetch {spec} (install Node.js/npm), found none on PATH")
            proc = subprocess.run([npm, "pack", spec, "--pack-destination", str(cache)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0 or not path.exists():
                raise ValueError(f"npm pack {spec}: expected {path.name} from the registry, failed: {proc.stderr.strip()[-500:]}")
        found = integrity(path)
        if found != expected:
            raise ValueError(f"{path}: expected integrity {expected}, found {found} (tampered or wrong package)")
        paths.append(path)
    return paths


def read_script(tarball: Path, member: str) -> str:
    """One file of an npm tarball as text (read in memory; nothing is extracted)."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            f = tar.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise ValueError(f"{tarball}: expected {member} inside, found no such file")
        return f.read().decode("utf-8")


def build_template(scripts: dict[str, str]) -> str:
    """The page: ``scripts`` (label -> JavaScript) inlined in order, then DVC's ``{plot_divs}``."""
    blocks = []
    for label, js in scripts.items():
        for p in PLACEHOLDERS:
            if p in js:
                raise ValueError(f"{label}: the script contains DVC's placeholder {p}, which DVC would overwrite")
        # An HTML parser ends a script at the first "</script"; "<\/" means the same in JavaScript.
        js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
        blocks.append(f"    <script type=\"text/javascript\">/* {label} */\n{js}\n    </script>")
    return PAGE.format(versions=", ".join(scripts), inline_scripts="\n".join(blocks),
                       refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")


def write_template(out: Path, cache: Path, npm: str = "npm") -> Path:
    """Fetch (or reuse) the pinned packages and write the offline template to ``out`` atomically."""
    tarballs = fetch_tarballs(cache, npm)
    scripts = {spec: read_script(t, member) for (spec, member, _), t in zip(PACKAGES, tarballs)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(build_template(scripts), encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m sceneseg.evaluation.plots_template --out PATH [--cache DIR] [--npm NPM]``."""
    ap = argparse.ArgumentParser(prog="python -m sceneseg.evaluation.plots_template", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="template to write, e.g. .dvc/plots_template.html")
    ap.add_argument("--cache", type=Path, default=Path("build/npm"), help="where the npm tarballs are kept (default build/npm)")
    ap.add_argument("--npm", default="npm", help="npm client to run (default: npm on PATH)")
    args = ap.parse_args(argv)
    try:
        out = write_template(args.out, args.cache, args.npm)
    except (ValueError, OSError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
