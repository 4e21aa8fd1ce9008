"""The language model: a Hugging Face causal LM whose tokenizer can spell every Semantic ID.

Two ways in:

- :func:`load_base_model`: any causal LM by local path or hub name (Llama, Qwen, SmolLM ...), then
  :func:`add_semantic_tokens` adds ``[REC]`` and one token per (level, code) -- ``<a_0> .. <a_255>``,
  ``<b_0> ..`` -- and resizes the embedding matrix; existing token ids and their embeddings are kept.
- the offline default, :func:`train_tokenizer` + :func:`scratch_model`: a byte-level BPE tokenizer trained
  (Hugging Face ``tokenizers``) on the catalogue text and a small Llama-architecture model initialised
  from scratch, so the feature works with no download.

Either can be fine-tuned in full or with LoRA (:func:`apply_lora`, peft), with or without a query-embedding
prefix (:mod:`semid.llm.prefix`). :func:`save_llm` writes a directory that :func:`load_llm` reads back:
``config.json`` + ``model.safetensors`` (LoRA merged in), the tokenizer files, ``semid_llm.json`` (codebook
sizes, token ids, the prefix's config and query encoder), ``query_prefix.safetensors`` (the prefix, if any)
and ``items.parquet`` (the ID table).

Prompts are built by :func:`prompt_ids` in token space: the chat template (or a plain ``System:/User:/
Assistant:`` layout when the tokenizer has none) renders the system and user turns with the generation
prompt; the answer is appended as tokens, so training and generation see exactly the same prefix and a
template that adds text after the generation prompt cannot come between ``[REC]`` and the ID.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from semid._outputs import atomic_path, has_marker
from semid._utils import check_positive_int, read_json_mapping
from semid.errors import SemidError, first_line
from semid.ids import token_vocabulary
from semid.llm.examples import ID_FORMAT, REC_TOKEN, id_text
from semid.llm.prefix import PREFIX_FILE, QueryPrefix, encoder_name, load_query_encoder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "LLM",
    "META_FILE",
    "ScratchConfig",
    "SemanticVocab",
    "add_semantic_tokens",
    "apply_lora",
    "load_base_model",
    "load_llm",
    "encode_examples",
    "prompt_ids",
    "prompt_text",
    "save_llm",
    "scratch_model",
    "train_tokenizer",
]

META_FILE = "semid_llm.json"
ITEMS_FILE = "items.parquet"
_PAD, _BOS, _EOS = "<pad>", "<s>", "</s>"


# --------------------------------------------------------------------------------------------------------
# Semantic ID tokens


@dataclass
class SemanticVocab:
    """Where the Semantic ID tokens sit in a tokenizer's vocabulary.

    ``token_ids[l, c]`` is the token of code ``c`` at level ``l`` (``-1`` beyond ``codebook_sizes[l]``);
    :meth:`level_and_code` is the inverse, per token id.
    """

    codebook_sizes: tuple[int, ...]
    token_ids: torch.Tensor  # (L, max K) int64
    rec_id: int
    eos_id: int
    vocab_size: int  # the model's embedding rows (>= len(tokenizer))

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, codebook_sizes: Sequence[int], vocab_size: int | None = None
    ) -> SemanticVocab:
        """Look the ID tokens up in ``tokenizer``; raises if any is missing (call :func:`add_semantic_tokens`)."""
        sizes = tuple(int(k) for k in codebook_sizes)
        names = token_vocabulary(ID_FORMAT, sizes)
        ids = tokenizer.convert_tokens_to_ids([REC_TOKEN, *names])
        unk = tokenizer.unk_token_id
        missing = [t for t, i in zip([REC_TOKEN, *names], ids, strict=True) if i is None or i == unk]
        if missing:
            raise SemidError(
                f"the tokenizer has no token {missing[0]!r} ({len(missing)} Semantic ID tokens missing); "
                "add them with add_semantic_tokens"
            )
        if tokenizer.eos_token_id is None:
            raise SemidError("the tokenizer has no end-of-sequence token (eos_token)")
        table = torch.full((len(sizes), max(sizes)), -1, dtype=torch.long)
        pos = 1
        for level, k in enumerate(sizes):
            table[level, :k] = torch.tensor(ids[pos : pos + k])
            pos += k
        return cls(sizes, table, int(ids[0]), int(tokenizer.eos_token_id), int(vocab_size or len(tokenizer)))

    def level_and_code(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(vocab_size,)`` level and code of each token id; ``-1`` for tokens that are no ID token."""
        level = torch.full((self.vocab_size,), -1, dtype=torch.long)
        code = torch.full((self.vocab_size,), -1, dtype=torch.long)
        valid = self.token_ids >= 0
        lv, cd = valid.nonzero(as_tuple=True)
        level[self.token_ids[valid]] = lv
        code[self.token_ids[valid]] = cd
        return level.to(device), code.to(device)

    def id_token_ids(self, codes_row: Sequence[int] | np.ndarray) -> list[int]:
        """The token ids spelling one ID (``[REC]`` not included)."""
        row = torch.as_tensor(np.asarray(codes_row), dtype=torch.long)
        return self.token_ids[torch.arange(len(row)), row].tolist()

    def to_json(self) -> dict[str, Any]:
        return {"codebook_sizes": list(self.codebook_sizes), "format": ID_FORMAT, "rec_token": REC_TOKEN}


