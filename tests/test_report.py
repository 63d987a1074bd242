"""persona.report: summaries over identities, paper columns kept apart, claims, README section."""

import math

import numpy as np
import pandas as pd
import pytest

from persona import report


def frames():
    rows = []
    for ident, offset in (("id00", 0.0), ("id01", 2.0)):
        for method, base in (("A", 30.0), ("B", 20.0)):
            for i in range(3):
                rows.append({"method": method, "identity": ident, "view": "gt", "psnr": base + offset + i, "ssim": 0.9, "lpips": math.nan})
                rows.append({"method": method, "identity": ident, "view": "yaw+25", "psnr": base - 5 + offset, "ssim": 0.8, "lpips": math.nan})
    return pd.DataFrame(rows)


def test_summary_is_mean_and_std_over_identity_means():
    summ = report.summary(frames(), ["psnr", "ssim"]).set_index(["method", "view_group"])
    # identity means of A at gt: 31 and 33 -> mean 32, sample std sqrt(2)
    assert summ.loc[("A", "gt"), "psnr_mean"] == pytest.approx(32.0)
    assert summ.loc[("A", "gt"), "psnr_std"] == pytest.approx(np.sqrt(2.0))
    assert summ.loc[("A", "novel"), "psnr_mean"] == pytest.approx(26.0)
    assert summ.loc[("A", "gt"), "n_identities"] == 2


def test_results_table_keeps_paper_numbers_in_their_own_columns():
    table = report.results_table(frames(), ["psnr", "lpips"], ["A", "B"], paper_key="table1_reconstruction",
                                 paper_rows={"A": "Ours RGB", "B": "PTI"}, unsupported_novel=("B",))
    assert table.loc["A", "PSNR ↑"] == "32.00 ± 1.41"
    assert table.loc["A", "PSNR ↑ (paper)"] == "34.70"  # the paper's value, labelled as such
    assert table.loc["B", "PSNR ↑ novel view"] == "not supported"
    assert table.loc["A", "LPIPS ↓"] == "n/a"  # missing LPIPS is never a number


def test_claims_table_verdicts():
    claims = report.claims_table(frames(), [("A", "psnr", "B"), ("B", "psnr", "A"), ("A", "psnr", "C")])
    assert list(claims["verdict"]) == ["reproduced", "NOT reproduced", "not measured"]


def test_write_table_and_update_readme(tmp_path):
    table = report.results_table(frames(), ["psnr"], ["A", "B"])
    paths = report.write_table(table, report.summary(frames(), ["psnr"]), "table1_x", tmp_path / "tables", "Cap",
                               {"profile": "default"}, ["a note"])
    assert paths["csv"].read_text().startswith("method,view_group")
    assert "a note" in paths["md"].read_text() and "\\begin{table}" in paths["tex"].read_text()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    assert report.update_readme(readme, tmp_path / "tables", tmp_path / "figures")
    text = readme.read_text()
    assert "old" not in text and "Cap" in text and text.startswith("intro") and text.endswith("after\n")
    (tmp_path / "plain.md").write_text("no markers")
    assert not report.update_readme(tmp_path / "plain.md", tmp_path / "tables", tmp_path / "figures")


def test_claims_go_to_the_readme_under_their_table(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "table1_x.md").write_text("**T1**\n")
    report.write_claims([report.claims_table(frames(), [("A", "psnr", "B")])], "table1_x", tables)
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_START}\n{report.README_END}\n")
    report.update_readme(readme, tables, tmp_path / "figures")
    text = readme.read_text()
    assert text.index("**T1**") < text.index("reproduced")
    assert (tables / "table1_x_claims.csv").is_file()


def test_mouth_psnr_reaches_the_table_under_the_column_evaluate_writes():
    from persona.evaluate import METRIC_COLUMNS

    assert "psnr_mouth" in METRIC_COLUMNS  # what evaluate_method writes ...
    df = frames().assign(psnr_mouth=lambda d: d["psnr"] - 3.0)
    table = report.results_table(df, ["psnr", "psnr_mouth"], ["A", "B"])
    assert table.loc["A", "mouth PSNR ↑"] == "29.00 ± 1.41"  # ... is what the table labels and formats
    assert table.loc["A", "mouth PSNR ↑ novel view"] == "23.00 ± 1.41"


def test_commit_is_dirty_for_code_changes_not_for_what_the_run_writes(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for path in ("persona/x.py", "tables/t.md", "figures/f.png", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("a")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    clean = report.git_commit(tmp_path)
    assert clean and not clean.endswith("+dirty") and clean != "unknown"
    for path in ("tables/t.md", "figures/f.png", "README.md"):
        (tmp_path / path).write_text("b")
    assert report.git_commit(tmp_path) == clean  # the notebooks rewrite these as they run
    (tmp_path / "persona/x.py").write_text("b")
    assert report.git_commit(tmp_path) == clean + "+dirty"
