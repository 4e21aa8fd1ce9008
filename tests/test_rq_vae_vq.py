"""The residual VQ layer inside RQ-VAE: estimators, EMA, k-means init, dead codes, Sinkhorn, normalisation."""

import numpy as np
import pytest
import torch

from conftest import clustered
from semid.errors import SemidError
from semid.quantize.vq import ResidualVQ, VectorQuantizer, rotate_to, sinkhorn_assign

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rotation_trick_returns_the_target_and_a_scaled_rotation_as_gradient():
    torch.manual_seed(0)
    s = torch.randn(1, 5, dtype=torch.float64)
    t = torch.randn(1, 5, dtype=torch.float64)
    out = rotate_to(s.requires_grad_(), t)
    torch.testing.assert_close(out.detach(), t)
    J = torch.autograd.functional.jacobian(lambda x: rotate_to(x, t)[0], s)[:, 0, :]  # (5, 5) d out / d s
    lam = (t.norm() / s.norm()).item()
    R = J / lam
    torch.testing.assert_close(R @ R.T, torch.eye(5, dtype=torch.float64))  # a rotation...
    assert float(torch.linalg.det(R)) == pytest.approx(1.0)
    # ...taking s's direction to t's
    torch.testing.assert_close(R @ (s[0] / s.norm()).detach(), t[0] / t.norm())


@pytest.mark.parametrize("estimator", ["ste", "rotation"])
def test_estimators_pass_gradient_to_the_encoder_output_and_value_equals_codewords(estimator):
    torch.manual_seed(0)
    rvq = ResidualVQ(2, 4, 3, estimator=estimator).eval()  # eval: no EMA step between lookup and decode
    z = torch.randn(6, 3, requires_grad=True)
    out = rvq(z)
    torch.testing.assert_close(out.quantized.detach(), rvq.decode(out.codes))
    g = torch.randn(6, 3)
    (out.quantized * g).sum().backward()
    if estimator == "ste":
        torch.testing.assert_close(z.grad, g)  # straight-through: identity
    else:  # rotation: same gradient norm up to the rescaling ||z_q|| / ||z|| per row
        scale = out.quantized.detach().norm(dim=1) / z.detach().norm(dim=1)
        torch.testing.assert_close(z.grad.norm(dim=1), g.norm(dim=1) * scale)
        assert not torch.allclose(z.grad, g)


def test_sinkhorn_spreads_a_crowded_batch_over_all_codes():
    # 64 rows all nearest to code 0 or 1 of 8 codes: greedy uses 2 codes, Sinkhorn all 8, about 8 rows each.
    torch.manual_seed(0)
    C = torch.cat([torch.zeros(2, 2), 3 + torch.randn(6, 2)])
    C[1] = torch.tensor([0.5, 0.0])
    x = 0.1 * torch.randn(64, 2)
    d = torch.cdist(x, C).square()
    assert torch.bincount(d.argmin(1), minlength=8).gt(0).sum() == 2
    counts = torch.bincount(sinkhorn_assign(d, epsilon=0.003, n_iter=50), minlength=8)
    assert counts.gt(0).all() and counts.max() <= 12


def test_sinkhorn_keeps_an_already_balanced_nearest_assignment():
    C = torch.eye(4) * 10
    x = torch.cat([C + 0.1 * torch.randn(4, 4) for _ in range(5)])  # 5 rows around each code
    d = torch.cdist(x, C).square()
    torch.testing.assert_close(sinkhorn_assign(d, epsilon=0.01, n_iter=30), d.argmin(1))


def test_ema_update_moves_codewords_to_the_mean_of_their_rows():
    vq = VectorQuantizer(2, 1, update="ema", ema_decay=0.0, dead_code_threshold=0, eps=0.0)
    vq.set_codebook(torch.tensor([[0.0], [10.0]]))
    vq.train()
    r = torch.tensor([[1.0], [2.0], [9.0], [13.0]])
    _, codes, cb_loss, commit = vq(r)
    assert codes.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(vq.codebook(), torch.tensor([[1.5], [11.0]]))
    assert float(cb_loss) == 0.0  # EMA learns the codebook: no codebook loss
    assert float(commit) == pytest.approx((1 + 4 + 1 + 9) / 4)  # against the codewords before the update


