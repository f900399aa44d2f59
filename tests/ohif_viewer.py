"""What an annotator does in the OHIF viewer MONAI Label serves, driven in headless Chromium (Debian's,
through Playwright): open the study list, open a study in the MONAI Label mode, run a bundle, read
the labelmap on screen, and store it as the series' final label. Used by ``tests/test_viewer.py``;
run on its own against ``make label-pacs`` it takes the guide's screenshot:

    .venv/bin/python tests/ohif_viewer.py --url http://127.0.0.1:8000 --patient MNI152_RIGHT --model unetr --screenshot docs/annotators_viewer.png
"""

from __future__ import annotations

import time

import numpy as np

CHROMIUM = "/usr/bin/chromium"
# Headless, software WebGL (the viewer renders with WebGL), and none of the background traffic a closed network refuses.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1400, "height": 900}

# The first segmentation's labelmap as OHIF holds it: voxels (x fastest), grid and segment names.
LABELMAP_JS = """() => {
  const segmentation = window.services.segmentationService.getSegmentations()[0];
  const volume = window.cornerstone.cache.getVolume(segmentation.representationData.Labelmap.volumeId);
  const data = volume.voxelManager.getCompleteScalarDataArray();
  let text = ''; for (let i = 0; i < data.length; i += 8192) text += String.fromCharCode.apply(null, data.subarray(i, i + 8192));
  const segments = Object.values(segmentation.segments).filter(Boolean).map(s => ({index: s.segmentIndex, label: s.label}));
  return {voxels: btoa(text), dimensions: volume.dimensions, spacing: volume.spacing, origin: volume.origin,
          direction: Array.from(volume.direction), segments};
}"""

# Store the labelmap on screen as the final label of the displayed series, as MONAI Label's OHIF client
# does (MonaiLabelClient.save_label: PUT /datastore/label): an NRRD in DICOM's patient space.
SAVE_JS = """async ({server, names}) => {
  const segmentation = window.services.segmentationService.getSegmentations()[0];
  const volume = window.cornerstone.cache.getVolume(segmentation.representationData.Labelmap.volumeId);
  const series = window.services.displaySetService.getActiveDisplaySets()[0].SeriesInstanceUID;
  const [dx, dy, dz] = volume.dimensions, d = volume.direction, s = volume.spacing;
  const axis = (i) => `(${d[3 * i] * s[i]},${d[3 * i + 1] * s[i]},${d[3 * i + 2] * s[i]})`;
  const header = `NRRD0004\\ntype: uint8\\ndimension: 3\\nspace: left-posterior-superior\\nsizes: ${dx} ${dy} ${dz}\\n` +
    `space directions: ${axis(0)} ${axis(1)} ${axis(2)}\\nspace origin: (${volume.origin.join(',')})\\nencoding: raw\\n\\n`;
  const voxels = Uint8Array.from(volume.voxelManager.getCompleteScalarDataArray());
  const form = new FormData();
  form.append('params', JSON.stringify({label_info: names.map((name, i) => ({name, idx: i + 1}))}));
  form.append('label', new Blob([header, voxels]), 'label.nrrd');
  const answer = await fetch(`${server}/datastore/label?image=${encodeURIComponent(series)}&tag=final`, {method: 'PUT', body: form});
  return {status: answer.status, text: await answer.text(), series};
}"""


def launch(playwright):
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_study(page, url: str, patient: str) -> None:
    """The study list, then ``patient``'s study in the MONAI Label mode, connected to the server at ``url``."""
    page.goto(f"{url}/ohif/")
    page.get_by_text("Confirm and Hide").click()
    page.locator("span", has_text=patient).first.click()
    page.locator("[data-cy^=mode-monai-label]").click()
    page.wait_for_selector("text=Server:")
    page.locator("#monailabelServerURL").fill(f"{url}/")
    page.locator("button.actionButton").click()  # connect to it (the panel's refresh)
    page.get_by_role("button", name="Run").first.wait_for()


def run_model(page, model: str, timeout: float = 300) -> dict:
    """Choose ``model`` under Auto-Segmentation, press Run, and wait until its labelmap is on screen;
    return the labelmap (:data:`LABELMAP_JS`, voxels as an array ``(x, y, z)``)."""
    page.locator("select:visible", has=page.locator(f"option[value='{model}']")).first.select_option(model)
    page.get_by_role("button", name="Run").first.click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate("() => window.services.segmentationService.getSegmentations().length") > 0:
            labelmap = page.evaluate(LABELMAP_JS)
            voxels = np.frombuffer(__import__("base64").b64decode(labelmap["voxels"]), dtype=np.uint8)
            if voxels.any():
                labelmap["voxels"] = voxels.reshape(labelmap["dimensions"][::-1]).transpose(2, 1, 0)
                return labelmap
        time.sleep(1)
    raise TimeoutError(f"no labelmap from {model} within {timeout:.0f} s")


def save_final_label(page, url: str, names: list[str]) -> dict:
    """Store the labelmap on screen as the displayed series' final label (:data:`SAVE_JS`)."""
    return page.evaluate(SAVE_JS, {"server": url, "names": names})


def main(url: str = "http://127.0.0.1:8000", patient: str = "MNI152_RIGHT", model: str = "unetr", screenshot: str = "viewer.png") -> None:
    """Open ``patient``'s study at ``url``, run ``model`` and save a screenshot of the viewer."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        open_study(page, url, patient)
        labelmap = run_model(page, model)
        time.sleep(6)  # the notification fades
        page.screenshot(path=screenshot)
        print(f"{screenshot}: segments {[s['label'] for s in labelmap['segments']]}")
        browser.close()


if __name__ == "__main__":
    import fire

    fire.Fire(main)
