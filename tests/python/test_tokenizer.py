"""Tekken decode vs mistral-common, TextStream, write_tekken_json validity, and bad-file errors."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral_rt.config import REAL_AUDIO
from voxtral_rt.tokenizer import Tekken, TokenizerError, write_tekken_json

REAL_IDS = {
    "<unk>": 0, "<s>": 1, "</s>": 2, "[AUDIO]": 24, "[BEGIN_AUDIO]": 25, "[STREAMING_PAD]": 32, "[STREAMING_WORD]": 33,
}
TEXT = "Hello wörld — naïve café 日本語のテキスト 🙂👍🏽 Ελληνικά русский עברית\n\ttabs  and  spaces"


@pytest.fixture(scope="module", params=[3000, 131072])
def pair(request, tmp_path_factory):
    """(our Tekken, mistral-common MistralTokenizer) for the same generated file."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = tmp_path_factory.mktemp(f"tok{request.param}") / "tekken.json"
    write_tekken_json(path, request.param, REAL_AUDIO)
    t0 = time.perf_counter()
    ours = Tekken.from_file(path)
    load_s = time.perf_counter() - t0
    return ours, MistralTokenizer.from_file(str(path)), load_s


def test_header_and_specials(pair) -> None:
    ours, mt, load_s = pair
    inner = mt.instruct_tokenizer.tokenizer
    assert ours.vocab_size == inner.n_words
    assert ours.num_special_tokens == inner.num_special_tokens == 1000
    for name, rid in REAL_IDS.items():
        assert ours.special_id(name) == inner.get_special_token(name) == rid
    assert (ours.bos_id, ours.eos_id, ours.streaming_pad_id, ours.streaming_word_id) == (1, 2, 32, 33)
    assert ours.audio == REAL_AUDIO
    assert ours.version == "v13"
    assert load_s < 1.0, load_s


def test_token_bytes(pair) -> None:
    ours, mt, _ = pair
    inner = mt.instruct_tokenizer.tokenizer
    rng = random.Random(0)
    for i in [0, 1, 33, 999, 1000, 1255, 1256, ours.vocab_size - 1] + rng.sample(range(ours.vocab_size), 300):
        assert ours.token_bytes(i) == inner.id_to_byte_piece(i), i
        assert ours.is_special(i) == (i < 1000) == inner.is_special(i)
    with pytest.raises(ValueError):
        ours.token_bytes(ours.vocab_size)
    with pytest.raises(ValueError):
        ours.decode([1, -5])


def _random_sequences(ours: Tekken, mt, n: int, seed: int) -> list[list[int]]:
    inner = mt.instruct_tokenizer.tokenizer
    text_ids = inner.encode(TEXT, bos=False, eos=False)
    rng = random.Random(seed)
    specials = [1, 2, 32, 33, 32, 33, 0, 24, 25, 999, 500]
    high_bytes = [1000 + b for b in range(0x80, 0x100)]  # continuation / lead bytes: split characters
    seqs = []
    for _ in range(n):
        seq: list[int] = []
        for _ in range(rng.randint(0, 30)):
            r = rng.random()
            if r < 0.2:
                seq.append(rng.choice(specials))
            elif r < 0.45:
                seq.append(rng.choice(high_bytes))
            elif r < 0.6:
                seq.append(rng.randrange(1000, ours.vocab_size))
            else:  # a slice of real multilingual text, so characters are split at token boundaries
                k = rng.randrange(len(text_ids))
                seq.extend(text_ids[k : k + rng.randint(1, 6)])
        seqs.append(seq)
    # Hand-made: a 3-byte char split by [STREAMING_WORD] (reference gives U+FFFD pieces, not the char).
    euro = [1000 + b for b in "€".encode()]
    seqs += [euro, [euro[0], 33, euro[1], euro[2]], [32, *euro[:2]], [*text_ids, 2], [], [1, 32, 33, 2]]
    return seqs


def test_decode_matches_mistral_common(pair) -> None:
    ours, mt, _ = pair
    for seq in _random_sequences(ours, mt, 400, seed=1):
        ref = mt.decode(seq)
        assert ours.decode(seq) == ref, seq
        # TextStream: concatenated pieces == decode, and only complete characters are emitted.
        ts = ours.text_stream()
        parts = [ts.feed(i) for i in seq] + [ts.flush()]
        assert "".join(parts) == ref, seq
    euro = [1000 + b for b in "€".encode()]
    assert ours.decode([euro[0], 33, euro[1], euro[2]]) == "\ufffd\ufffd\ufffd"  # not "€"
    assert ours.decode(euro) == "€"


def test_no_strip(pair) -> None:
    ours, mt, _ = pair
    ids = mt.instruct_tokenizer.tokenizer.encode("  leading spaces and trailing  ", bos=True, eos=True)
    assert ours.decode(ids) == mt.decode(ids) == "  leading spaces and trailing  "


