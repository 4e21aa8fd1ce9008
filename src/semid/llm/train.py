"""Fine-tune a causal LM on the examples of ``semid llm prepare``: AdamW, warmup + cosine, seeded.

:func:`train_llm` reads a prepared directory, builds the model (the offline scratch Llama, or a base
model by path/name, optionally with LoRA) and, by default, a query-embedding prefix
(:mod:`semid.llm.prefix`: each request's sentence embedding, from the packaged MiniLM unless told
otherwise, becomes ``n_prefix`` soft-prompt vectors trained with the model; requests are embedded once up
front and cached next to the prepared data), trains on the assistant answers only (prompt tokens and
prefix carry no loss), logs one JSON object per line to ``metrics.jsonl`` (loss, learning rate, validation
loss and Hit@1/Hit@10 of constrained beam search on held-out query templates), keeps a checkpoint of the
latest weights (safetensors via ``save_pretrained``), and writes the final model with
:func:`semid.llm.model.save_llm`.

Example::

    result = train_llm("llm_data/", "llm_model/", TrainConfig(max_minutes=10))
    print(result.metrics["hit@10"])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from semid._distributed import barrier, on_main, rank_device, setup, shard
from semid._outputs import check_output, has_marker, remove_dead_leftovers, sibling_dir
from semid._utils import check_positive_int, decay_progress, read_json_mapping, resolve_device
from semid.errors import SemidError
from semid.llm.examples import DATA_META, ITEMS_FILE, read_jsonl
from semid.llm.model import (
    META_FILE,
    ScratchConfig,
    SemanticVocab,
    add_semantic_tokens,
    apply_lora,
    encode_examples,
    load_base_model,
    save_llm,
    scratch_model,
    train_tokenizer,
)
from semid.llm.prefix import (
    PrefixConfig,
    QueryEncoder,
    QueryPrefix,
    encoder_name,
    load_query_encoder,
    prepend_prefix,
    request_embeddings,
    request_text,
)
from semid.rec.epochs import data_parallel_step

__all__ = ["TrainConfig", "TrainResult", "train_llm"]

_ID_TOKEN_RE = re.compile(r"<[a-z]_\d+>|\[REC\]")


@dataclass
class TrainConfig:
    """What to train and for how long; the defaults suit the scratch model on a CPU."""

    base_model: str | None = None  # local path or hub name; None: the offline scratch Llama
    lora: bool = False
    lora_r: int = 16
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    # The query's sentence embedding as soft-prompt vectors (scratch and base models alike); None: off.
    query_prefix: PrefixConfig | None = field(default_factory=PrefixConfig)
    epochs: float = 10.0
    max_steps: int | None = None  # stops at whichever of epochs / max_steps / max_minutes comes first
    max_minutes: float | None = None
    batch_size: int = 64
    lr: float = 2e-3  # scratch models like a high rate; use ~1e-4 (full) or ~2e-4 (LoRA) for base models
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = 128
    eval_every: int = 500  # steps between validation passes (0: only at the end)
    eval_queries: int = 256  # held-out recommendation queries scored at each validation pass
    save_every: int = 1000  # steps between checkpoints (0: none)
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        for name in ("batch_size", "max_length", "lora_r"):
            v = getattr(self, name)
            check_positive_int(name, v, numpy_ok=False)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SemidError(f"lr={self.lr!r} should be a positive number")
        if self.epochs <= 0:
            raise SemidError(f"epochs={self.epochs!r} should be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise SemidError(f"max_steps={self.max_steps!r} should be a positive integer")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise SemidError(f"max_minutes={self.max_minutes!r} should be positive")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SemidError(f"seed={self.seed!r} should be a non-negative integer")
        if self.base_model is None:
            self.scratch.check()
        if self.query_prefix is not None:
            self.query_prefix.check()


@dataclass
class TrainResult:
    """Where the model went, how long it took and its last validation numbers."""

    directory: Path
    steps: int
    seconds: float
    metrics: dict[str, float]
    embed_seconds: float = 0.0  # embedding the requests for the prefix (before the training clock starts)


def _load_prepared(data_dir: Path) -> tuple[dict[str, Any], list[dict], list[dict], Any]:
    if not data_dir.is_dir():
        raise SemidError(f"{data_dir}: no such directory")
    meta_path = data_dir / DATA_META
    if not meta_path.is_file():
        raise SemidError(f"{data_dir}: not a prepared directory (no {DATA_META}; run semid llm prepare)")
    meta = read_json_mapping(meta_path)
    train = read_jsonl(data_dir / "train.jsonl")
    valid = read_jsonl(data_dir / "valid.jsonl")
    if not train:
        raise SemidError(f"{data_dir / 'train.jsonl'}: no examples")
    return meta, train, valid, pq.read_table(data_dir / ITEMS_FILE)


def _batch(
    encoded: list[tuple[list[int], int]], pad_id: int, queries: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding), and the
    ``(B, d_in)`` query embeddings of the rows when the model has a prefix."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(encoded):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, n_prompt : len(ids)] = input_ids[r, n_prompt : len(ids)]
        mask[r, : len(ids)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if queries is not None:
        out["queries"] = queries
    return out


def _answer_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    prefix: QueryPrefix | None = None,
    vocab: SemanticVocab | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (see :func:`_answer_terms`)."""
    total, count = _answer_terms(model, batch, prefix, vocab)
    return total / count