def add_semantic_tokens(
    tokenizer: PreTrainedTokenizerBase,
    codebook_sizes: Sequence[int],
    model: PreTrainedModel | None = None,
) -> SemanticVocab:
    """Add ``[REC]`` and the ID tokens to ``tokenizer`` (those not there yet) and grow ``model``'s embeddings.

    Existing tokens keep their ids and embedding rows; new rows are initialised by transformers (mean of
    the old ones). Each ID token is one whole token: ``"<a_12><b_4>"`` encodes to two ids.
    """
    from tokenizers import AddedToken

    names = [REC_TOKEN, *token_vocabulary(ID_FORMAT, codebook_sizes)]
    vocab = tokenizer.get_vocab()
    new = [AddedToken(t, normalized=False, special=False) for t in names if t not in vocab]
    if new:
        tokenizer.add_tokens(new)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab_size = len(tokenizer)
    if model is not None:
        current = model.get_input_embeddings().weight.shape[0]
        if current < vocab_size:
            model.resize_token_embeddings(vocab_size)
        vocab_size = max(current, vocab_size)
    return SemanticVocab.from_tokenizer(tokenizer, codebook_sizes, vocab_size)


# --------------------------------------------------------------------------------------------------------
# Models


@dataclass
class ScratchConfig:
    """The offline default model: a small Llama trained from scratch on the catalogue's examples."""

    vocab_size: int = 4000  # BPE merges learnt on the catalogue text (ID tokens come on top)
    hidden_size: int = 256
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 688  # ~ 8/3 x hidden, as in Llama
    max_position: int = 512
    tie_embeddings: bool = True  # halves the parameters of a model this small

    def check(self) -> None:
        """Sizes a Llama can have, checked before any work (a 0-layer or 0-wide model is an error)."""
        for name in ("hidden_size", "n_layers", "n_heads", "intermediate_size", "max_position"):
            v = getattr(self, name)
            check_positive_int(name, v, numpy_ok=False)
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 300:
            raise SemidError(
                f"vocab_size={self.vocab_size!r} should be an integer >= 300 (256 bytes + merges)"
            )
        if self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2:
            raise SemidError(
                f"hidden_size={self.hidden_size} should be an even multiple of n_heads={self.n_heads} "
                "(each head's width must be even for rotary positions)"
            )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learnt from ``texts`` (any text encodes; no unknown tokens).

    Special tokens: ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 300:
        raise SemidError(f"vocab_size={vocab_size!r} should be an integer >= 300 (256 bytes + merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[_PAD, _BOS, _EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=_PAD, bos_token=_BOS, eos_token=_EOS)


def scratch_model(tokenizer: PreTrainedTokenizerBase, config: ScratchConfig | None = None, *, seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (same ``seed`` -> same weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config or ScratchConfig()
    config.check()
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_position,
        tie_word_embeddings=config.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def load_base_model(name_or_path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained causal LM and its tokenizer, by local directory or hub name.

    A path that does not exist, or a model that cannot be loaded, raises one-line :class:`SemidError`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = text.startswith(("/", ".", "~")) or os.sep in text.strip("/").replace("/", "", 1)
    if not path.exists() and looks_local:
        raise SemidError(f"base model {text}: no such directory")
    if path.exists() and not path.is_dir():
        raise SemidError(f"base model {text}: not a directory")
    source = str(path) if path.exists() else text
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SemidError(f"base model {text}: cannot load a causal language model ({first})") from None
    return model, tokenizer


def apply_lora(
    model: PreTrainedModel,
    vocab: SemanticVocab,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
):
    """Wrap ``model`` with LoRA adapters on every linear layer of its blocks; the new ID tokens'
    embeddings (and output rows) are trained too, since the base model has never seen them."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SemidError("LoRA needs peft: pip install 'semid[llm]'") from None
    check_positive_int("lora r", r, numpy_ok=False)
    new_ids = sorted({vocab.rec_id, *vocab.token_ids[vocab.token_ids >= 0].tolist()})
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",  # every projection of attention and MLP; peft leaves lm_head out
        trainable_token_indices={"embed_tokens": new_ids},
        ensure_weight_tying=bool(getattr(model.config, "tie_word_embeddings", False)),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# --------------------------------------------------------------------------------------------------------
# Prompts


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the conversation up to where the assistant's answer starts.

    ``messages`` are the system and user turns (an assistant turn at the end is ignored). With a chat
    template the generation prompt is rendered by it; without one, a plain layout is used. Tokens are
    encoded with ``add_special_tokens=False`` so no second BOS sneaks in.
    """
    return _with_bos(
        tokenizer, list(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"])
    )


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> str:
    """The text :func:`prompt_ids` encodes (the chat template's, or ``System: ...\\nUser: ...\\nAssistant:``)."""
    turns = [m for m in messages if m.get("role") != "assistant"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in turns) + "Assistant:"


def _with_bos(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """Prepend BOS for the plain layout (a chat template writes its own BOS, if any, as text)."""
    if getattr(tokenizer, "chat_template", None) or tokenizer.bos_token_id is None:
        return ids
    return [tokenizer.bos_token_id, *ids]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]], max_length: int = 128
) -> list[tuple[list[int], int]]:
    """``(token ids, prompt length)`` of each chat example: prompt as :func:`prompt_ids`, answer + EOS.

    Tokenised in two batched calls; an over-long prompt loses its oldest tokens (the answer is kept whole).
    """
    prompts = tokenizer(
        [prompt_text(tokenizer, ex["messages"]) for ex in examples], add_special_tokens=False
    )["input_ids"]
    answers = tokenizer([ex["messages"][-1]["content"] for ex in examples], add_special_tokens=False)[
        "input_ids"
    ]
    out = []
    for p, a in zip(prompts, answers, strict=True):
        p = _with_bos(tokenizer, list(p))
        a = [*a, tokenizer.eos_token_id]
        p = p[max(0, len(p) + len(a) - max_length) :]
        out.append((p + a, len(p)))
    return out


# --------------------------------------------------------------------------------------------------------
# Save / load


@dataclass
class LLM:
    """A trained query -> item model with everything needed to answer: tokenizer, ID vocabulary, items."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    vocab: SemanticVocab
    item_ids: np.ndarray  # (n_items,) str
    semantic_ids: list[str]  # display form, as in ids.parquet
    codes: np.ndarray  # (n_items, L) int64
    titles: list[str]
    system_prompt: str
    prefix: QueryPrefix | None = None  # the query-embedding prefix, if the model was trained with one
    query_encoder: Any = None  # the sentence encoder that feeds it (semid.embed.Embedder or alike)
    item_table: Any = None  # items.parquet as saved (pyarrow.Table): brand / price columns feed filters

    def id_text(self, item: int) -> str:
        """The ID of item row ``item`` as the model spells it."""
        return id_text(self.codes[item])


def save_llm(
    directory: str | os.PathLike,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    vocab: SemanticVocab,
    items: Any,
    *,
    system_prompt: str,
    prefix: QueryPrefix | None = None,
    extra: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write the model (safetensors; LoRA adapters merged in), tokenizer, ID vocabulary and item table.

    ``items`` is a ``pyarrow.Table`` with ``item_id``, ``semantic_id``, ``codes`` and ``title``; a
    ``prefix`` goes to ``query_prefix.safetensors`` and its config (with the query encoder to load) to
    ``semid_llm.json``; ``extra_files`` (name -> path) are copied in, e.g. the training metrics. The
    directory is replaced atomically.
    """
    import pyarrow.parquet as pq

    if hasattr(model, "merge_and_unload"):  # a peft model: save plain weights, loadable without peft
        model = model.merge_and_unload()
    directory = Path(directory)
    with atomic_path(
        directory, is_dir=True, replaceable=has_marker(META_FILE), what="a semid language-model directory"
    ) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        pq.write_table(items, tmp / ITEMS_FILE)
        meta = {**vocab.to_json(), "system_prompt": system_prompt, **(extra or {})}
        if prefix is not None:
            prefix.save(tmp / PREFIX_FILE)
            meta["query_prefix"] = prefix.to_json()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        for name, source in (extra_files or {}).items():
            if Path(source).is_file():
                shutil.copyfile(source, tmp / name)
    return directory


def _json_default(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_llm(directory: str | os.PathLike, device: str = "cpu", *, query_encoder: Any = None) -> LLM:
    """Read a directory written by :func:`save_llm`; a wrong directory is a one-line :class:`SemidError`.

    A model with a query-embedding prefix also loads its sentence encoder (the one named in
    ``semid_llm.json``, or ``query_encoder`` when given: an object with ``encode`` and ``dim``); one whose
    vectors have another length than the prefix was trained on is an error. A directory written without a
    prefix loads as before.
    """
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise SemidError(f"{directory}: no such directory")
    if not (directory / META_FILE).is_file():
        raise SemidError(
            f"{directory}: not a semid language model (no {META_FILE}; train one with semid llm train)"
        )
    try:
        meta = read_json_mapping(directory / META_FILE)
    except SemidError as e:  # "<path> line 1: invalid JSON (...)" -> named by the model directory
        reason = str(e).removeprefix(str(directory / META_FILE))
        raise SemidError(f"{directory}: not a readable language model ({META_FILE}{reason})") from None
    missing = [k for k in ("codebook_sizes", "system_prompt") if k not in meta]
    if missing:
        raise SemidError(f"{directory}: not a readable language model ({META_FILE} has no {missing[0]!r})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory)
        table = pq.read_table(directory / ITEMS_FILE)
    except Exception as e:  # noqa: BLE001 - transformers, safetensors, pyarrow: many error types
        raise SemidError(f"{directory}: not a readable language model ({first_line(e)})") from None
    model = model.to(device).eval()  # outside: a device or memory error is no damaged file
    vocab = SemanticVocab.from_tokenizer(
        tokenizer, meta["codebook_sizes"], model.get_input_embeddings().weight.shape[0]
    )
    codes = np.asarray(table["codes"].to_pylist(), dtype=np.int64).reshape(table.num_rows, -1)
    prefix, encoder = None, None
    if meta.get("query_prefix"):
        prefix = QueryPrefix.from_json(meta["query_prefix"]).load(directory / PREFIX_FILE).to(device).eval()
        encoder = query_encoder
        if encoder is None:
            encoder = load_query_encoder(prefix.config.query_encoder, device=device)
        if int(encoder.dim) != prefix.d_in:
            raise SemidError(
                f"query encoder {encoder_name(encoder)}: {int(encoder.dim)}-d vectors, but the model's "
                f"prefix was trained on {prefix.d_in}-d ones ({prefix.encoder_name})"
            )
        if prefix.encoder_name and encoder_name(encoder) != prefix.encoder_name:
            warnings.warn(
                f"query encoder {encoder_name(encoder)} is not the one the prefix was trained with "
                f"({prefix.encoder_name})",
                stacklevel=2,
            )
    return LLM(
        model=model,
        tokenizer=tokenizer,
        vocab=vocab,
        item_ids=np.asarray(table["item_id"].to_pylist(), dtype=object),
        semantic_ids=table["semantic_id"].to_pylist(),
        codes=codes,
        titles=[t or "" for t in table["title"].to_pylist()],
        system_prompt=meta["system_prompt"],
        prefix=prefix,
        query_encoder=encoder,
        item_table=table,
    )
