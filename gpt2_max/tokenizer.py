"""GPT-2's byte-level BPE tokenizer, built offline from ranks shipped in this package.

``tiktoken.get_encoding("gpt2")`` downloads its files at run time; classrooms and
build machines often cannot reach that host, so the ranks file ships in
``gpt2_max/assets/`` (MIT, OpenAI; licence beside it) and its sha256 is checked
when it is read.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from gpt2_max.errors import ModelLoadError

RANKS_PATH = Path(__file__).parent / "assets" / "gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, punctuation runs,
# and whitespace, each optionally led by one space.
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# How the explorer shows invisible characters inside a token.
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (space is 'Ġ', newline is 'Ċ')."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


BYTE_TO_SYMBOL = _bytes_to_unicode()


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, raw bytes and two ways to show it."""

    id: int
    bytes: bytes
    display: str  # readable: spaces as ␣, newlines as ↵, partial UTF-8 as <0xE2>
    symbol: str  # GPT-2's own vocabulary spelling: 'Ġworld', 'Ċ'


@dataclass(frozen=True)
class MergeReplay:
    """Byte-pair encoding of one chunk, step by step: its bytes and every merge in order."""

    data: bytes
    merges: tuple[tuple[int, int, int], ...]  # (start, middle, end): parts [start, middle) + [middle, end)
    final: tuple[int, ...]  # the final tokens' starts and the chunk's end: boundaries(steps)

    @property
    def steps(self) -> int:
        return len(self.merges)

    def boundaries(self, step: int) -> list[int]:
        """The part starts after ``step`` merges, and the chunk's end: [parts + 1] byte offsets.
        Replayed from the nearer end, the bytes or the final tokens (O(n) per merge replayed)."""
        if step <= self.steps - step:
            cuts = list(range(len(self.data) + 1))
            for _, middle, _ in self.merges[:step]:
                del cuts[bisect.bisect_left(cuts, middle)]
            return cuts
        cuts = list(self.final)
        for _, middle, _ in reversed(self.merges[step:]):
            bisect.insort(cuts, middle)
        return cuts

    def parts(self, boundaries: list[int]) -> list[bytes]:
        return [self.data[a:b] for a, b in zip(boundaries, boundaries[1:])]


@lru_cache(maxsize=8192)  # the views show the same tokens and parts many times over
def display_bytes(data: bytes) -> str:
    """Shows a token's bytes: invisible characters marked, partial UTF-8 bytes in hex."""
    out = []
    for piece in _utf8_pieces(data):
        if isinstance(piece, int):
            out.append(f"<0x{piece:02X}>")
        else:
            out.append("".join(VISIBLE.get(ch, ch if ch.isprintable() else f"<U+{ord(ch):04X}>") for ch in piece))
    return "".join(out)


def _utf8_pieces(data: bytes) -> list[str | int]:
    """Splits bytes into decodable text runs and single undecodable bytes."""
    pieces: list[str | int] = []
    text = data.decode("utf-8", errors="surrogateescape")
    run = []
    for ch in text:
        if 0xDC80 <= ord(ch) <= 0xDCFF:  # surrogateescape marks a stray byte
            if run:
                pieces.append("".join(run))
                run = []
            pieces.append(ord(ch) - 0xDC00)
        else:
            run.append(ch)
    if run:
        pieces.append("".join(run))
    return pieces


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    data = RANKS_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise ModelLoadError(
            f"{RANKS_PATH} has sha256 {digest}, expected {RANKS_SHA256}: the "
            "tokenizer file is damaged; reinstall the package"
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(RANKS_PATH), expected_hash=RANKS_SHA256),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
        explicit_n_vocab=50257,
    )