class _AnswerTerms(torch.nn.Module):
    """:func:`_answer_terms` as ``forward`` over the trained modules, the call DistributedDataParallel hooks
    its gradient sync into (:mod:`semid.rec.distributed`)."""

    def __init__(self, model: Any, prefix: QueryPrefix | None, vocab: SemanticVocab) -> None:
        super().__init__()
        self.model, self.prefix, self.vocab = model, prefix, vocab

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return _answer_terms(self.model, batch, self.prefix, self.vocab)


def _answer_terms(
    model: Any,
    batch: dict[str, torch.Tensor],
    prefix: QueryPrefix | None = None,
    vocab: SemanticVocab | None = None,
) -> tuple[torch.Tensor, int]:
    """``(sum, number)`` of the cross-entropies of the answer tokens of the answer tokens; the output layer runs only where there is a label (the prompt
    is most of each sequence, so this saves most of the vocabulary projection). With a ``prefix``, its
    vectors go in front of each row (``[prefix | prompt | answer | padding]``) and carry no loss; with its
    code head (and ``vocab``), a position whose target is an ID token of level ``l`` also gets the query's
    scores of level ``l``'s tokens, exactly as at generation."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if prefix is None:
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    else:
        embeds, mask, _ = prepend_prefix(
            model,
            prefix(batch["queries"]),
            batch["input_ids"],
            batch["attention_mask"],
            pad_id=0,
            left_pad=False,
        )
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, prefix.n_prefix :]
    targets = batch["labels"][:, 1:]  # (B, T - 1): token t + 1 is predicted at position t
    where = targets != -100
    logits = head(hidden[:, :-1][where]).float()  # (N, V)
    target = targets[where]  # (N,)
    if prefix is not None and prefix.has_code_head and vocab is not None:
        logits = logits + _code_bias(logits, target, where.nonzero()[:, 0], batch["queries"], prefix, vocab)
    return F.cross_entropy(logits, target, reduction="sum"), len(target)


def _code_bias(
    logits: torch.Tensor,
    target: torch.Tensor,
    row: torch.Tensor,
    queries: torch.Tensor,
    prefix: QueryPrefix,
    vocab: SemanticVocab,
) -> torch.Tensor:
    """``(N, V)``: where ``target[n]`` is an ID token of level ``l``, the code head's scores of level ``l``'s
    tokens for row ``row[n]``'s query, given the codes the answer wrote before it (the targets just before
    ``n``); zero elsewhere. The level a position writes is the level of the token it should write."""
    level_of, code_of = vocab.level_and_code(logits.device)
    tgt = target.clamp(max=level_of.numel() - 1)
    level, code = level_of[tgt], code_of[tgt]  # (N,) -1: not an ID token
    table = vocab.token_ids.to(logits.device)
    bias = torch.zeros_like(logits)
    for lv, k in enumerate(vocab.codebook_sizes):
        n = (level == lv).nonzero()[:, 0]  # (M,) positions that write level lv
        before = n[:, None] - lv + torch.arange(lv, device=n.device)  # (M, lv) the ID's earlier codes
        ok = (before >= 0).all(1)
        b = before.clamp(min=0)
        ok &= (level[b] == torch.arange(lv, device=n.device)).all(1) & (row[b] == row[n, None]).all(1)
        n, b = n[ok], b[ok]
        if n.numel() == 0:
            continue
        scores = prefix.id_scores(queries[row[n]], lv, code[b])  # (M, K)
        bias = bias.index_put((n[:, None].expand(-1, k), table[lv, :k].expand(len(n), -1)), scores)
    return bias


def _lr_lambda(warmup: int, total: int, floor: float, time_used: Callable[[], float] | None = None):
    """Linear warmup, then cosine decay to ``floor``. With ``time_used`` (the share of a time budget spent,
    0..1) the decay follows whichever is further along, steps or time, so a run stopped by ``max_minutes``
    still ends at the low learning rate instead of being cut off near its peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = decay_progress(step, warmup, total, None if time_used is None else time_used())
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def train_llm(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    query_encoder: QueryEncoder | None = None,
) -> TrainResult:
    """Train on ``data_dir`` (from ``semid llm prepare``) and write the model to ``out_dir``.

    ``query_encoder`` (an object with ``encode(texts) -> (n, d)``, ``dim`` and ``name``) replaces the one
    ``config.query_prefix`` names; pass the same one to :func:`~semid.llm.model.load_llm`.
    """
    config = config or TrainConfig()
    config.check()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    local = [s for s in (config.base_model, getattr(config.query_prefix, "query_encoder", None)) if s]
    check_output(  # before anything is trained
        out_dir,
        is_dir=True,
        inputs=[data_dir, *(s for s in local if Path(s).exists())],
        replaceable=has_marker(META_FILE),
        what="a language-model directory",
    )
    with contextlib.ExitStack() as on_failure:  # what _train registers is undone if it raises
        return _train(data_dir, out_dir, config, query_encoder, on_failure)


