"""The CPU bit-mask dropout against its definition: keep rate, scaling, gradient, dispatch."""

import pytest
import torch
import torch.nn.functional as F

from genrec.models.dropout import Dropout, bit_dropout, bit_dropout_mask, dropout, dropped_levels


@pytest.mark.parametrize("p", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last random word is cut
    kept = bit_dropout_mask((n,), p).double().mean().item()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept - (1 - p)) < 5 * sd + 1 / 65536
    # neighbours come from the same 64-bit word: they must not be correlated
    mask = bit_dropout_mask((n,), p).double()
    correlation = torch.corrcoef(torch.stack([mask[:-1], mask[1:]]))[0, 1].item()
    assert abs(correlation) < 0.01


def test_kept_values_are_scaled_so_the_expectation_is_the_input_and_the_gradient_follows_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 2, 30, 30, dtype=torch.float64, requires_grad=True)
    p = 0.3
    scale = 65536 / (65536 - dropped_levels(p))
    y = bit_dropout(x, p)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * scale)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * kept * scale)
    ones = torch.ones(2_000_000)
    assert bit_dropout(ones, p).mean().item() == pytest.approx(1.0, abs=0.003)


def test_edge_probabilities_and_dispatch():
    x = torch.randn(3, 5)
    assert bit_dropout(x, 0.0) is x
    assert torch.equal(bit_dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Dropout(1.5)
    module = Dropout(0.25)
    module.eval()
    assert module(x) is x
    module.train()
    x = torch.randn(100, 50)
    y = module(x)
    scale = 65536 / (65536 - dropped_levels(0.25))
    assert ((y == 0) | torch.isclose(y, x * scale)).all() and 0 < (y == 0).float().mean() < 0.5


def test_seeded_runs_repeat_and_give_what_f_dropout_gives():
    torch.manual_seed(7)
    a = dropout(torch.ones(1000), 0.2)
    torch.manual_seed(7)
    b = dropout(torch.ones(1000), 0.2)
    assert torch.equal(a, b)  # the global generator drives it: seeds and checkpointed RNG states hold
    # the contract of F.dropout: zeros, and ones scaled by 1 / (1 - p) (p rounded to 1/65536)
    for out in (a, F.dropout(torch.ones(1000), 0.2)):
        values = out.unique()
        assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1.25, abs=1e-5)
