"""The widgets in a real browser: JupyterLab on 127.0.0.1, headless Chromium (Debian's ``chromium``) driven by
Playwright, the rank slider moved with the keyboard and the method explorer switched, on the embedded backbone."""
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "lopt-kit-browser-test"
CELLS = [
    # the rank slider on a 6-token prompt (random words: what is tested is the widget, not learning)
    """from lopt_core.model import load_backbone
from lopt_core.methods import build_method
from lopt_core.data import load_task
from lopt_core.lab.widgets import MethodExplorer, rank_slider
backbone = load_backbone("embedded", device="cpu")
task = load_task("yesno")  # near chance zero-shot: accuracy moves with the rank
method = build_method("prompt_tuning", backbone, prompt_len=6, seed=0, init="random")
slider = rank_slider(method, backbone, task, split="validation", limit=16)
slider.widget()""",
    """explorer = MethodExplorer(backbone)
explorer.widget()""",
    # computed in the kernel, independently of the widget: the truncation at the slider's current rank
    """from lopt_core.lab.analysis import truncate_method
from lopt_core.evaluation.evaluator import evaluate
r = slider.slider.value
cut = truncate_method(method, r, backbone)
print(f"kernel: r={r} accuracy={evaluate(cut, backbone, task, 'validation', 16)['accuracy']:.3f}")""",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no Chromium: install Debian's chromium (.ci/run does) or set LOPT_CHROMIUM to its path")
    pytest.importorskip("playwright", reason="the browser test needs playwright (pip install -e .[browser])")
    folder = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nbformat.write(nb, folder / "widgets.ipynb")
    port = free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={folder}", "--allow-root", "--LabApp.news_url=None"],
        stdout=open(folder / "lab.log", "w"), stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})  # the kernel draws inline
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start: {(folder / 'lab.log').read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}", folder
    finally:
        server.terminate()
        server.wait(timeout=30)


def accept_dialog(page, wait_ms: int = 8_000) -> None:
    """Accept a JupyterLab dialog (the kernel selection) if one appears within ``wait_ms``."""
    button = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        button.wait_for(state="visible", timeout=wait_ms)
    except Exception:  # playwright's TimeoutError: no dialog
        return
    button.click()


def test_rank_slider_and_method_explorer_in_chromium(lab):
    from playwright.sync_api import expect, sync_playwright

    from lopt_core.methods import build_method
    from lopt_core.model import load_backbone

    url, folder = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"{url}/lab/tree/widgets.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            accept_dialog(page)  # JupyterLab may ask which kernel to start: the notebook's own (Python 3)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            accept_dialog(page)
            label = page.locator(".widget-html-content", has_text="accuracy").first
            expect(label).to_contain_text("r = 6", timeout=300_000)
            kernel = page.locator(".jp-OutputArea-output", has_text="kernel: r=").first
            expect(kernel).to_contain_text("kernel: r=6", timeout=120_000)
            figure = page.locator(".widget-output img").first
            before = figure.get_attribute("src")

            page.locator(".widget-slider .noUi-handle").first.focus()  # the keyboard moves the slider
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            expect(label).to_contain_text("r = 4", timeout=120_000)
            shown = float(re.search(r"accuracy ([0-9.]+)", label.inner_text()).group(1))
            expect(figure).not_to_have_attribute("src", before, timeout=60_000)  # the figure was redrawn

            page.locator(".jp-Cell").nth(2).click()  # re-run the kernel's own computation at the new rank
            page.keyboard.press("Shift+Enter")
            expect(kernel).to_contain_text("kernel: r=4", timeout=120_000)
            computed = float(re.search(r"accuracy=([0-9.]+)", kernel.inner_text()).group(1))
            assert shown == pytest.approx(computed, abs=1e-3)

            page.locator(".widget-dropdown select").first.select_option("lopt2")  # the method explorer
            counts = page.locator(".widget-html-content", has_text="trainable").first
            expect(counts).to_contain_text("lopt2", timeout=60_000)
            backbone = load_backbone("embedded", device="cpu")
            expected = build_method("lopt2", backbone, prompt_len=20, rank=2).trainable_parameters()
            assert f"{expected:,} trainable" in counts.inner_text()
        finally:
            page.screenshot(path=str(folder / "last.png"), full_page=True)  # kept beside lab.log for a failure
            browser.close()