def _train(
    data_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    query_encoder: QueryEncoder | None,
    on_failure: contextlib.ExitStack,
) -> TrainResult:
    """:func:`train_llm` after its checks: the data, the model, the loop, the final model."""
    from semid.llm.generate import QueryRecommender

    meta, train, valid, items = _load_prepared(data_dir)
    group = setup(resolve_device(config.device))  # a data-parallel job under torchrun, or one process
    device = rank_device(resolve_device(config.device), group)
    main = group.is_main
    encoder = None
    if config.query_prefix is not None:  # a wrong encoder fails now, before anything is trained
        encoder = query_encoder
        if encoder is None:
            encoder = load_query_encoder(config.query_prefix.query_encoder, device=device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sizes = [int(k) for k in meta["codebook_sizes"]]
    system_prompt = meta.get("system_prompt", "")

    if config.base_model is None:
        texts = [_ID_TOKEN_RE.sub(" ", m["content"]) for ex in train for m in ex["messages"][1:]]
        texts += [system_prompt, *items["title"].to_pylist()]
        tokenizer = train_tokenizer((t for t in texts if t), config.scratch.vocab_size)
        vocab = add_semantic_tokens(tokenizer, sizes)
        model = scratch_model(tokenizer, config.scratch, seed=config.seed)
    else:
        model, tokenizer = load_base_model(config.base_model)
        vocab = add_semantic_tokens(tokenizer, sizes, model)
    encoded = encode_examples(tokenizer, train, config.max_length)
    rec_valid = [ex for ex in valid if ex["task"] != "predict_attribute" and ex["item"] >= 0]
    if len(rec_valid) > config.eval_queries:
        rec_valid = [
            rec_valid[i] for i in np.sort(rng.choice(len(rec_valid), config.eval_queries, replace=False))
        ]
    loss_valid = valid[: config.eval_queries * 4]
    valid_encoded = encode_examples(tokenizer, loss_valid, config.max_length)
    codes = np.asarray(items["codes"].to_pylist(), dtype=np.int64).reshape(items.num_rows, -1)

    prefix, embed_seconds = None, 0.0
    train_q = valid_q = rec_q = None
    if config.query_prefix is not None:
        t0 = time.perf_counter()
        groups = (train, loss_valid, rec_valid)
        requests = [request_text(ex["messages"]) for part in groups for ex in part]
        if not main:
            barrier(group)  # rank 0 embeds and caches; the other ranks then read its cache
        Q = request_embeddings(encoder, requests, cache_dir=data_dir)  # (n, d_in), all at once
        embed_seconds = time.perf_counter() - t0
        n_train, n_loss = len(train), len(loss_valid)
        train_q, valid_q = torch.from_numpy(Q[:n_train]), torch.from_numpy(Q[n_train : n_train + n_loss])
        rec_q = Q[n_train + n_loss :]
        source = config.query_prefix.query_encoder  # a local directory is saved as an absolute path
        if source is not None and Path(source).expanduser().is_dir():
            source = str(Path(source).expanduser().resolve())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            prefix = QueryPrefix(
                Q.shape[1],
                model.get_input_embeddings().weight.shape[1],
                replace(config.query_prefix, query_encoder=source),
                encoder_name=encoder_name(encoder),
                codebook_sizes=sizes,
            )
        if config.query_prefix.code_head:  # the items, read by the query encoder, for the code head
            t0 = time.perf_counter()
            texts = items["text"] if "text" in items.column_names else items["title"]  # older prepared dirs
            X = request_embeddings(encoder, [t or None for t in texts.to_pylist()], cache_dir=data_dir)
            prefix.fit_items(X, codes)
            embed_seconds += time.perf_counter() - t0
        if main:
            barrier(group)
        prefix.to(device).train()
    if config.lora:
        model = apply_lora(model, vocab, r=config.lora_r)
    model.to(device).train()

    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = math.ceil(config.epochs * steps_per_epoch)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    code_params = [p for n, p in prefix.named_parameters() if n.startswith("code_")] if prefix else []
    params += [p for n, p in prefix.named_parameters() if not n.startswith("code_")] if prefix else []
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if code_params:  # the adapter decays towards the identity map (A -> 0)
        lr = config.lr * prefix.config.code_lr_ratio
        groups.append({"params": code_params, "weight_decay": config.weight_decay, "lr": lr})
        params += code_params
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
    ddp = None
    if group.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if not main:  # a dropout stream of its own per rank
            torch.manual_seed(config.seed * 1_000_003 + group.rank * 7_919)
        ddp = DistributedDataParallel(
            _AnswerTerms(model, prefix, vocab),
            device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            # the code head only scores positions whose target is an ID token: a rank's slice may have none
            find_unused_parameters=bool(prefix is not None and prefix.has_code_head),
        )
    start = time.perf_counter()
    clock = [0.0]  # seconds of training so far: rank 0's, shared with every step (one clock for all ranks)
    budget = 60 * config.max_minutes if config.max_minutes else None
    time_used = (lambda: clock[0] / budget) if budget else None  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _lr_lambda(min(config.warmup_steps, max(1, total // 10)), total, config.min_lr_ratio, time_used),
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocab.eos_id

    # Metrics and checkpoints while training go to a folder of this run's own beside the output (never a
    # user's folder that happens to have a fixed name), removed at the end; after a failure or Ctrl-C it is
    # kept only if it holds a checkpoint (load it with load_llm).
    def start_work() -> Path:
        remove_dead_leftovers(out_dir, ".training")  # killed runs' (SIGKILL, out of memory): superseded
        work = sibling_dir(out_dir, ".training")
        on_failure.callback(_drop_unless_checkpointed, work)
        (work / "metrics.jsonl").write_text("")
        return work

    work = on_main(start_work, group)  # rank 0's folder; None on the others, which only compute
    metrics_path = work / "metrics.jsonl" if work is not None else None

    def log(row: dict[str, Any]) -> None:
        if main:
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def evaluate() -> dict[str, float]:
        model.eval()
        if prefix is not None:
            prefix.eval()
        with torch.no_grad():
            losses = []
            for i in range(0, len(valid_encoded), config.batch_size):
                chunk = valid_encoded[i : i + config.batch_size]
                q = valid_q[i : i + config.batch_size] if valid_q is not None else None
                batch = {k: v.to(device) for k, v in _batch(chunk, pad_id, q).items()}
                losses.append(float(_answer_loss(model, batch, prefix, vocab)))
        out: dict[str, float] = {"val_loss": float(np.mean(losses))} if losses else {}
        if rec_valid:
            rec = QueryRecommender(
                model,
                tokenizer,
                vocab,
                codes,
                system_prompt=system_prompt,
                prefix=prefix,
                query_encoder=encoder,
            )
            res = rec.recommend(
                [ex["messages"][1]["content"] for ex in rec_valid],
                k=min(10, len(codes)),
                query_embeddings=rec_q,
            )
            targets = np.array([ex["item"] for ex in rec_valid])
            out["hit@1"] = float(res.hits(targets, 1).mean())
            out["hit@10"] = float(res.hits(targets, 10).mean())
        model.train()
        if prefix is not None:
            prefix.train()
        return out

    from tqdm.auto import tqdm

    start = time.perf_counter()  # the clock of the time budget (and of the schedule) starts now
    step, last_eval = 0, {}
    bar = tqdm(total=total, disable=not (config.progress and main), desc="train", unit="step")
    deadline = 60 * config.max_minutes if config.max_minutes else math.inf  # seconds of training
    while step < total and clock[0] < deadline:
        order = rng.permutation(len(encoded))
        for b in range(0, len(order), config.batch_size):
            rows = order[b : b + config.batch_size]  # the global batch; each rank trains on its slice
            if ddp is None:
                batch = _batch(
                    [encoded[i] for i in rows], pad_id, train_q[rows] if train_q is not None else None
                )
                loss = _answer_loss(model, {k: v.to(device) for k, v in batch.items()}, prefix, vocab)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                loss_value = loss.item()
                clock[0] = time.perf_counter() - start
            else:  # the data-parallel step of the sequence models (semid.rec.epochs)
                local, weight = shard(rows, group), 1.0
                if len(local) == 0:  # fewer examples than ranks: join the all-reduce with weight 0
                    local, weight = rows[:1], 0.0
                batch = _batch(
                    [encoded[i] for i in local], pad_id, train_q[local] if train_q is not None else None
                )
                done = data_parallel_step(
                    ddp, optimizer, {k: v.to(device) for k, v in batch.items()}, weight, group, device,
                    clip_grad_norm=config.grad_clip, clock=time.perf_counter() - start, examples=len(local),
                )  # fmt: skip
                loss_value, clock[0] = done.loss, done.clock
            scheduler.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == 1:
                row = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}
                log({**row, "seconds": round(clock[0], 2)})
                bar.set_postfix(loss=f"{loss_value:.3f}")
            if config.eval_every and step % config.eval_every == 0:
                last_eval = evaluate() if main else {}
                log({"step": step, **last_eval, "seconds": round(time.perf_counter() - start, 2)})
            if config.save_every and step % config.save_every == 0 and main:
                _checkpoint(
                    work / "checkpoint", model, prefix, tokenizer, vocab, items, system_prompt, config, step
                )
            if step >= total or clock[0] >= deadline:
                break
    bar.close()
    seconds = time.perf_counter() - start
    if not main:  # rank 0 validates and writes the model; the others are done
        barrier(group)
        return TrainResult(
            directory=out_dir, steps=step, seconds=seconds, metrics={}, embed_seconds=embed_seconds
        )
    last_eval = evaluate()
    log({"step": step, **last_eval, "seconds": round(seconds, 2), "final": True})
    save_llm(
        out_dir,
        model,
        tokenizer,
        vocab,
        items,
        system_prompt=system_prompt,
        prefix=prefix,
        extra={
            "train": asdict(config),
            "step": step,
            "train_seconds": seconds,
            "embed_seconds": embed_seconds,
            "metrics": last_eval,
        },
        extra_files={"metrics.jsonl": metrics_path},
    )
    on_failure.pop_all()
    _remove_tree(work)
    barrier(group)
    return TrainResult(
        directory=out_dir, steps=step, seconds=seconds, metrics=last_eval, embed_seconds=embed_seconds
    )


def _checkpoint(
    directory: Path,
    model: Any,
    prefix: QueryPrefix | None,
    tokenizer: Any,
    vocab: SemanticVocab,
    items: Any,
    system_prompt: str,
    config: TrainConfig,
    step: int,
) -> None:
    """The latest weights, loadable with :func:`semid.llm.model.load_llm` (LoRA stays unmerged in training)."""
    to_save = model
    if hasattr(model, "merge_and_unload"):  # merging would modify the training model in place
        import copy

        to_save = copy.deepcopy(model)
    save_llm(
        directory,
        to_save,
        tokenizer,
        vocab,
        items,
        system_prompt=system_prompt,
        prefix=prefix,
        extra={"train": asdict(config), "step": step},
    )


def _drop_unless_checkpointed(work: Path) -> None:
    """After a failed run: remove its working folder unless it holds a checkpoint worth keeping."""
    if not (work / "checkpoint").exists():
        _remove_tree(work)
    else:
        warnings.warn(f"the run failed; its latest checkpoint is kept in {work / 'checkpoint'}", stacklevel=2)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
