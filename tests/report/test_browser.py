"""report.html in a real browser: headless Chromium loads it from disk, every image decodes.

Skips (with the reason) where no Chromium binary is installed; CI installs the
Debian package ``chromium``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
window.addEventListener('load', function () {
  var ok = 0;
  for (const im of document.images) {
    im.setAttribute('data-natural-width', im.naturalWidth);
    if (im.complete && im.naturalWidth > 0) ok++;
  }
  document.body.setAttribute('data-images', ok + '/' + document.images.length);
});
</script>"""


def _chromium():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no Chromium binary on PATH (looked for {', '.join(CANDIDATES)}); "
                "install the Debian package 'chromium' to run the browser check")


def _run(binary, *args, timeout=90):
    cmd = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-dev-shm-usage", "--hide-scrollbars", *args]
    env = dict(os.environ, HOME=os.environ.get("HOME", "/tmp"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_report_opens_from_disk_and_every_image_loads(small_report, tmp_path):
    binary = _chromium()
    res, *_ = small_report
    page = res.html.read_text(encoding="utf-8")
    n_img = page.count("<img ")
    assert n_img == len(res.figures) > 0
    # The report itself has no script; a copy with a small probe reports what the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    out = _run(binary, "--virtual-time-budget=15000", "--dump-dom", probe.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    assert f'data-images="{n_img}/{n_img}"' in dom, dom[-500:]
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == n_img and min(widths) >= 600
    # A screenshot of the page as a device engineer sees it.
    shot = tmp_path / "report.png"
    out = _run(binary, "--window-size=1280,2400", f"--screenshot={shot}", res.html.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB
    keep = os.environ.get("HFOX_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
