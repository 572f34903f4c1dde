"""The SID codec, the catalogue trie and the one reader of a sids artifact's SID table.

A Semantic ID (paper §3.2.1) is a short tuple of codes, one per level, written as tokens with
the level's letter and no separator: codes (12, 34, 5) <-> "<a_12><b_34><c_5>".
The catalogue trie answers "which tokens may follow this prefix" for constrained
decoding, rewards and serving. `read_sid_table` gives every stage the same `SIDTable`.
"""
from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

LEVEL_LETTERS = string.ascii_lowercase
TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")
SID_RE = re.compile(r"(?:<[a-z]_\d+>)+")

SIDS_FILE = "sids.parquet"   # the SID table of the sids artifact: item_id, sid, codes
KIND = "sids"


class SIDError(ValueError):
    pass


def token(level: int, code: int) -> str:
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def format_sid(codes: Sequence[int]) -> str:
    return "".join(token(level, int(c)) for level, c in enumerate(codes))


def parse_sid(text: str, levels: int | None = None, codes_per_level: int | None = None) -> tuple[int, ...]:
    """Parse exactly one SID; raise SIDError on anything malformed."""
    text = text.strip()
    tokens = TOKEN_RE.findall(text)
    if not tokens or "".join(f"<{l}_{c}>" for l, c in tokens) != text:
        raise SIDError(f"not a SID: {text[:80]!r}")
    codes = []
    for level, (letter, code) in enumerate(tokens):
        if letter != LEVEL_LETTERS[level]:
            raise SIDError(f"SID {text!r}: token {level + 1} has level '{letter}', expected '{LEVEL_LETTERS[level]}'")
        if code != str(int(code)):
            raise SIDError(f"SID {text!r}: code {code!r} has leading zeros")
        if codes_per_level is not None and int(code) >= codes_per_level:
            raise SIDError(f"SID {text!r}: code {code} out of range (< {codes_per_level})")
        codes.append(int(code))
    if levels is not None and len(codes) != levels:
        raise SIDError(f"SID {text!r}: {len(codes)} levels, expected {levels}")
    return tuple(codes)


def is_sid(text: str, levels: int | None = None, codes_per_level: int | None = None) -> bool:
    """True when `text` is exactly one well-formed SID (see parse_sid)."""
    try:
        parse_sid(text, levels, codes_per_level)
        return True
    except SIDError:
        return False


def parse_tokens(prefix_tokens: Sequence[str]) -> tuple[int, ...]:
    """Codes of a token prefix like ["<a_3>", "<b_7>"]; raise SIDError on a bad token or level order."""
    codes = []
    for level, tok in enumerate(prefix_tokens):
        m = TOKEN_RE.fullmatch(tok)
        if m is None or m.group(1) != LEVEL_LETTERS[level] or m.group(2) != str(int(m.group(2))):
            raise SIDError(f"token {level + 1} of the prefix is {tok!r}, expected <{LEVEL_LETTERS[level]}_N>")
        codes.append(int(m.group(2)))
    return tuple(codes)


def tokens_of(sid: str) -> list[str]:
    """The SID's tokens in order (validated)."""
    return [token(i, c) for i, c in enumerate(parse_sid(sid))]


def vocabulary(levels: int = 3, codes_per_level: int = 256) -> list[str]:
    """All SID tokens, in a deterministic order (level-major), for the tokenizer."""
    return [token(l, c) for l in range(levels) for c in range(codes_per_level)]


def find_sids(text: str) -> list[str]:
    """Every maximal run of SID tokens in free text (not validated against a catalogue)."""
    return SID_RE.findall(text)


@dataclass
class _Node:
    children: dict[int, "_Node"] = field(default_factory=dict)
    item: str | None = None


