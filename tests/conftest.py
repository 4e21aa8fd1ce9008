import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def clustered(
    n: int = 600, dim: int = 16, centres: int = 12, noise: float = 0.15, seed: int = 0
) -> np.ndarray:
    """Unit vectors around random centres: structure that a quantizer should find."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    X = c[rng.integers(centres, size=n)] + noise * rng.normal(size=(n, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


@pytest.fixture
def X() -> np.ndarray:
    return clustered()


# The tiny RQ-VAE that the RQ-VAE tests train in seconds.
TINY_RQVAE = dict(
    n_levels=2,
    codebook_size=8,
    latent_dim=4,
    hidden_dims=[32, 16],
    epochs=6,
    batch_size=100,
    lr=3e-3,
    random_state=0,
    device="cpu",
)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and a busy neighbour core cannot stall them)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
