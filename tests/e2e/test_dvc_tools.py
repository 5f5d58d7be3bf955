"""DVC's own tools on a finished run, with no network: `dvc plots show` draws every chart offline (graft's
page inlines the charting libraries, vendor/vega/), and `dvc exp show` / `dvc metrics show` keep to the
headline numbers (the per-class detail is reports/evaluate_per_class.json, versioned but no DVC metric).

The page is opened in headless Chromium with the network off; without Chromium these tests skip, saying
why, except where CI or GRAFT_REQUIRE_CHROMIUM is set: there they fail (.ci/run installs Chromium).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc

pytestmark = pytest.mark.e2e

HEADLINE = {"metrics/evaluate.json": {"test_acc", "test_macro_f1", "test_ece", "baseline_test_acc", "transfer_gain",
                                      "val_transfer_gain", "better_on_val", "verdict"},
            "metrics/pretrain.json": {"source_test_acc"},
            "metrics/finetune.json": {"val_acc", "chosen"},
            "metrics/baseline.json": {"val_acc"},
            "metrics/register.json": {"promote", "candidate"}}
# Every request goes to a proxy nothing listens on, and no host name resolves: the page has no network.
NO_NETWORK = ("--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


def chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found:
        return found
    reason = "no Chromium on PATH (chromium, chromium-browser or google-chrome)"
    if any(os.environ.get(k, "").lower() not in ("", "0", "false", "no") for k in ("CI", "GRAFT_REQUIRE_CHROMIUM")):
        pytest.fail(f"Chromium is required here (CI or GRAFT_REQUIRE_CHROMIUM is set) but {reason}", pytrace=False)
    pytest.skip(f"{reason}: the plots page cannot be opened. Install it (Debian: apt-get install chromium)")


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM once its scripts have run, in headless Chromium without network."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", *NO_NETWORK,
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


class _Page(HTMLParser):
    """Script sources and, per plot div (in page order), the vega canvases or SVGs drawn inside it."""

    def __init__(self, plot_ids: set[str]):
        super().__init__()
        self.plot_ids, self.current = plot_ids, None
        self.script_sources: list[str] = []
        self.marks: dict[str, list[dict]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.script_sources.append(attrs["src"])
        if tag == "div" and attrs.get("id") in self.plot_ids:  # DVC's plot divs are siblings, so in order
            self.current = attrs["id"]
            self.marks.setdefault(self.current, [])
        if self.current and tag in ("canvas", "svg") and "marks" in (attrs.get("class") or "").split():
            self.marks[self.current].append(attrs)


def parse(html: str, plot_ids: set[str]) -> _Page:
    page = _Page(plot_ids)
    page.feed(html)
    return page


def plot_ids(index_html: str) -> set[str]:
    """The divs `dvc plots show` asks vega-embed to draw into (`vegaEmbed('#<id>', spec)`)."""
    return set(re.findall(r"vegaEmbed\('#([^']+)'", index_html))


def test_dvc_plots_show_draws_every_chart_with_no_network(two_runs, tmp_path):
    ws = two_runs
    out = dvc(ws, "plots", "show").stdout
    index = ws / "dvc_plots" / "index.html"
    assert index.as_uri() in out, out
    html = index.read_text(encoding="utf-8")
    ids = plot_ids(html)
    declared = [next(iter(p)) for s in yaml.safe_load((ws / "dvc.yaml").read_text())["stages"].values()
                for p in s.get("plots", [])]
    assert len(ids) == len(declared) == 4, (ids, declared)  # pretrain, finetune, baseline, confusion

    # Nothing is loaded from elsewhere: the libraries are in the page, and it is ignored by git.
    static = parse(html, ids)
    assert static.script_sources == [], static.script_sources
    assert "cdn.jsdelivr.net" not in html and "vendor/vega/build.py" in html  # graft's page (.dvc/config)
    status = subprocess.run(["git", "status", "--porcelain", "--", "dvc_plots"], cwd=ws, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", status

    drawn = parse(rendered_dom(index, tmp_path / "profile"), ids)
    assert set(drawn.marks) == ids, drawn.marks
    for plot, marks in drawn.marks.items():
        assert len(marks) == 1, (plot, marks)
        assert int(marks[0].get("width", 0)) > 100 and int(marks[0].get("height", 0)) > 100, (plot, marks)

    # The control: DVC's own page, from the same data and browser, draws nothing here (it needs its CDN).
    default_page = tmp_path / "dvc_default.html"
    from dvc_render.html import PAGE_HTML

    default_page.write_text(PAGE_HTML)
    dvc(ws, "plots", "show", "--html-template", str(default_page), "-o", str(tmp_path / "cdn"))
    cdn_html = (tmp_path / "cdn" / "index.html").read_text()
    assert any(src.startswith("https://") for src in parse(cdn_html, ids).script_sources)
    assert not any(parse(rendered_dom(tmp_path / "cdn" / "index.html", tmp_path / "profile"), ids).marks.values())


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(f"{prefix}{k}")
        if isinstance(v, dict):
            out |= _keys(v, f"{prefix}{k}.")
    return out


def test_exp_show_and_metrics_show_keep_to_the_headline(two_runs):
    ws = two_runs
    shown = json.loads(dvc(ws, "metrics", "show", "--json").stdout)[""]["data"]
    experiments = json.loads(dvc(ws, "exp", "show", "--json").stdout)
    workspace = next(e for e in experiments if e["rev"] == "workspace")["data"]["metrics"]
    for metrics in (shown, workspace):
        assert set(metrics) == set(HEADLINE), set(metrics)
        for name, wanted in HEADLINE.items():
            keys = _keys(metrics[name]["data"])
            assert wanted <= keys, (name, wanted - keys)
            assert not [k for k in keys if "per_class" in k or k.split(".")[0] in ("finetuned", "baseline")], keys

    # The per-class detail: a versioned output of evaluate (in dvc.lock, cached), not a metric.
    report = json.loads((ws / "reports" / "evaluate_per_class.json").read_text())
    assert set(report) == {"finetuned", "baseline"}
    assert set(report["finetuned"]) == {"circle_checker", "square_dots", "triangle_solid"}
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert "reports/evaluate_per_class.json" in {o["path"] for o in lock["stages"]["evaluate"]["outs"]}
    assert "up to date" in dvc(ws, "status").stdout