class Catalogue:
    """The set of catalogue SIDs as a trie over codes, with item lookups both ways."""

    def __init__(self, sid_by_item: dict[str, str] | Iterable[tuple[str, str]]):
        pairs = sid_by_item.items() if isinstance(sid_by_item, dict) else sid_by_item
        self.root = _Node()
        self.sid_by_item: dict[str, str] = {}
        self.item_by_sid: dict[str, str] = {}
        for item, sid in pairs:
            codes = parse_sid(sid)
            if sid in self.item_by_sid:
                raise SIDError(f"SID {sid} is shared by items {self.item_by_sid[sid]!r} and {item!r}")
            node = self.root
            for c in codes:
                if node.item is not None:  # an existing SID is a prefix of this one
                    raise SIDError(f"SID {self.sid_by_item[node.item]} of item {node.item!r} is a prefix of "
                                   f"SID {sid} of item {item!r}")
                node = node.children.setdefault(c, _Node())
            if node.children:
                raise SIDError(f"SID {sid} of item {item!r} is a prefix of another SID")
            node.item = item
            self.sid_by_item[item] = sid
            self.item_by_sid[sid] = item
        self.levels = max((len(parse_sid(s)) for s in self.item_by_sid), default=0)

    def __len__(self) -> int:
        return len(self.item_by_sid)

    def __contains__(self, sid: str) -> bool:
        return sid in self.item_by_sid

    def _node(self, prefix: Sequence[int]) -> _Node | None:
        node = self.root
        for c in prefix:
            node = node.children.get(c)
            if node is None:
                return None
        return node

    def allowed_codes(self, prefix: Sequence[int]) -> list[int]:
        """Codes that may follow `prefix` at the next level (empty at a leaf or off-trie)."""
        node = self._node(prefix)
        return sorted(node.children) if node else []

    def allowed_tokens(self, prefix_tokens: Sequence[str]) -> list[str]:
        prefix = parse_tokens(prefix_tokens)
        level = len(prefix)
        return [token(level, c) for c in self.allowed_codes(prefix)]

    def is_complete(self, prefix: Sequence[int]) -> bool:
        node = self._node(prefix)
        return node is not None and node.item is not None

    def items_with_prefix(self, prefix: Sequence[int]) -> list[str]:
        """Items whose SID starts with the code prefix (all items for an empty prefix)."""
        node = self._node(prefix)
        out, stack = [], [node] if node else []
        while stack:
            n = stack.pop()
            if n.item is not None:
                out.append(n.item)
            stack.extend(n.children.values())
        return sorted(out)


@dataclass(frozen=True)
class SIDTable:
    """item -> SID of a catalogue, with its code space (levels x codes per level).

    `codes_per_level` is the sids stage's configured size when known (the SID tokens a model
    gets), never less than the largest code + 1. Several items may share a SID (collisions kept);
    `catalogue` (the trie) refuses that, `item_by_sid` keeps the first item in item order.
    """

    sid_by_item: dict[str, str]
    levels: int
    codes_per_level: int
    source: str = "SID table"

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], source: str = "SID table",
                   codes_per_level: int | None = None) -> "SIDTable":
        """Validated table; an error names the source, row and item."""
        sid_by_item: dict[str, str] = {}
        levels, top = 0, 0
        for row, (item, sid) in enumerate(pairs):
            if sid is None or (isinstance(sid, float) and sid != sid):
                raise SIDError(f"{source}: row {row} (item {item!r}): field 'sid' is empty")
            try:
                codes = parse_sid(str(sid))
            except SIDError as exc:
                raise SIDError(f"{source}: row {row} (item {item!r}): field 'sid': {exc}") from None
            sid_by_item[str(item)] = str(sid)
            levels, top = max(levels, len(codes)), max(top, max(codes) + 1)
        if not sid_by_item:
            raise SIDError(f"{source}: no SIDs")
        return cls(sid_by_item, levels, max(int(codes_per_level or 0), top), source)

    def __len__(self) -> int:
        return len(self.sid_by_item)

    @functools.cached_property
    def item_by_sid(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item, sid in sorted(self.sid_by_item.items()):
            out.setdefault(sid, item)
        return out

    @property
    def shared_items(self) -> int:
        """Items whose SID another item already has (the collisions kept)."""
        return len(self.sid_by_item) - len(self.item_by_sid)

    @functools.cached_property
    def catalogue(self) -> Catalogue:
        try:
            return Catalogue(self.sid_by_item)
        except SIDError as exc:
            raise SIDError(f"{self.source}: {exc}") from None

    def vocabulary(self) -> list[str]:
        """Every SID token of the code space, in the tokenizer's order."""
        return vocabulary(self.levels, self.codes_per_level)

    def token_info(self) -> dict:
        """The `sid_tokens.json` record of a model artifact."""
        return {"levels": self.levels, "codes_per_level": self.codes_per_level, "tokens": self.vocabulary()}


def read_sid_table(sids_dir: str | Path) -> SIDTable:
    """The SID table of a sids artifact directory (`sids.parquet`, sized by its manifest's config)."""
    import pyarrow.parquet as pq

    path = Path(sids_dir) / SIDS_FILE
    if not path.is_file():
        raise SIDError(f"{path}: SID table missing")
    table = pq.read_table(path)
    for col in ("item_id", "sid"):
        if col not in table.column_names:
            raise SIDError(f"{path}: column {col!r} missing (have {table.column_names})")
    manifest = Path(sids_dir) / "manifest.json"
    cpl = json.loads(manifest.read_text()).get("config", {}).get("codes_per_level") if manifest.is_file() else None
    return SIDTable.from_pairs(zip(table.column("item_id").to_pylist(), table.column("sid").to_pylist()),
                               source=str(path), codes_per_level=cpl)