class Tokenizer:
    """Text <-> GPT-2 token ids, plus what the Tokenize tab shows about each token."""

    def __init__(self) -> None:
        self._enc = _encoding()
        self._ranks: dict[bytes, int] = self._enc._mergeable_ranks  # bytes -> rank
        self._pattern = regex.compile(PATTERN)
        self.n_vocab = self._enc.n_vocab
        self.max_token_bytes = max(len(part) for part in self._ranks)  # 128: no token is longer
        self.eot_id = END_OF_TEXT_ID

    def encode(self, text: str, allow_end_of_text: bool = False) -> list[int]:
        """Token ids of ``text``.

        ``<|endoftext|>`` typed by a user is ordinary text (split into ``<``,
        ``|``, ``endoftext`` ...) unless ``allow_end_of_text`` is set, in which
        case it becomes the single special token 50256.
        """
        text = clean_text(text)
        if allow_end_of_text:
            return self._enc.encode(text, allowed_special={END_OF_TEXT})
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; bytes that do not form UTF-8 become U+FFFD."""
        return self._enc.decode(list(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._enc.decode_single_token_bytes(token_id)

    def token(self, token_id: int) -> Token:
        data = self.token_bytes(token_id)
        if token_id == END_OF_TEXT_ID:
            return Token(token_id, data, END_OF_TEXT, END_OF_TEXT)
        return Token(token_id, data, display_bytes(data), "".join(BYTE_TO_SYMBOL[b] for b in data))

    def tokens(self, ids: list[int]) -> list[Token]:
        return [self.token(i) for i in ids]

    def pretokenize(self, text: str) -> list[str]:
        """The chunks GPT-2 splits text into before BPE (merges never cross chunks)."""
        return self._pattern.findall(clean_text(text))

    def merge_replay(self, chunk: str) -> MergeReplay:
        """Replays byte-pair encoding on one pre-token chunk, recording every merge.

        Starts from single bytes; each step merges the adjacent pair whose
        concatenation has the lowest rank (was learned earliest; the leftmost of
        equals), until no adjacent pair is in the vocabulary. The candidate pairs
        wait in a heap, so a chunk of n bytes costs O(n log n), not a scan of
        every pair per step: a pasted run of 16,000 '=' is one chunk.
        """
        data = clean_text(chunk).encode("utf-8")
        n = len(data)
        # Parts as a linked list of byte offsets: end_of[start] is the end of the part starting at
        # start (-1 where no part starts), start_before[start] the start of the part before it.
        end_of = list(range(1, n + 1))
        start_before = list(range(-1, n - 1))
        heap: list[tuple[int, int, int, int]] = []  # (rank, start, middle, end) of adjacent pairs

        def push(start: int, middle: int) -> None:
            if start >= 0 and middle < n:
                end = end_of[middle]
                rank = self._ranks.get(data[start:end])
                if rank is not None:
                    heapq.heappush(heap, (rank, start, middle, end))

        for start in range(n - 1):
            push(start, start + 1)
        merges = []
        while heap:
            _, start, middle, end = heapq.heappop(heap)
            if end_of[start] != middle or end_of[middle] != end:
                continue  # a pair one of whose parts has merged since
            end_of[start], end_of[middle] = end, -1
            if end < n:
                start_before[end] = start
            merges.append((start, middle, end))
            push(start_before[start], start)
            push(start, end)
        final, start = [], 0
        while start < n:
            final.append(start)
            start = end_of[start]
        return MergeReplay(data, tuple(merges), (*final, n))

    def merge_steps(self, chunk: str) -> list[list[bytes]]:
        """The parts after each step of ``merge_replay``: first the bytes, last the final tokens
        (every step of a chunk of n bytes: O(n^2); the Tokenize tab draws a bounded few)."""
        replay = self.merge_replay(chunk)
        return [replay.parts(replay.boundaries(step)) for step in range(replay.steps + 1)]

    def rank(self, part: bytes) -> int | None:
        """The id of a byte string that is itself a token, else None."""
        return self._ranks.get(part)


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (possible in a Python str, e.g. from a browser's broken paste
    or a hand-written JSON ``\\ud800``), which cannot be encoded as UTF-8, replaced by '?'."""
    return text.encode("utf-8", errors="replace").decode("utf-8") if _has_surrogates(text) else text


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
