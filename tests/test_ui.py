"""The MLflow UI as a user sees it, in Chromium: compared runs, and a run's pictures epoch by epoch.

Runs `mlflow server` on loopback, trains tiny runs (and compares two through the CLI), then
drives the system's Chromium headless with Playwright (no browser is downloaded). With
DSC_SAVE_UI_FIGURE=1 the screenshots of the comparison and of a run's pictures also replace
docs/figures/mlflow_compare_ui.png and docs/figures/mlflow_run_images.png (the getting-started
page shows them). A fast check beside them: a dsc command leaves MLflow's per-artifact download
bars off, so the command's own bar is the only one.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from served import EPOCHS, ROOT, TINY, dsc, dsc_env, finish, run_id, start

from dsc.tracking.server import mlflow_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LLD = ["lld/center_1", "lld/width_1", "lld/r2_1"]
FIGURE = ROOT / "docs" / "figures" / "mlflow_compare_ui.png"
IMAGES_FIGURE = ROOT / "docs" / "figures" / "mlflow_run_images.png"
CARD = "[data-testid='experiment-view-compare-runs-card']"
KEY = "pca_fc2%2Bstep%2B"  # a per-epoch picture's artifact name, as the image grid's URLs quote it
# Plotly's parallel-coordinates axes: each title with the top and bottom of its range.
_AXES_JS = """() => {
  const texts = cls => [...document.querySelectorAll(`.pcp-plot text.${cls}`)].map(t => t.textContent);
  const titles = texts("axis-title"), tops = texts("axis-extent-top-text"),
        bottoms = texts("axis-extent-bottom-text");
  return Object.fromEntries(titles.map((t, i) => [t, [tops[i], bottoms[i]]]));
}"""


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browsers are never downloaded")
    return pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.mark.slow
def test_compare_page_and_a_runs_image_grid(sync_playwright, tmp_path, cache_dir):
    """Two runs compared: the compare page's curves and decomposition; then one run's Model metrics
    tab, whose per-epoch pictures step through the epochs with the slider. One server, two
    trainings and one browser serve both pages (each costs tens of seconds)."""
    with mlflow_server(f"sqlite:///{tmp_path / 'ui.db'}", tmp_path / "artifacts", tmp_path / "server.log") as uri:
        env = dsc_env(uri, cache_dir)
        # seed 0 draws its pictures while it trains; seed 1 keeps no snapshots
        trainings = [
            start(
                "train",
                *TINY,
                "--seed",
                str(s),
                "--run-name",
                f"seed-{s}",
                "--no-register",  # the pages shown here do not show models
                *(["--snapshot-images"] if s == 0 else ["--snapshot-every", "0"]),
                env=env,
                cwd=tmp_path,
            )
            for s in (0, 1)
        ]
        runs = [run_id(finish(p)) for p in trainings]
        dsc("compare", "--run-id", runs[0], "--run-id", runs[1], "--color-by", "seed", env=env, cwd=tmp_path)
        client = MlflowClient(uri)
        metrics = [client.get_run(r).data.metrics for r in runs]
        experiment = client.get_run(runs[0]).info.experiment_id
        url = (
            f"{uri}/#/compare-runs?runs={urllib.parse.quote(json.dumps(runs))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment]))}"
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                _check_compare_page(page, url, metrics, tmp_path / "compare.png")
                _check_acc_val_chart(page, metrics)
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                _check_image_grid(page, f"{uri}/#/experiments/{experiment}/runs/{runs[0]}/model-metrics", tmp_path)
            finally:
                browser.close()
    if os.environ.get("DSC_SAVE_UI_FIGURE") == "1":
        shutil.copyfile(tmp_path / "compare.png", FIGURE)
        shutil.copyfile(tmp_path / "run-images.png", IMAGES_FIGURE)


def _inside(inner: dict, outer: dict) -> bool:
    """Whether bounding box ``inner`` lies within ``outer`` (Playwright's x, y, width, height)."""
    return (
        inner["x"] >= outer["x"]
        and inner["y"] >= outer["y"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
    )


def _picture_shows(page, image) -> tuple[bool, dict, dict]:
    """Whether the picture lies inside its card and the viewport; the two boxes."""
    card = page.locator(CARD).filter(has=image).first
    box, card_box = image.bounding_box(), card.bounding_box()
    view = {"x": 0, "y": 0, **page.viewport_size}
    return _inside(box, card_box) and _inside(box, view), box, card_box


def _hide_run_params(page, image) -> None:
    """Switch off the card's list of run parameters, as the getting-started page tells users."""
    page.locator(CARD).filter(has=image).first.locator("[data-testid='experiment-view-compare-runs-card-menu']").click()
    page.get_by_role("menuitem", name="Configure").click()
    switch = page.get_by_role("switch", name="Show run parameters")
    assert switch.get_attribute("aria-checked") == "true"
    switch.click()
    page.get_by_role("button", name="Save changes").click()
    page.get_by_role("button", name="Save changes").wait_for(state="detached")


def _check_image_grid(page, url: str, tmp_path: Path) -> None:
    """The run's pictures are in its Model metrics tab; the step slider changes the image."""
    page.goto(url)
    page.get_by_role("searchbox").first.fill("pca_fc2")  # the picture's chart, not the metrics'
    image = page.locator(f"img.rc-image-img[src*='{KEY}']").first
    try:
        image.wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=str(tmp_path / "run-page.png"), full_page=True)
        raise
    # As the page opens, MLflow's image card lists every param of the run above its picture (its
    # label component leaves out only name, run_name and run_id); a dsc run logs about forty,
    # so the list is taller than the card and the picture lies below the card's edge. Whether
    # the list shows is the card's configuration, which MLflow keeps in the browser's local
    # storage, not on the server: nothing dsc logs can turn it off. docs/getting-started.md says
    # so and how to switch it off; this holds the page to that text.
    shows, box, card_box = _picture_shows(page, image)
    assert not shows, (
        "MLflow now shows the picture inside its card as the page opens: drop the "
        f"note on the image cards in docs/getting-started.md and this step ({box} in {card_box})"
    )
    _hide_run_params(page, image)
    image = page.locator(f"img.rc-image-img[src*='{KEY}']").first
    image.wait_for()
    shows, box, card_box = _picture_shows(page, image)
    assert shows, f"with the run's parameters hidden the picture {box} still leaves its card {card_box}"
    page.screenshot(path=str(tmp_path / "run-images.png"))
    before = image.get_attribute("src")
    slider = page.get_by_role("slider").last
    assert slider.get_attribute("aria-valuemax") == str(EPOCHS)
    step = int(slider.get_attribute("aria-valuenow"))
    slider.focus()
    page.keyboard.press("ArrowLeft" if step == EPOCHS else "ArrowRight")
    page.wait_for_function(
        "([sel, old]) => document.querySelector(sel)?.getAttribute('src') !== old",
        arg=[f"img.rc-image-img[src*='{KEY}']", before],
        timeout=30_000,
    )
    after = page.locator(f"img.rc-image-img[src*='{KEY}']").first.get_attribute("src")
    moved = step - 1 if step == EPOCHS else step + 1
    assert f"{KEY}{step}%2B" in before and f"{KEY}{moved}%2B" in after, (before, after)


def _check_compare_page(page, url: str, metrics: list[dict], screenshot: Path) -> None:
    page.goto(url)
    page.get_by_text("Comparing 2 Runs from 1 Experiment").wait_for(timeout=60_000)
    for name in ("seed-0", "seed-1"):
        assert page.get_by_text(name, exact=True).count() >= 1, name
    assistant = page.get_by_role("button", name="Close")
    if assistant.count() == 1:  # the side panel of MLflow's assistant: not what this test looks at
        assistant.click()
    # The parallel-coordinates chart: acc/val and the decomposition's centre, width and R^2
    chosen = page.get_by_text("Metrics:", exact=True).locator("xpath=following-sibling::div[1]")
    for remove in chosen.locator(".du-bois-light-select-selection-item-remove").all():
        remove.click()
    for name in ["acc/val", *LLD]:
        chosen.click()
        page.keyboard.type(name)
        page.locator(f".du-bois-light-select-item-option[title='{name}']").click()
    page.keyboard.press("Escape")
    page.get_by_text("Parameters", exact=True).click()  # folded: the Metrics table comes into view
    page.wait_for_function(f"document.querySelectorAll('.pcp-plot text.axis-title').length >= {1 + len(LLD)}")
    axes = page.evaluate(_AXES_JS)
    for name in ["acc/val", *LLD]:
        values = [m[name] for m in metrics]
        assert axes.get(name) == [f"{max(values):.5f}", f"{min(values):.5f}"], (name, axes)
    page.screenshot(path=str(screenshot))


def _check_acc_val_chart(page, metrics: list[dict]) -> None:
    """Follow the acc/val row of the Metrics table to its chart: one curve per run."""
    page.locator("a[title='Plot chart']", has_text="acc/val").first.click()
    for name in ("seed-0", "seed-1"):
        page.get_by_text(f"{name} (acc/val)").first.wait_for(timeout=30_000)
    # Two distinct curves (plotly draws each line twice), each through steps 0..EPOCHS
    lines = set(
        page.locator(".js-plotly-plot path.js-line").evaluate_all("paths => paths.map(p => p.getAttribute('d'))")
    )
    assert len(lines) == 2 and all(d.count("L") == EPOCHS for d in lines), lines
    for name, m in zip(("seed-0", "seed-1"), metrics):
        row = page.get_by_role("row").filter(has_text=name)
        assert f"{m['acc/val']} (step={EPOCHS})" in row.inner_text()


def test_a_command_draws_no_mlflow_download_bars(tmp_path, monkeypatch, capfd):
    """`dsc analyze` downloads every snapshot: MLflow's own bar for each would bury dsc's one."""
    import mlflow
    from click.testing import CliRunner

    from dsc.cli import main

    for var in (
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_RUN_ID",
    ):
        monkeypatch.delenv(var, raising=False)  # another test's experiment is not in this store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'bars.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'bars.db'}")
    files = tmp_path / "files"
    files.mkdir()
    for i in range(3):
        (files / f"epoch_{i:04d}.npz").write_bytes(b"x" * 100)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(files), "snapshots")
    # any dsc command: this one stops at its check, after the group has set the environment
    result = CliRunner().invoke(main, ["analyze", "--run-id", "0123456789abcdef"])
    assert result.exit_code == 1 and "no run with id" in result.output
    capfd.readouterr()
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="snapshots", dst_path=str(tmp_path / "d"))
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert len(list((tmp_path / "d" / "snapshots").iterdir())) == 3
