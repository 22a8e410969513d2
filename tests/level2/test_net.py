"""The level-2 network: the gate gates, shapes, reload from config."""

import pytest
import torch

from stacker.level2.net import FeatureGate, StackMLP


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)


def test_gate_weights_are_one_sigmoid_per_feature_and_multiply_the_input():
    gate = FeatureGate(12, 3)
    x = torch.rand(5, 12)
    weights = gate.weights(x)
    assert weights.shape == (5, 12)
    assert torch.all(weights > 0) and torch.all(weights < 1)
    # naive twin: the same computation written out by hand
    hidden = torch.relu(x @ gate.squeeze.weight.T + gate.squeeze.bias)
    expected = torch.sigmoid(hidden @ gate.excite.weight.T + gate.excite.bias)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(gate(x), x * expected)


def test_gate_can_close_and_open_single_features():
    gate = FeatureGate(6, 2)
    x = torch.rand(4, 6) + 0.5
    with torch.no_grad():
        gate.excite.weight.zero_()
        gate.excite.bias.copy_(torch.tensor([-50.0, 50.0, -50.0, 50.0, 0.0, 0.0]))
    out = gate(x)
    assert torch.all(out[:, [0, 2]].abs() < 1e-6)            # closed
    torch.testing.assert_close(out[:, [1, 3]], x[:, [1, 3]])  # open
    torch.testing.assert_close(out[:, 4:], x[:, 4:] / 2)     # half


def test_gate_depends_on_the_row():
    gate = FeatureGate(8, 4)
    a, b = torch.rand(1, 8), torch.rand(1, 8)
    assert not torch.allclose(gate.weights(a), gate.weights(b))


def test_mlp_shapes_layers_and_gradients():
    model = StackMLP(3 * 5, 5, hidden=16, bottleneck=4, dropout=0.1)
    x = torch.rand(7, 15)
    logits = model(x)
    assert logits.shape == (7, 5)
    linears = [m for m in model.body if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(15, 16), (16, 8)]
    assert sum(isinstance(m, torch.nn.PReLU) for m in model.body) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.body) == 2
    logits.sum().backward()
    assert model.gate.squeeze.weight.grad is not None
    assert model.gate.squeeze.weight.grad.abs().sum() > 0


def test_dropout_only_in_training_mode():
    model = StackMLP(9, 3, hidden=32, bottleneck=4, dropout=0.5)
    x = torch.rand(4, 9)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_rebuild_from_config_gives_identical_outputs():
    model = StackMLP(20, 4, hidden=24, bottleneck=5, dropout=0.3).eval()
    again = StackMLP.from_config(model.config)
    again.load_state_dict(model.state_dict())
    again.eval()
    x = torch.rand(9, 20)
    with torch.no_grad():
        model.set_input_scale(torch.rand(30, 20) * 3)
    again = StackMLP.from_config(model.config)
    again.load_state_dict(model.state_dict())
    again.eval()
    assert torch.equal(model(x), again(x))


def test_input_scale_is_one_global_factor():
    model = StackMLP(4, 2, hidden=8, bottleneck=2)
    train_rows = torch.rand(50, 4) * torch.tensor([1.0, 0.1, 5.0, 0.0])
    model.set_input_scale(train_rows)
    assert torch.all(model.input_mean == 0)
    torch.testing.assert_close(model.input_std, torch.full((4,), float(train_rows.std(unbiased=False))))
    model.set_input_scale(torch.zeros(5, 4))
    assert torch.all(model.input_std == 1e-3)             # constant input is not blown up
    assert "input_std" in model.state_dict()


def test_skip_starts_at_the_mean_log_odds_of_the_inputs():
    n_models, n_classes = 3, 4
    p = torch.rand(6, n_models, n_classes) * 0.98 + 0.01
    model = StackMLP(n_models * n_classes, n_classes, hidden=8, bottleneck=2, skip="logit").eval()
    logits = model(p.reshape(6, -1))
    naive = torch.zeros(6, n_classes)
    for m in range(n_models):
        naive += torch.log(p[:, m] / (1 - p[:, m])) / n_models
    torch.testing.assert_close(logits, naive)
    single = StackMLP(n_models * n_classes, n_classes, hidden=8, bottleneck=2, skip="log").eval()
    torch.testing.assert_close(single(p.reshape(6, -1)), torch.log(p).mean(1))
    # a precomputed skip gives the same output, and the config remembers the skip
    torch.testing.assert_close(model(p.reshape(6, -1), model.skip_logits(p.reshape(6, -1))), logits)
    assert StackMLP.from_config(model.config).config["skip"] == "logit"


def test_skip_clips_zero_and_one():
    model = StackMLP(4, 2, hidden=8, bottleneck=2, skip="logit").eval()
    out = model(torch.tensor([[0.0, 1.0, 0.0, 1.0]]))
    assert torch.all(torch.isfinite(out))


def test_bad_skip_or_feature_count_is_refused():
    with pytest.raises(ValueError, match="skip must be one of"):
        StackMLP(4, 2, skip="yes")
    with pytest.raises(ValueError, match="not n_models x n_classes"):
        StackMLP(5, 2)