def test_loss_update_learns_codewords_by_gradient():
    vq = VectorQuantizer(2, 1, update="loss", dead_code_threshold=0)
    assert isinstance(vq.weight, torch.nn.Parameter)
    vq.set_codebook(torch.tensor([[0.0], [10.0]]))
    r = torch.tensor([[1.0], [3.0]])
    _, _, cb_loss, _ = vq(r)
    cb_loss.backward()
    # d/dc mean (r - c)^2 = -2 mean(r - c): only code 0 was chosen
    torch.testing.assert_close(vq.weight.grad, torch.tensor([[-4.0], [0.0]]))


def test_dead_code_is_reseeded_from_a_batch_row_after_a_pass_without_hits():
    vq = VectorQuantizer(3, 2, update="ema", dead_code_threshold=1, window=8)
    vq.set_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))
    vq.train()
    g = torch.Generator().manual_seed(0)
    r = torch.tensor([[0.0, 0.1], [1.0, 0.9], [0.1, 0.0], [0.9, 1.0]])
    vq(r, generator=g)  # 4 rows seen: window not complete yet
    assert int(vq.n_resets) == 0 and vq.codebook()[2, 0].item() == pytest.approx(100.0, rel=1e-4)
    vq(r, generator=g)  # 8 rows: code 2 had no hit -> moved onto one of the rows
    assert int(vq.n_resets) == 1
    assert any(torch.equal(vq.codebook()[2], row) for row in r)
    assert float(vq.hits.sum()) == 0 and int(vq.rows_seen) == 0  # a new window starts


def test_kmeans_init_starts_every_level_in_use_and_shrinks_residuals():
    z = torch.from_numpy(clustered(n=800, dim=8, centres=16, noise=0.05))
    rvq = ResidualVQ(3, 16, 8, dead_code_threshold=0)
    rvq.init_kmeans(z, np.random.default_rng(0))
    codes = rvq.encode(z)
    assert [len(torch.unique(codes[:, level])) for level in range(3)] == [16, 16, 16]
    out = rvq.eval()(z)
    norms = out.residual_norms
    assert norms[0] > norms[1] > norms[2] > norms[3]
    assert bool(rvq.levels[0].initted)


def test_encode_is_greedy_nearest_code_per_level_in_float64():
    torch.manual_seed(0)
    rvq = ResidualVQ(3, 5, 4)
    z = torch.randn(50, 4, dtype=torch.float64)
    codes = rvq.encode(z)
    R = z.clone()
    for level, C in enumerate(rvq.codebooks()):
        C = C.double()
        expected = torch.cdist(R, C).argmin(1)
        torch.testing.assert_close(codes[:, level], expected)
        R -= C[expected]
    torch.testing.assert_close(rvq.decode(codes, [c.double() for c in rvq.codebooks()]), z - R)


def test_normalized_codebooks_live_on_a_sphere_of_the_residual_scale():
    z = 3 * torch.from_numpy(clustered(n=400, dim=6, centres=8))
    rvq = ResidualVQ(2, 8, 6, normalize=True, dead_code_threshold=0)
    rvq.init_kmeans(z, np.random.default_rng(0))
    for level in rvq.levels:
        norms = level.codebook().norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, float(level.radius)))
    assert float(rvq.levels[0].radius) == pytest.approx(3.0, rel=1e-4)  # unit rows scaled by 3


def test_codebook_state_lives_in_the_state_dict():
    rvq = ResidualVQ(2, 4, 3)
    keys = set(rvq.state_dict())
    for name in ("weight", "cluster_size", "embed_avg", "initted", "hits", "rows_seen", "n_resets", "radius"):
        assert f"levels.0.{name}" in keys


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimator": "gumbel"}, "estimator='gumbel' is not one of 'ste', 'rotation'"),
        ({"update": "adam"}, "update='adam' is not one of 'ema', 'loss'"),
    ],
    ids=["estimator", "update"],
)
def test_bad_quantizer_options_are_rejected(kwargs, message):
    with pytest.raises(SemidError) as e:
        ResidualVQ(2, 4, 3, **kwargs)
    assert str(e.value) == message
