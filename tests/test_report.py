"""The HTML report: a page, two PNG learning curves, and the expected numbers in its tables."""

from __future__ import annotations

import re

import pytest

from tagstore.evaluation.protocol import Result

pytest.importorskip("matplotlib", reason="the report needs matplotlib (the 'corpus' extra)")

from tagstore.evaluation.report import fmt, write_report  # noqa: E402


def _results() -> list[Result]:
    out = []
    for emb, base in (("dsp", 0.4), ("vggish", 0.6)):
        for k in (1, 2, 4):
            for draw in range(3):
                for j, tag in enumerate(("drums", "sitar", "<odd&tag>")):
                    ap = base + 0.05 * k + 0.01 * draw + 0.02 * j
                    out.append(Result(emb, "probe", k, draw, tag, ap, min(1.0, ap + 0.2)))
        for j, tag in enumerate(("drums", "sitar", "<odd&tag>")):
            out.append(Result(emb, "probe", None, 0, tag, base + 0.3 + 0.02 * j, 0.95))
    return out


def test_report_page_plots_and_numbers(tmp_path):
    index = write_report(_results(), tmp_path / "rep", notes={"corpus": "demo, 400 clips"})
    assert index == tmp_path / "rep" / "index.html"
    page = index.read_text(encoding="utf-8")
    for png in ("macro_ap.png", "macro_auc.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        assert f'src="{png}"' in page
    # Per-tag AP for dsp, sitar, K=2: draws 0.52, 0.53, 0.54 -> 0.530 ± 0.008.
    assert fmt(0.53, 0.00816496580927726) == "0.530 ± 0.008"
    dsp = page.split("<h3>dsp / probe</h3>")[1].split("<h3>")[0]
    sitar_row = re.search(r"<tr><td>sitar</td>(.*?)</tr>", dsp).group(1)
    assert re.findall(r"<td>(.*?)</td>", sitar_row) == [
        "0.480 ± 0.008", "0.530 ± 0.008", "0.630 ± 0.008", "0.720 ± 0.000"]
    # Macro AP for vggish at K=4: tags add 0, .02, .04 -> per-draw macro 0.82+.01d -> 0.830 ± 0.008.
    assert "<td>vggish</td><td>probe</td><td>4</td><td>3</td><td>3</td><td>0.830 ± 0.008</td>" in page
    assert "<td>full</td>" in page and "demo, 400 clips" in page
    assert "&lt;odd&amp;tag&gt;" in page and "<odd&tag>" not in page


def test_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="no results"):
        write_report([], tmp_path)