def test_text_stream_holds_partial_utf8(pair) -> None:
    ours, _, _ = pair
    ts = ours.text_stream()
    b = "日".encode()
    assert ts.feed(1000 + b[0]) == ""
    assert ts.feed(1000 + b[1]) == ""
    assert ts.feed(1000 + b[2]) == "日"
    assert ts.feed(1000 + b[0]) == ""
    assert ts.feed(ours.streaming_word_id) == "\ufffd"  # a special ends the run, like decode
    assert ts.flush() == ""


def test_text_stream_fuzz_bytes(pair) -> None:
    ours, _, _ = pair
    rng = random.Random(5)
    for _ in range(1500):
        seq = [rng.choice([33, 1000 + rng.randrange(256), 1000 + rng.randrange(0x80, 0x100)]) for _ in range(12)]
        ts = ours.text_stream()
        assert "".join(ts.feed(i) for i in seq) + ts.flush() == ours.decode(seq)


def _wav_bytes(seconds: float) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.sin(2 * np.pi * 300 * np.arange(int(16000 * seconds)) / 16000)
    sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_generated_file_supports_streaming_transcription(pair) -> None:
    from mistral_common.protocol.transcription.request import StreamingMode, TranscriptionRequest

    ours, mt, _ = pair
    tok = mt.encode_transcription(TranscriptionRequest(audio=_wav_bytes(1.0), streaming=StreamingMode.OFFLINE))
    n_delay = REAL_AUDIO.default_delay_tokens
    assert tok.tokens == [ours.bos_id] + [ours.streaming_pad_id] * (REAL_AUDIO.streaming_n_left_pad_tokens + n_delay)
    assert len(tok.audios) == 1
    # 16000 samples -> 32 left tokens + ceil(16000/1280) + n_delay + 11 right tokens.
    assert tok.audios[0].audio_array.shape[0] == (32 + 13 + n_delay + 11) * 1280


def test_small_vocab_1300(tmp_path: Path) -> None:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = write_tekken_json(tmp_path / "tekken.json", 1300, REAL_AUDIO)
    ours = Tekken.from_file(path)
    mt = MistralTokenizer.from_file(str(path))
    assert ours.vocab_size == mt.instruct_tokenizer.tokenizer.n_words == 1300
    ids = mt.instruct_tokenizer.tokenizer.encode(TEXT, bos=True, eos=True)
    assert max(ids) < 1300 and ours.decode(ids) == mt.decode(ids) == TEXT
    with pytest.raises(ValueError, match="vocab_size"):
        write_tekken_json(tmp_path / "t2.json", 1255, REAL_AUDIO)


# ----------------------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def small_doc(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("small") / "tekken.json"
    write_tekken_json(path, 1300, REAL_AUDIO)
    return json.loads(path.read_text())


def _write(tmp_path: Path, doc) -> Path:
    p = tmp_path / "tekken.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def _expect(path: Path, match: str) -> None:
    with pytest.raises(TokenizerError, match=match) as e:
        Tekken.from_file(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "tekken.json", "not found")


def test_bad_json(tmp_path: Path) -> None:
    _expect(_write(tmp_path, "{not json"), "not valid JSON")
    _expect(_write(tmp_path, "[1, 2]"), "JSON object")


def test_missing_special(tmp_path: Path, small_doc: dict) -> None:
    doc = json.loads(json.dumps(small_doc))
    doc["special_tokens"][33]["token_str"] = "[SOMETHING_ELSE]"
    _expect(_write(tmp_path, doc), r"\[STREAMING_WORD\]")
    del doc["special_tokens"]
    _expect(_write(tmp_path, doc), "special_tokens")


def test_missing_audio(tmp_path: Path, small_doc: dict) -> None:
    doc = dict(small_doc)
    del doc["audio"]
    _expect(_write(tmp_path, doc), "audio")
    doc["audio"] = dict(small_doc["audio"], transcription_delay_ms=100)
    _expect(_write(tmp_path, doc), "transcription_delay_ms")


def test_bad_config(tmp_path: Path, small_doc: dict) -> None:
    doc = dict(small_doc, config=dict(small_doc["config"], version="v3"))
    _expect(_write(tmp_path, doc), "v7")
    doc = dict(small_doc, config=dict(small_doc["config"], default_vocab_size=5000))
    _expect(_write(tmp_path, doc), "'vocab' has")
    doc = dict(small_doc)
    del doc["config"]
    _expect(_write(tmp_path, doc), "config")
    doc = dict(small_doc, config=dict(small_doc["config"], default_num_special_tokens="many"))
    _expect(_write(tmp_path, doc), "default_num_special_tokens")


def test_bad_vocab(tmp_path: Path, small_doc: dict) -> None:
    doc = json.loads(json.dumps(small_doc))
    doc["vocab"][10]["rank"] = 11
    _expect(_write(tmp_path, doc), "rank")
    doc = json.loads(json.dumps(small_doc))
    doc["special_tokens"][5]["token_str"] = "<s>"
    _expect(_write(tmp_path, doc), "duplicate")
