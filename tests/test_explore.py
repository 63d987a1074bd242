"""persona.explore: the basis explorer's update path, headless (what the widget's sliders call)."""

import torch

from persona import cameras
from persona.explore import BasisExplorer


class TinyBasisModel(torch.nn.Module):
    """Stands in for a trained ours-model: image brightness follows coefficient 0, colour coefficient 1."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0, 0.5]))

    def basis(self, alpha):
        return alpha[:, None, :]  # ws [B,1,k]

    def synthesize(self, ws, camera):
        b = ws[:, 0, 0].view(-1, 1, 1, 1).tanh() * torch.ones(1, 3, 8, 8)
        b[:, 1] += ws[:, 0, 1].view(-1, 1, 1) * self.weight[1]
        return b + camera[:, 3].view(-1, 1, 1, 1) * 0.1  # the camera moves the image too


class TinyMethod:
    def __init__(self):
        self.model = TinyBasisModel()


def test_order_by_spread_and_update_changes_the_render():
    alphas = torch.stack([torch.randn(50) * 0.1, torch.randn(50) * 1.0], dim=1)
    explorer = BasisExplorer(TinyMethod(), alphas)
    assert explorer.order == [1, 0]
    base = explorer.reset().copy()
    moved = explorer.update({0: 3.0})
    assert base.shape == (8, 8, 3) and base.dtype.name == "uint8"
    assert (moved != base).any()
    assert explorer.alpha[0] == explorer.mean[0] + 3.0 * explorer.std[0]
    turned = explorer.update(yaw_deg=30.0)
    assert torch.allclose(explorer.camera(), torch.as_tensor(cameras.camera_label(30.0, 0.0), dtype=torch.float32))
    assert (turned != moved).any()


def test_widget_builds_and_slider_release_rerenders():
    explorer = BasisExplorer(TinyMethod(), torch.randn(20, 2))
    panel = explorer.widget(top_n=1)
    controls = panel.children[1].children[0]
    slider = controls.children[1]
    assert slider.continuous_update is False
    before = explorer.last_image.copy()
    slider.value = 2.5  # what releasing the slider does
    assert (explorer.last_image != before).any()


def test_switching_runs_relabels_and_resets_the_sliders_and_says_what_is_happening():
    import ipywidgets as w

    first = BasisExplorer(TinyMethod(), torch.stack([torch.randn(30) * 0.1, torch.randn(30)], dim=1))  # order [1, 0]
    second = BasisExplorer(TinyMethod(), torch.stack([torch.randn(30), torch.randn(30) * 0.1], dim=1))  # order [0, 1]
    seen = {}

    def load_second():
        seen["status while loading"] = panel.children[1].value
        print("training step 1/6")  # what a run that trains first prints
        return second

    panel = first.widget(top_n=1, runs={"first": lambda: first, "second": load_second})
    picker, status, row, log = panel.children
    slider = row.children[0].children[1]
    assert slider.description == "b1"
    slider.value = 2.0
    picker.value = "second"
    assert "loading run <b>second</b>" in seen["status while loading"] and "k = 2" in status.value
    assert slider.description == "b0" and slider.value == 0.0  # the new run's top coefficient, at its mean
    assert torch.equal(second.alpha, second.mean)
    assert log.layout.max_height == "8em"  # in a kernel, `with log:` shows the training output in the panel
    # the image keeps its size: the row does not stretch it to the controls' height
    image = row.children[1]
    assert isinstance(image, w.Image) and row.layout.align_items == "flex-start"
    assert image.layout.width == image.layout.height == "256px"


def test_basis_change_report_measures_the_directions_and_reaches_the_readme(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from persona import diagnostics, report

    calls = []
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: calls.append(a))  # the repository's README stays untouched

    # coefficient 1 spreads 10x more than 0 and moves one colour channel of every pixel; 0 barely moves anything
    alphas = torch.stack([torch.randn(40) * 0.01, torch.randn(40)], dim=1)
    explorer = BasisExplorer(TinyMethod(), alphas)
    train = SimpleNamespace(mouth_boxes=torch.tensor([[0.25, 0.5, 0.75, 0.9]]).repeat(3, 1))
    change = diagnostics.basis_change_report(explorer, train, tmp_path / "tables", tmp_path / "figures", n_vectors=2)
    assert list(change["vector"]) == [1, 0]
    assert change.loc[0, "changed_frac"] == 1.0 and change.loc[0, "mouth_changed_frac"] == 1.0
    assert change.loc[1, "changed_frac"] == 0.0 and change.loc[0, "max_change"] > 8
    md = (tmp_path / "tables" / "basis_change.md").read_text()
    assert "| b1 " in md and md.index("| b1 ") < md.index("| b0 ")
    assert (tmp_path / "figures" / "fig_basis_3dmm.png").is_file() and calls == []  # update_readme off: README untouched
    diagnostics.basis_change_report(explorer, train, tmp_path / "tables", tmp_path / "figures", n_vectors=1, update_readme=True)
    assert len(calls) == 1  # notebook 05 runs after the tables: it rewrites the README's results itself
    monkeypatch.undo()
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_START}\n{report.README_END}\n")
    report.update_readme(readme, tmp_path / "tables", tmp_path / "figures")
    text = readme.read_text()
    assert "top basis directions" in text and "fig_basis_3dmm.png" in text
