"""Tekken tokenizer (decode only) and a tekken.json writer for synthetic checkpoints.

We only ever *decode*: the model emits token ids and we turn them into text, so no BPE encoder or regex is
built here (loading the real 19 MB tekken.json stays well under a second).

Decoding is byte/char-exact with mistral-common's ``MistralTokenizer.decode`` under its default policy
(``SpecialTokenPolicy.IGNORE``):

* ids below ``num_special_tokens`` are special and are dropped;
* each maximal *run* of regular ids between special ids is decoded on its own: the raw bytes of the run are
  joined and decoded as UTF-8 with invalid/incomplete sequences replaced by U+FFFD (``errors="replace"``);
* the decoded runs are concatenated. Nothing is stripped (no leading-space removal, no clean-up).

So a multi-byte character split by e.g. ``[STREAMING_WORD]`` becomes U+FFFD characters, exactly as in the
reference (docs/model.md, "Text decoding"). `TextStream` gives the same text incrementally.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable

from .config import AudioArgs, ConfigError, read_json_object

__all__ = ["TokenizerError", "Tekken", "TextStream", "write_tekken_json", "mistral_common_vocab_path"]


class TokenizerError(ConfigError):
    """tekken.json is missing, unreadable, or malformed (a ValueError, like every ConfigError)."""


# Names resolved at load time (never hard-coded ids).
BOS = "<s>"
EOS = "</s>"
STREAMING_PAD = "[STREAMING_PAD]"
STREAMING_WORD = "[STREAMING_WORD]"
_REQUIRED_SPECIALS = (BOS, EOS, STREAMING_PAD, STREAMING_WORD)

# mistral-common's name for special ranks a file does not list.
_FILLER = "<SPECIAL_{}>"


class Tekken:
    """Decode-only view of a tekken.json. Special id = special rank; regular id = BPE rank + num_special."""

    def __init__(
        self,
        *,
        special_names: list[str],
        token_bytes: list[bytes],
        audio: AudioArgs,
        version: str,
        path: str = "<memory>",
    ) -> None:
        self.path = path
        self.version = version
        self.num_special_tokens: int = len(special_names)
        self.vocab_size: int = len(special_names) + len(token_bytes)
        self.audio = audio
        self._special_names = special_names
        self._special_ids = {name: i for i, name in enumerate(special_names)}
        self._bytes = token_bytes
        for name in _REQUIRED_SPECIALS:
            if name not in self._special_ids:
                raise TokenizerError(f"{path}: special token {name!r} is missing from 'special_tokens'")
        self.bos_id: int = self._special_ids[BOS]
        self.eos_id: int = self._special_ids[EOS]
        self.streaming_pad_id: int = self._special_ids[STREAMING_PAD]
        self.streaming_word_id: int = self._special_ids[STREAMING_WORD]

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | Path) -> "Tekken":
        p = Path(path)
        return cls.from_dict(read_json_object(p, TokenizerError, "a tekken.json file"), str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<tekken>") -> "Tekken":
        w = where
        cfg = data.get("config")
        if not isinstance(cfg, dict):
            raise TokenizerError(f"{w}: missing field 'config'")
        vocab_size = _int_field(cfg, "default_vocab_size", w)
        n_special = _int_field(cfg, "default_num_special_tokens", w)
        version = cfg.get("version")
        if not isinstance(version, str) or not re.fullmatch(r"v\d+", version):
            raise TokenizerError(f"{w}: field 'config.version' must be a string like 'v13', got {version!r}")
        # mistral-common only attaches an audio encoder from v7 on.
        if int(version[1:]) < 7:
            raise TokenizerError(f"{w}: field 'config.version' is {version}; audio tokenizers need >= v7")
        if vocab_size <= n_special:
            raise TokenizerError(
                f"{w}: config.default_vocab_size ({vocab_size}) must exceed default_num_special_tokens ({n_special})"
            )

        # -- special tokens: rank i at index i (mistral-common indexes the list by id); missing ranks are filled.
        specials = data.get("special_tokens")
        if not isinstance(specials, list):
            raise TokenizerError(f"{w}: missing field 'special_tokens' (a list of {{rank, token_str, is_control}})")
        if len(specials) > n_special:
            raise TokenizerError(
                f"{w}: 'special_tokens' has {len(specials)} entries, more than default_num_special_tokens={n_special}"
            )
        names: list[str] = []
        for i, t in enumerate(specials):
            if not isinstance(t, dict) or not isinstance(t.get("token_str"), str) or t.get("rank") != i:
                raise TokenizerError(f"{w}: special_tokens[{i}] must be an object with rank={i} and a string token_str")
            names.append(t["token_str"])
        names += [_FILLER.format(i) for i in range(len(names), n_special)]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise TokenizerError(f"{w}: duplicate special token names {dup}")

        # -- regular vocabulary, truncated to default_vocab_size like mistral-common.
        vocab = data.get("vocab")
        if not isinstance(vocab, list):
            raise TokenizerError(f"{w}: missing field 'vocab'")
        n_regular = vocab_size - n_special
        if len(vocab) < n_regular:
            raise TokenizerError(
                f"{w}: 'vocab' has {len(vocab)} entries but default_vocab_size - default_num_special_tokens = {n_regular}"
            )
        b64 = base64.b64decode
        try:
            token_bytes = [b64(t["token_bytes"]) for t in vocab[:n_regular]]
            ranks_ok = all(t["rank"] == i for i, t in enumerate(vocab[:n_regular]))
        except (TypeError, KeyError, ValueError) as e:
            raise TokenizerError(f"{w}: malformed 'vocab' entry ({type(e).__name__}: {e})") from None
        if not ranks_ok:
            bad = next(i for i, t in enumerate(vocab[:n_regular]) if t["rank"] != i)
            raise TokenizerError(f"{w}: vocab[{bad}] has rank {vocab[bad]['rank']}, expected {bad}")
        # mistral-common asserts the first 256 BPE tokens are the single bytes 0..255.
        for i in range(min(256, n_regular)):
            if token_bytes[i] != bytes([i]):
                raise TokenizerError(f"{w}: vocab[{i}] must be the single byte {i}")

        try:
            audio = AudioArgs.from_dict(data.get("audio"), w)
        except TokenizerError:
            raise
        except ConfigError as e:
            raise TokenizerError(str(e)) from None
        return cls(special_names=names, token_bytes=token_bytes, audio=audio, version=version, path=w)

    # ------------------------------------------------------------------ lookups

    def special_id(self, name: str) -> int:
        """Id of the special token `name` (e.g. "[AUDIO]"); KeyError if the file does not define it."""
        try:
            return self._special_ids[name]
        except KeyError:
            raise KeyError(f"{self.path}: no special token {name!r}") from None

    def special_name(self, token_id: int) -> str:
        self._check_id(token_id)
        if not self.is_special(token_id):
            raise ValueError(f"token id {token_id} is not a special token")
        return self._special_names[token_id]

    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < self.num_special_tokens

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of a regular token; b"" for special tokens (they produce no text when decoding)."""
        self._check_id(token_id)
        if token_id < self.num_special_tokens:
            return b""
        return self._bytes[token_id - self.num_special_tokens]

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} out of range [0, {self.vocab_size})")

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, exactly as mistral-common's MistralTokenizer.decode (specials ignored)."""
        ids = [int(i) for i in ids]
        for i in ids:
            self._check_id(i)
        n_special = self.num_special_tokens
        pieces: list[str] = []
        # Each run of regular ids is decoded separately (a special id ends the UTF-8 context).
        for special, run in groupby(ids, lambda t: t < n_special):
            if not special:
                raw = b"".join(self._bytes[t - n_special] for t in run)
                pieces.append(raw.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def text_stream(self) -> "TextStream":
        return TextStream(self)


class TextStream:
    """Incremental decode: ``"".join(feed(i) for i in ids) + flush() == tok.decode(ids)`` exactly.

    `feed` returns only text whose UTF-8 is complete; bytes of a character still being spelled out are held
    back. A special id ends the current run (emitting U+FFFD for any dangling partial character), matching
    `Tekken.decode`'s run-by-run semantics.
    """

    def __init__(self, tok: Tekken) -> None:
        self._tok = tok
        # CPython's incremental UTF-8 decoder with "replace" yields the same characters as a one-shot decode.
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        token_id = int(token_id)
        if self._tok.is_special(token_id):
            return self.flush()
        return self._dec.decode(self._tok.token_bytes(token_id), final=False)

    def flush(self) -> str:
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out


def _int_field(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise TokenizerError(f"{where}: field 'config.{key}' must be a positive integer, got {v!r}")
    return v


# ----------------------------------------------------------------------------- writer

# Special-token layout of the generated file. The ids of <unk>, <s>, </s>, [AUDIO], [BEGIN_AUDIO],
# [STREAMING_PAD] and [STREAMING_WORD] are those of the real Voxtral-Mini-4B-Realtime tekken.json
# (docs/model.md, "Special tokens"). The others are names mistral-common's InstructTokenizerV13 resolves at construction
# (V1: [INST] .. [SUFFIX]; V7: [SYSTEM_PROMPT], [/SYSTEM_PROMPT], [TOOL_CONTENT]; V11: [ARGS], [CALL_ID]);
# their ranks are our choice (0..19 follow mistral-common's legacy layout). Every other rank is filler.
_SPECIAL_LAYOUT: dict[int, str] = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 20: "[ARGS]", 21: "[CALL_ID]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]",
    32: "[STREAMING_PAD]", 33: "[STREAMING_WORD]",
}
_NUM_SPECIAL = 1000
_VERSION = "v13"  # what mistral-common needs for a streaming-audio tokenizer with these specials (>= v7 for audio)
_MIN_BPE = 256  # keep every single-byte token so any byte string stays representable


def mistral_common_vocab_path() -> Path:
    """The tekken vocabulary file shipped inside the mistral-common wheel."""
    import mistral_common

    p = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    if not p.is_file():
        raise TokenizerError(f"{p}: mistral-common's tekken vocabulary is missing (is mistral-common installed?)")
    return p


def write_tekken_json(path: str | Path, vocab_size: int, audio: AudioArgs) -> Path:
    """Write a tekken.json in the real on-disk format with `vocab_size` ids (1000 special + BPE tokens).

    The BPE vocabulary and regex pattern are the first ``vocab_size - 1000`` tokens of mistral-common's
    tekken_240911.json; the file loads in both `Tekken.from_file` and mistral-common's
    ``MistralTokenizer.from_file`` (name the file ``*tekken*.json`` for the latter).
    """
    src_path = mistral_common_vocab_path()
    with open(src_path, "rb") as f:
        src = json.load(f)
    n_regular = vocab_size - _NUM_SPECIAL
    if n_regular < _MIN_BPE or n_regular > len(src["vocab"]):
        raise ValueError(
            f"vocab_size must be in [{_NUM_SPECIAL + _MIN_BPE}, {_NUM_SPECIAL + len(src['vocab'])}], got {vocab_size}"
        )
    specials = [
        {"rank": i, "token_str": _SPECIAL_LAYOUT.get(i, _FILLER.format(i)), "is_control": True}
        for i in range(_NUM_SPECIAL)
    ]
    out = {
        "config": {
            "pattern": src["config"]["pattern"],
            "num_vocab_tokens": n_regular,
            "default_vocab_size": vocab_size,
            "default_num_special_tokens": _NUM_SPECIAL,
            "version": _VERSION,
        },
        "vocab": src["vocab"][:n_regular],
        "special_tokens": specials,
        "audio": audio.to_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ASCII-escaped JSON: token_str values may hold lone surrogates that raw UTF-8 output would reject.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True)
    return path
