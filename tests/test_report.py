"""The run's report page (``sdfsrn-report``): snapshots written during training (and kept on resume), the page
built from them or from a checkpoint alone, and the page itself driven in headless Chromium through selenium:
real key events on the sliders, the panes changing, the IoU it shows equal to the one computed here."""

import base64
import io
import json
import os
import shutil

import numpy as np
import pytest

from sdfsrn_fast.study import report, snapshots
from sdfsrn_fast.study import train as train_mod
from sdfsrn_fast.study.train import preset_config, train

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def tiny(out, **kw):
    base = dict(out=str(out), num_shapes=6, epochs=6, rays=12, samples=12, hidden=32, latent=16, eval_samples=16,
                fit_sphere_steps=30, eval_every=3, figures=False, batch_size=3, eikonal_points=64, tau_start=0.02,
                snapshot_every=2)
    base.update(kw)
    return preset_config("quick", **base)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    train(tiny(out), progress=False)
    return out


def test_snapshots_during_training_and_resume(tmp_path):
    """Snapshots after epoch 1, every snapshot_every epochs and the last; a resumed run keeps appending; their
    cost is recorded per epoch."""
    run = tmp_path / "run"
    train(tiny(run, epochs=4), progress=False)
    s = snapshots.load(run / snapshots.FILE)
    assert s.epochs.tolist() == [1, 2, 4]
    assert s.pred.shape == (3, 6, snapshots.VIEWS, snapshots.RESOLUTION**2 // 8)
    assert s.pred_shaded.shape == (3, 6, snapshots.VIEWS, snapshots.RESOLUTION**2 // 2)
    assert s.truth_shaded.shape == (6, snapshots.VIEWS, snapshots.RESOLUTION**2 // 2)
    assert sorted(s.families) == ["box", "box", "ellipsoid", "ellipsoid", "sphere", "sphere"]
    assert train_mod.main(["--resume", str(run), "--epochs", "6", "--no-progress", "--figures", "false"]) == 0
    s = snapshots.load(run / snapshots.FILE)
    assert s.epochs.tolist() == [1, 2, 4, 6] and len(s.pred_shaded) == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "snapshot_time" in r] == [1, 2, 4, 6]


def test_report_is_self_contained_and_small(run_dir, tmp_path):
    out = tmp_path / "page.html"
    assert report.main([str(run_dir), "--out", str(out)]) == 0
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert out.stat().st_size < 5e6
    data = report.page_data(run_dir)
    assert data["epochs"] == [1, 2, 4, 6] and len(data["images"]) == 6


def test_report_of_a_run_without_snapshots(run_dir, tmp_path):
    """A run from before snapshots existed: one epoch, the last, rendered from its checkpoint."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / snapshots.FILE).unlink()
    data = report.page_data(old)
    assert data["epochs"] == [6]
    assert report.main([str(old)]) == 0 and (old / "report.html").is_file()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no run" in err[0]


def _browser_missing():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    return None


def python_iou(run_dir, shape, epoch, angle):
    s = snapshots.load(run_dir / snapshots.FILE)
    pred = snapshots.unpack(s.pred[epoch, shape, angle], s.resolution).astype(bool)
    truth = snapshots.unpack(s.truth[shape, angle], s.resolution).astype(bool)
    union = (pred | truth).sum()
    return (pred & truth).sum() / union if union else 1.0


@pytest.fixture
def browser():
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("CI"):  # CI installs the browser (.ci/run): there, missing is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    os.environ["SE_OFFLINE"] = "true"  # never let selenium download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,900"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_page_in_a_real_browser(run_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    page = report.write_report(run_dir, tmp_path / "page.html")
    browser.get(page.resolve().as_uri())
    pane = lambda name: browser.execute_script(f"return document.getElementById('{name}').toDataURL()")  # noqa
    iou = lambda: float(browser.find_element(By.ID, "iou").text)  # noqa: E731
    s = snapshots.load(run_dir / snapshots.FILE)
    E = len(s.epochs)
    # opens on the last epoch, angle 1, the first shape
    assert iou() == pytest.approx(python_iou(run_dir, 0, E - 1, 1), abs=5e-4)

    Select(browser.find_element(By.ID, "shape")).select_by_index(2)
    before = (pane("pred"), pane("truth"))
    angle = browser.find_element(By.ID, "angle")
    angle.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # angle 1 -> 4
    assert browser.find_element(By.ID, "angle").get_attribute("value") == "4"
    assert pane("truth") != before[1] and pane("pred") != before[0]
    assert iou() == pytest.approx(python_iou(run_dir, 2, E - 1, 4), abs=5e-4)

    # the shaded surfaces: the true one decoded in the page as the snapshots hold it
    pixels = browser.execute_script("const c = document.getElementById('truth-surface'); "
                                    "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    expected = snapshots.unpack_grey(s.truth_shaded[2, 4], s.resolution).reshape(-1) * 17
    assert np.array_equal(np.asarray(pixels).reshape(-1, 4)[:, 0], expected) and expected.max() > 100
    surface_before = pane("pred-surface")
    epoch = browser.find_element(By.ID, "epoch")
    epoch.send_keys(Keys.HOME)  # the first snapshot, after epoch 1
    assert browser.find_element(By.ID, "epoch-label").text.startswith("epoch 1 ")
    assert pane("pred-surface") != surface_before
    assert iou() == pytest.approx(python_iou(run_dir, 2, 0, 4), abs=5e-4)
    epoch.send_keys(Keys.ARROW_RIGHT)
    assert iou() == pytest.approx(python_iou(run_dir, 2, 1, 4), abs=5e-4)

    from PIL import Image

    shot = Image.open(io.BytesIO(base64.b64decode(browser.get_screenshot_as_base64()))).convert("L")
    values = np.asarray(shot)
    assert values.std() > 10 and len(np.unique(values)) > 20  # not a blank page
