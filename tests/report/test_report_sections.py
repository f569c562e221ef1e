
from ftaudit.report.html import render_html
from ftaudit.report.blocks import Figure, ReportSection, Series


def _section() -> dict:
    return ReportSection(
        title="Leakage vs utility",
        text=["Each point is one method at one learning rate."],
        table=[{"method": "head", "lr": 0.01, "auc": 0.61}, {"method": "full", "lr": 0.001, "auc": 0.66}],
        figures=[Figure("frontier", "accuracy", "TPR@1%", caption="dashed: Pareto frontier", series=[
            Series("head", [0.9, 0.95], [0.02, 0.03], lo=[0.01, 0.02], hi=[0.03, 0.04], style="points"),
            Series("frontier", [0.9, 0.95], [0.02, 0.03], style="frontier"),
            Series("curve", [1, 2, 4], [0.5, None, 0.7], lo=[0.4, 0.5, 0.6], hi=[0.6, 0.7, 0.8])])],
    ).to_dict()


def test_sections_render_text_table_and_figures(make_run, results):
    results["sections"] = [_section()]
    html = render_html(make_run(results))
    assert "Leakage vs utility" in html and "Each point is one method" in html
    assert "<th>method</th>" in html and "<td>head</td>" in html and "<td>0.001</td>" in html
    assert "dashed: Pareto frontier" in html
    assert html.count("data:image/png;base64,") >= 4  # roc, histograms, exposed images, the section figure


def test_malformed_figure_is_a_problem_not_a_crash(make_run, results):
    sec = _section()
    sec["figures"][0]["series"][0]["x"] = "not numbers"
    results["sections"] = [sec]
    html = render_html(make_run(results))
    assert "not drawn" in html and "Leakage vs utility" in html
