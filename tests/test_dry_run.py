"""The paper profile's dry run (``paper-dry``): it resolves for every method, differs from the
paper profile only where persona.profiles.DRY_RUN says, and its parameter file names the inputs
persona.dry_run writes. (The dry run itself is a benchmark, not a test: README, "paper profile".)"""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest
from torch.utils.data import Dataset

from persona import dry_run, notebooks, profiles

# every method's profile table (building a paper-profile method would put it on the GPU)
TABLES = {"ours": ("persona.ours.train", "TRAIN_PROFILES"), "pti": ("persona.baselines.pti", "PROFILES"),
          "nerface": ("persona.baselines.nerface", "PROFILES"), "adnerf": ("persona.baselines.adnerf", "PROFILES"),
          "dfrf": ("persona.baselines.dfrf", "PROFILES"), "fomm": ("persona.baselines.fomm", "PROFILES"),
          "nha": ("persona.baselines.nha", "PROFILES")}


def _config(method: str, profile: str):
    import importlib

    module, table = TABLES[method]
    return getattr(importlib.import_module(module), table)[profile]


def test_every_registered_method_has_a_profile_table():
    from persona.methods import REGISTRY

    assert set(TABLES) == set(REGISTRY)


@pytest.mark.parametrize("method", sorted(TABLES))
def test_paper_dry_changes_only_the_dry_run_fields(method):
    paper, dry = asdict(_config(method, "paper")), asdict(_config(method, "paper-dry"))
    changed = {k for k in paper if paper[k] != dry[k]}
    own = profiles.DRY_RUN_EXTRA.get(type(_config(method, "paper")).__name__, {})
    assert changed <= set(profiles.DRY_RUN) | set(own) | {"profile"}, changed
    for key in changed - {"profile"}:
        assert dry[key] == {**profiles.DRY_RUN, **own}[key]
    assert set(own) <= {"batch_size"}  # a method's own dry-run change: frames per step only
    steps = dry.get("iterations", dry.get("steps", dry.get("tune_steps")))
    assert steps is not None and steps <= 2
    assert dry.get("profile", "paper-dry") == "paper-dry"


def test_dry_run_step_fields_exist_somewhere():
    """Every DRY_RUN field is a field of some method's config (no typo silently ignored)."""
    names = {f.name for m in TABLES for f in fields(_config(m, "paper"))}
    assert set(profiles.DRY_RUN) <= names, set(profiles.DRY_RUN) - names


def test_paper_dry_parameter_file_names_the_inputs_the_dry_run_writes():
    for name in notebooks.notebook_names():
        params = notebooks.load_params("paper-dry", name)
        assert params["profile"] == "paper-dry" and params["l2_only"] is True
    params = notebooks.load_params("paper-dry")
    paths = dry_run.input_paths("paper-dry")
    assert {k: params[k] for k in paths} == paths
    sizes = dry_run.DRY_INPUTS["paper-dry"]
    assert (sizes.nerface_resolution, sizes.adnerf_resolution) == (512, 450)
    assert profiles.uses_real_data("paper-dry") and dry_run.is_dry_run("paper-dry") and not dry_run.is_dry_run("paper")


def test_gpu_profiles_run_notebooks_one_after_another():
    assert profiles.default_jobs("paper", cores=16) == 1 and profiles.default_jobs("paper-dry", cores=16) == 1
    assert profiles.default_jobs("default", cores=16) == 2 and profiles.default_jobs("smoke", cores=1) == 1


def test_torch_device_auto():
    import torch

    assert profiles.torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert profiles.torch_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("method", ["ours", "nerface", "adnerf", "dfrf", "fomm", "nha"])
def test_dataloader_workers_only_in_the_paper_profiles(method):
    assert _config(method, "smoke").num_workers == 0 and _config(method, "default").num_workers == 0
    assert _config(method, "paper").num_workers == 8 and _config(method, "paper-dry").num_workers == 8


def test_new_neutral_fields_at_their_old_values_leave_cached_run_keys_unchanged():
    from persona.experiments import KEY_NEUTRAL_DEFAULTS, key_config

    # ours' ema_decay became a default (0.99, session 14) after it was added neutral at 0: a new run
    # and so did expression_lasso (1, session 19; the raw profile's value: train_config sets 0 for RGB and audio)
    changed_defaults = {"ours": {"ema_decay", "expression_lasso"}, "nerface": set(), "nha": set()}
    for method in ("ours", "nerface", "nha"):
        config = _config(method, "default")
        assert set(key_config(config)) == set(asdict(config)) - set(KEY_NEUTRAL_DEFAULTS) | changed_defaults[method]
    assert "ema_decay" not in key_config(_config("ours", "paper"))  # the paper's last weights: old keys
    assert "expression_lasso" not in key_config(_config("ours", "paper"))
    assert key_config(_config("nha", "paper"))["num_workers"] == 8
    from dataclasses import replace

    assert key_config(replace(_config("ours", "default"), rgb_init="he"))["rgb_init"] == "he"  # a new behaviour: a new run


class _Frames(Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        import torch

        return {"image": torch.full((3, 2, 2), float(i)), "index": i}


def test_stack_samples_and_prefetched_batches_with_workers_equal_those_without():
    import torch

    from persona.data.dataset import prefetched, stack_samples

    plain = stack_samples(_Frames(), ("image", "index"), desc="")
    workers = stack_samples(_Frames(), ("image", "index"), desc="", num_workers=2)
    assert all(torch.equal(plain[k], workers[k]) for k in plain)
    batches = [[4, 0], [2, 2], [1, 3]]
    streamed = list(prefetched(_Frames(), iter(batches), ("image", "index", "audio"), num_workers=2))
    assert [b["index"].tolist() for b in streamed] == batches and "audio" not in streamed[0]


def test_ours_streams_batches_through_workers_when_not_preloaded():
    import torch

    from persona.ours.train import FrameSource

    positions = [torch.tensor([3, 1]), torch.tensor([0, 4])]
    streamed = FrameSource(_Frames(), preload=False, num_workers=1).stream(iter(positions))
    plain = FrameSource(_Frames(), preload=False)
    assert plain.stream(iter(positions)) is None and FrameSource(_Frames(), num_workers=1).stream(iter(positions)) is None
    for p, batch in zip(positions, streamed):
        assert torch.equal(batch["image"], plain.batch(p)["image"]) and batch["index"].tolist() == p.tolist()
