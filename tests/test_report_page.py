"""report.html in a real browser (Debian's headless Chromium): on a 1366 x 768 screen the page is
no wider than the window, and the accuracy-latency plot and the whole main table of a run with as
many students as the demo are in the first screen."""

import json
import re
import shutil
import subprocess

import pytest

from kdforge.profile.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make setup installs it as root)")

MEASURE = """<script>
window.addEventListener('load', () => {
  const box = selector => { const b = document.querySelector(selector).getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const layout = {page_width: document.documentElement.scrollWidth, window: [innerWidth, innerHeight], plot: box('#tradeoff img'),
                  table: box('#main'), table_scrolls: document.querySelector('#main').parentElement.scrollWidth >
                  document.querySelector('#main').parentElement.clientWidth};
  document.body.insertAdjacentHTML('beforeend', '<pre id="layout">' + JSON.stringify(layout) + '</pre>');
});
</script>"""


def _layout(page) -> dict:
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1366,768",
                          "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout">(\{.*?\})</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    return json.loads(found.group(1))


def _demo_sized_report(run, folder, students: int = 14):
    """The finished run's rows repeated to `students` (one more than the demo has), with the demo's long names, three precisions and two targets."""
    summary = json.loads((run / "report" / "summary.json").read_text())
    layers = json.loads((run / "students" / "ce" / "profile.json").read_text())["costs"]["layers"]
    rows = []
    for i in range(students):
        row = dict(summary["students"][i % len(summary["students"])])
        precision = ("fp32", "int8", "fp16")[i % 3]
        row.update(student=f"addernet_pkkd_{i:02d}", model="resnet20_adder", precision=precision,
                   precision_cell=precision if precision == "fp32" else f"{precision} (0.28)", est_h100_us=20.4 + i, est_orin_us=123.4 + i)
        rows.append(row)
    context = {**summary["context"], "targets": ["h100", "orin"], "precision": "fp16"}
    folder.mkdir()
    write_report(folder, rows, context, {r["student"]: layers for r in rows})
    return folder / "report.html"


@pytest.fixture(scope="module")
def demo_sized_page(finished, tmp_path_factory):
    return _demo_sized_report(finished[0] / "run", tmp_path_factory.mktemp("page") / "report")


def test_the_plot_and_the_main_table_fill_the_first_screen_of_a_1366_pixel_window(demo_sized_page):
    layout = _layout(demo_sized_page)
    width, height = layout["window"]
    assert width == 1366 and layout["page_width"] <= width
    assert layout["plot"][3] <= height and layout["table"][3] <= height  # both wholly in the first screen
    assert layout["table"][2] <= width and not layout["table_scrolls"]
    assert layout["plot"][2] <= layout["table"][0]  # side by side


def test_a_page_too_wide_for_the_window_is_caught(demo_sized_page, tmp_path):
    """The measurement itself: the same report with its table forced wide fails the width check."""
    page = tmp_path / "report.html"
    page.write_text(demo_sized_page.read_text().replace("<table id='main'>", "<table id='main' style='width:2000px'>"))
    layout = _layout(page)
    assert layout["table_scrolls"] or layout["page_width"] > 1366
