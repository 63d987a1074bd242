"""Ours' 3DMM encoder init (issue #20): PyTorch's default (the release) or variance-preserving
hidden layers, an option; the key stays the same for runs at the default."""

from __future__ import annotations

import pytest
import torch

from persona.data.world.expression import sample_expressions
from persona.errors import PersonaInputError
from persona.experiments import key_config
from persona.ours.encoders import ExpressionEncoder
from persona.ours.train import build_model, train_config


def spread(alpha: torch.Tensor) -> float:
    """How much the coefficients [T,k] vary over frames (mean std over coefficients)."""
    return float(alpha.std(0).mean())


@torch.no_grad()
def test_he_init_keeps_the_expression_in_the_coefficients():
    codes = sample_expressions(64, torch.Generator().manual_seed(3))
    for seed in range(3):
        torch.manual_seed(seed)
        plain = ExpressionEncoder(8, hidden=64, layers=3)
        torch.manual_seed(seed)
        he = ExpressionEncoder(8, hidden=64, layers=3, init="he")
        assert spread(he(codes)) > 5 * spread(plain(codes)), seed
        # the head keeps PyTorch's init (coefficients start small); the hidden layers' biases are zero
        assert all(torch.count_nonzero(m.bias) == 0 for m in he.net[:-1] if isinstance(m, torch.nn.Linear))
        assert torch.count_nonzero(he.net[-1].bias) > 0
    with pytest.raises(ValueError, match="init"):
        ExpressionEncoder(8, init="xavier")


def test_the_option_reaches_the_model_and_leaves_default_keys_alone():
    assert train_config("default", modality="3dmm").expression_init == "torch"
    assert train_config("paper", modality="3dmm").expression_init == "torch"
    with pytest.raises(PersonaInputError, match="expression_init"):
        train_config("default", expression_init="xavier")
    from test_prior import StandInGenerator  # a tiny generator with the EG3D interface

    cfg = train_config("smoke", modality="3dmm", expression_init="he")
    model = build_model(cfg, StandInGenerator(res=16))
    hidden = [m for m in model.encoder.net[:-1] if isinstance(m, torch.nn.Linear)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in hidden)
    # a run at the default init keeps the cache key it had before the option existed
    assert "expression_init" not in key_config(train_config("default", modality="3dmm"))
    assert key_config(cfg)["expression_init"] == "he"
