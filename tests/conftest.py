import subprocess
import sys

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


# The tiny TIGER that trains in a couple of seconds (model and train sections of `semid train --config`).
TINY_TIGER = {
    "model": {
        "d_model": 64,
        "n_heads": 4,
        "d_head": 16,
        "d_ff": 128,
        "n_encoder_layers": 1,
        "n_decoder_layers": 1,
        "dropout": 0.0,
        "max_history": 4,
        "n_user_tokens": 8,
        "beam_size": 10,
    },
    "train": {
        "epochs": 3,
        "batch_size": 64,
        "lr": 0.005,
        "warmup_steps": 5,
        "num_threads": 1,
        "autocast": "off",
        "tensorboard": False,
        "patience": 0,
        "progress": False,
    },
}

# A tiny catalogue for the language-model tests: its texts train a tokenizer; 12 items with 3-level IDs over
# codebooks of 4, a sparse subset of the 64 possible IDs.
TINY_LLM_TEXTS = ["a matte red lipstick", "blue mascara by Lumiere", "fresh citrus perfume under $50"] * 20
TINY_LLM_CODES = np.array(
    [[0, 0, 1], [0, 0, 3], [0, 2, 0], [1, 1, 1], [1, 3, 2], [2, 0, 0], [2, 0, 2], [2, 1, 3], [3, 3, 3],
     [3, 2, 1], [1, 1, 0], [0, 2, 2]]
)  # fmt: skip
TINY_LLM_SIZES = [4, 4, 4]


