"""Codes -> unique Semantic IDs: dedup strategies, string formats, prefix trie, persistent registry."""

from semid.ids.dedup import DEDUP_STRATEGIES, DedupResult, deduplicate
from semid.ids.formats import (
    FORMATS,
    detect_format,
    format_id,
    format_ids,
    id_to_tokens,
    parse_id,
    parse_ids,
    token_vocabulary,
    tokens_to_codes,
)
from semid.ids.trie import PrefixTrie

__all__ = [
    "DEDUP_STRATEGIES",
    "FORMATS",
    "DedupResult",
    "PrefixTrie",
    "Registry",
    "deduplicate",
    "detect_format",
    "format_id",
    "format_ids",
    "id_to_tokens",
    "parse_id",
    "parse_ids",
    "token_vocabulary",
    "tokens_to_codes",
]


def __getattr__(name: str):  # the registry pulls in sqlite only when used
    if name == "Registry":
        from semid.ids.registry import Registry

        return Registry
    raise AttributeError(name)
