"""The HTML report: one self-contained file (plotly.js inline, charts embedded, tables of the
figures) that draws every chart from file:// with no network, and keeps data as text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import wait_until
from report_samples import HOSTILE, sample_report, sample_timeline
from selenium.webdriver.remote.webdriver import WebDriver
from test_dashboard import ARTIFACTS, browser  # noqa: F401 (the fixture)

from buttermilk.evaluation.charts import report_charts
from buttermilk.evaluation.html import render_report_html


class Links(HTMLParser):
    """Every src/href attribute, every script's src, and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]


def parsed(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


def test_the_report_is_one_file_with_no_link_out_and_its_data_escaped() -> None:
    html = render_report_html(sample_report(), sample_timeline())

    found = parsed(html)
    assert found.links == []  # plotly.js and the figures are inline: nothing to fetch
    assert found.tags.count("script") == 3  # plotly.js, the figures (JSON), the drawing
    assert "<script>alert" not in html and HOSTILE not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html  # the label, as text
    assert "0.750 [0.550, 0.850]" in html and "0.500 [0.300, 0.600]" in html  # accuracy, CI
    assert "0.410" in html and "0.6250" in html  # Krippendorff's alpha, McNemar's p
    assert html.count("plotly.js v") == 1  # plotly.js inline once
    assert "alpha &lt;left out&gt; for the test" in html  # the agreement's notes


def test_an_interval_report_charts_mae_and_tables_mae_and_rmse() -> None:
    html = render_report_html(sample_report("interval"))

    ids = [c.id for c in report_charts(sample_report("interval"))]
    assert ids == ["accuracy", "labels", "stability"]  # no confusion matrix, no timeline
    assert "<th>MAE (95% CI)</th>" in html and ">0.300<" in html and ">0.700<" in html


DRAWN = """
return [...document.querySelectorAll("[data-chart]")]
  .map((div) => [div.dataset.chart, div.querySelector("svg.main-svg") !== null]);
"""


@pytest.mark.slow
def test_the_report_draws_every_chart_from_file_with_the_network_off(
    browser: WebDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.html"
    path.write_text(render_report_html(sample_report(), sample_timeline()), encoding="utf-8")
    browser.set_network_conditions(offline=True, latency=0, throughput=0)
    expected = [[c.id, True] for c in report_charts(sample_report(), sample_timeline())]

    browser.get(path.as_uri())

    wait_until(lambda: browser.execute_script(DRAWN) == expected, 20, "every chart drawn")
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert fetched == []
    heat = browser.execute_script(
        "return document.querySelectorAll('#chart-confusion-0 .hm, #chart-confusion-0 image')"
        ".length"
    )
    assert heat >= 1  # the heatmap itself, not only its axes
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-html.png"))