class WordHashEmbedder:
    """A tiny deterministic text embedder for tests: each lower-cased word hashed into ``dim`` signed slots.

    Texts that share words get close vectors, so "matte lipstick" finds the matte lipsticks by title.
    """

    dim = 64

    def encode(self, texts):
        import re
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", str(text).lower()):
                h = zlib.crc32(word.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@pytest.fixture(scope="session")
def serve_dir(tmp_path_factory):
    """A small `semid demo --out` layout: data/, embeddings.parquet (word hashes of the titles), ids.parquet
    (2-level RQ-KMeans + suffix), tiger/ (a tiny TIGER trained for 3 epochs). About 5 s."""
    from semid.data import make_demo_dataset
    from semid.embed.store import write_embeddings
    from semid.ids import format_ids
    from semid.ids.dedup import deduplicate
    from semid.ids.table import IdTable, write_ids
    from semid.quantize import RQKMeans
    from semid.rec.data import RecData
    from semid.rec.train import fit

    root = tmp_path_factory.mktemp("serve")
    ds = make_demo_dataset(n_items=150, n_users=200, seed=0)
    ds.save(root / "data")
    item_ids = np.asarray([str(i) for i in ds.catalogue.item_ids], dtype=object)
    X = WordHashEmbedder().encode(ds.catalogue.text_column("title").to_pylist())
    write_embeddings(root / "embeddings.parquet", item_ids, X)
    base = RQKMeans(n_levels=2, codebook_size=6, random_state=0).fit(X).encode(X)
    codes = deduplicate(base, "suffix", item_ids=item_ids).codes
    ids = IdTable(
        item_ids, format_ids(codes, "dash"), codes, base, {"format": "dash", "codebook_sizes": [6, 6]}
    )
    write_ids(root / "ids.parquet", ids)
    n = torch.get_num_threads()
    try:
        fit(
            "tiger",
            RecData.from_dataset(ds, ids),
            root / "tiger",
            model_config=TINY_TIGER["model"],
            train_config={**TINY_TIGER["train"], "seed": 0},
        )
    finally:
        torch.set_num_threads(n)
    return root


def write_walk_shop(directory, n_items: int, n_users: int, lengths: tuple[int, int], seed: int = 0) -> None:
    """``items.csv`` + ``interactions.csv`` in ``directory``: each user walks the catalogue in order from a
    random item for ``lengths[0] <= n < lengths[1]`` steps, so item i is followed by item i + 1."""
    (directory / "items.csv").write_text(
        "item_id,title\n" + "".join(f"i{i},Item number {i}\n" for i in range(n_items))
    )
    rng = np.random.default_rng(seed)
    rows = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        start, n = rng.integers(0, n_items), rng.integers(*lengths)
        rows += [f"u{u},i{(start + t) % n_items},{t}" for t in range(n)]
    (directory / "interactions.csv").write_text("\n".join(rows) + "\n")


def walk_rec_data(n_items: int = 40, n_users: int = 150, seed: int = 0):
    """A :class:`semid.rec.data.RecData` in memory: users walk the catalogue in order (item i is followed by
    item i + 1 mod ``n_items``) for 5 to 9 steps. Three-digit unique IDs ``(i // 8, i % 8, i % 3)``, with
    codebooks of different sizes (5, 8, 3), as when a dedup suffix or a per-digit size makes them ragged."""
    from semid.data import Sequences
    from semid.ids import format_ids
    from semid.rec.data import RecData

    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 10, n_users)
    starts = rng.integers(0, n_items, n_users)
    items = np.concatenate([(s + np.arange(n)) % n_items for s, n in zip(starts, lengths, strict=True)])
    i = np.arange(n_items)
    codes = np.stack([i // 8, i % 8, i % 3], axis=1)
    return RecData(
        item_ids=np.array([f"i{n}" for n in i], dtype=object),
        sequences=Sequences(np.concatenate([[0], np.cumsum(lengths)]), items),
        user_ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        codes=codes,
        semantic_ids=np.array(format_ids(codes, "dash"), dtype=object),
    )


def free_port() -> int:
    """A TCP port free on this machine now: a test server's, or the rendezvous of a data-parallel job."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_grid_ids(path, n_items: int) -> None:
    """ids.parquet for items ``i0 .. i{n-1}``: two levels, item i has codes ``(i // 5, i % 5)``."""
    from semid.ids.table import IdTable, write_ids

    codes = np.stack([np.arange(n_items) // 5, np.arange(n_items) % 5], axis=1)
    names = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    write_ids(path, IdTable(names, [f"{a}-{b}" for a, b in codes], codes, codes))


def save_scratch_llm(serve_dir, out, *, spread: float = 0.0, facts: bool = False):
    """An untrained tiny query LM over ``serve_dir``'s items and IDs, saved to ``out``; returns ``out``.

    ``facts=True`` keeps the demo catalogue's brand and price with the items, as ``semid llm prepare``
    does, so that request filters (semid.llm.constraints) have something to read.

    ``spread > 0`` redraws the output embeddings with that scale, so that IDs get clearly different scores
    (an untrained model scores them almost alike, and near-ties make rankings fragile to compare).
    """
    import pyarrow as pa

    from semid.ids.table import read_ids
    from semid.llm.model import ScratchConfig, add_semantic_tokens, save_llm, scratch_model, train_tokenizer
    from semid.serve.service import Service

    ids = read_ids(serve_dir / "ids.parquet")
    catalogue = Service.load(serve_dir, embedder=WordHashEmbedder()).catalogue
    titles = [catalogue.title(catalogue.index[str(i)]) for i in ids.item_ids]
    tok = train_tokenizer(titles, vocab_size=400)
    model = scratch_model(tok, ScratchConfig(hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64))
    vocab = add_semantic_tokens(tok, [int(c) + 1 for c in ids.codes.max(axis=0)], model)
    if spread:
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, spread)
    items = pa.table(
        {
            "item_id": [str(i) for i in ids.item_ids],
            "semantic_id": ids.semantic_ids,
            "codes": [list(map(int, c)) for c in ids.codes],
            "title": titles,
        }
    )
    if facts:
        from semid.data import load_dataset

        table = load_dataset([serve_dir / "data"]).catalogue.table
        row = {str(i): r for r, i in enumerate(table["item_id"].to_pylist())}
        take = [row[str(i)] for i in ids.item_ids]
        for name in ("brand", "price"):
            items = items.append_column(name, table[name].take(take))
    save_llm(out, model, tok, vocab, items, system_prompt="Recommend.")
    return out


def load_bench(name: str):
    """The module of ``bench/<name>.py`` (bench scripts are not a package), loaded from its file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dead_pid() -> int:
    """The PID of a process that has exited (what a killed job leaves in its temporaries' names)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
