"""The offline `dvc plots show` template: built from the pinned npm tarballs, wired through
`.dvc/config`, and rendered by headless Chromium without network into a visible curve."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sceneseg.evaluation import plots_template as pt

DVC = [sys.executable, "-m", "dvc"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LINE_RGB = (0x94, 0x5D, 0xD6)  # the colour DVC's template gives the "workspace" line


# ----------------------------------------------------------------------------- no network needed


def test_build_template_inlines_and_escapes_scripts():
    page = pt.build_template({"a@1": "var s = '</script>'; var t = '</SCRIPT >';", "b@2": "var x = {a: 1};"})
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page and page.count("{refresh_tag}") == 1
    assert "var s = '<\\/script>'" in page and "'<\\/SCRIPT >'" in page
    assert page.lower().count("</script") == 2  # only the two closing tags
    assert page.index("/* a@1 */") < page.index("/* b@2 */") < page.index("{plot_divs}")
    assert "http" not in page


def test_build_template_refuses_a_script_with_a_placeholder():
    with pytest.raises(ValueError, match="b@2.*plot_divs"):
        pt.build_template({"b@2": "var s = '{plot_divs}';"})


def test_integrity_and_read_script(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"console.log(1);"
        info = tarfile.TarInfo("package/build/x.min.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tgz = tmp_path / "x-1.0.0.tgz"
    tgz.write_bytes(buf.getvalue())
    assert pt.integrity(tgz) == "sha512-" + base64.b64encode(hashlib.sha512(buf.getvalue()).digest()).decode()
    assert pt.read_script(tgz, "package/build/x.min.js") == "console.log(1);"
    with pytest.raises(ValueError, match="no such file"):
        pt.read_script(tgz, "package/build/y.min.js")
    assert pt.tarball_name("vega-lite@5.2.0") == "vega-lite-5.2.0.tgz"


def test_a_tampered_cached_tarball_is_refetched_or_refused(tmp_path):
    spec = pt.PACKAGES[0][0]
    (tmp_path / pt.tarball_name(spec)).write_bytes(b"not the package")
    with pytest.raises(ValueError, match="npm|integrity"):
        pt.fetch_tarballs(tmp_path, npm="/bin/false")


# ----------------------------------------------------------------------------- npm + chromium


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot fetch vega/vega-lite/vega-embed tarballs")
    out = tmp_path_factory.mktemp("tpl") / "plots_template.html"
    try:
        pt.write_template(out, Path("build/npm") if Path("build/npm").is_dir() else out.parent / "npm")
    except ValueError as e:
        pytest.skip(f"npm tarballs unavailable (no registry access?): {e}")
    return out


def dvc_plots_page(root: Path, template: Path | None) -> Path:
    """`dvc plots show` of a small loss TSV in a fresh DVC repo, with or without the template config."""
    root.mkdir()
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=root, check=True)
    if template is not None:
        shutil.copy(template, root / ".dvc" / "plots_template.html")
        subprocess.run([*DVC, "config", "plots.html_template", "plots_template.html"], cwd=root, check=True)
    rows = "\n".join(f"{e}\t{0.7 * 0.85 ** e:.4f}\t{0.65 * 0.9 ** e:.4f}" for e in range(1, 31))
    (root / "loss.tsv").write_text("epoch\ttrain\tval\n" + rows + "\n")
    subprocess.run([*DVC, "plots", "show", "loss.tsv", "-x", "epoch", "-y", "train"], cwd=root, check=True,
                   capture_output=True)
    return root / "dvc_plots" / "index.html"


def chromium(page: Path, tmp: Path, *action: str) -> str:
    """Headless Chromium with every network path shut (DNS mapped to nothing, a dead proxy)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           "--virtual-time-budget=10000", "--window-size=800,600", *action, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_dvc_plots_render_offline_with_the_template(template, tmp_path):
    page = dvc_plots_page(tmp_path / "repo", template)
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and '<script src="http' not in html
    dom = chromium(page, tmp_path, "--dump-dom")
    assert 'class="marks"' in dom  # vega drew its canvas
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path, f"--screenshot={shot}")
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    line = (np.abs(px - LINE_RGB).max(axis=-1) < 40).sum()
    assert line > 200, f"expected the purple loss curve in the screenshot, found {line} pixels of its colour"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_default_dvc_page_is_blank_offline(tmp_path):
    """The control: DVC's own page needs the CDN, so the same check finds no plot."""
    page = dvc_plots_page(tmp_path / "repo", None)
    assert "cdn.jsdelivr" in page.read_text()
    assert 'class="marks"' not in chromium(page, tmp_path, "--dump-dom")
