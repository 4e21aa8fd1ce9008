"""The training-time dropout and attention of semid.rec.layers compute what torch's do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semid.rec.layers import Dropout, attention, dropout


def test_dropout_zeroes_a_share_p_and_scales_the_rest_to_keep_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = dropout(x, 0.3)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.002)
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.7)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)


def test_dropout_gradient_is_the_mask_and_a_seed_repeats_it() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.25)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.75)
    torch.manual_seed(1)
    torch.testing.assert_close(dropout(x, 0.25), y)


def test_dropout_is_the_identity_in_eval_mode_or_at_zero() -> None:
    x = torch.randn(8, 4)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert (layer.train()(torch.ones(1000)) == 0).any()


def test_dropout_keeps_the_dtype_under_bf16() -> None:
    x = torch.randn(16, 8, dtype=torch.bfloat16)
    assert dropout(x, 0.2).dtype == torch.bfloat16


@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_matches_torch_scaled_dot_product_attention(is_causal: bool) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 8) for _ in range(3))  # (B, H, T, dh)
    if is_causal:
        mask = None
    else:
        mask = torch.rand(3, 1, 1, 5) > 0.3
        mask[..., 0] = True  # every query keeps a key
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(attention(q, k, v, mask, is_causal), expected, rtol=1e-5, atol=1e-6)


def test_attention_dropout_averages_to_the_exact_attention() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 4, 8) for _ in range(3))
    exact = attention(q, k, v)
    mean = torch.stack([attention(q, k, v, dropout_p=0.2) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, exact, atol=0.05, rtol=0.0)
    assert not torch.allclose(attention(q, k, v, dropout_p=0.2), exact)
