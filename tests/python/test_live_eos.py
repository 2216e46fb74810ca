"""EOS in live streams: a file stops at the first EOS (transformers' generate), a live stream feeds the EOS back and
goes on (the reference realtime server's behaviour), so nothing said after it is lost. The model is the tiny random
checkpoint with its EOS row (tied embedding and head) scaled so that EOS wins mid-stream: it then emits a run of
EOS and, after it, ordinary tokens again (conftest.eos_model)."""

from __future__ import annotations

import json
import subprocess

import torch

from conftest import RUNNER_BIN as RUNNER
from voxtral_rt.checkpoint import load_model
from voxtral_rt.engine import EagerEngine, PteEngine
from voxtral_rt.protocol import transcribe


def _runner(m, *flags: str, stdin: bytes | None = None) -> dict:
    src = ["--stdin", "--stdin_format", "f32le"] if stdin is not None else ["--audio_path", str(m["wav"])]
    r = subprocess.run([str(RUNNER), "--model_path", str(m["pte"]), "--tokenizer_path", str(m["dir"] / "tekken.json"),
                        *src, "--json", *flags], input=stdin, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


def test_live_stream_goes_on_after_eos(eos_model):
    m, tok = eos_model, eos_model["tok"]
    model, _ = load_model(m["dir"], dtype=torch.float32)
    eager = EagerEngine(model.eval(), max_enc_tokens=8, max_dec_tokens=16)
    stop = transcribe(eager, tok, m["audio"], draft_tokens=0)
    live = transcribe(eager, tok, m["audio"], draft_tokens=0, stop_at_eos=False)
    # The file transcript ends at the first EOS; the live one is the same up to there and goes on to the end.
    first = live["token_ids"].index(tok.eos_id)
    assert 0 < first < 20 and stop["token_ids"] == live["token_ids"][: first + 1] and stop["eos"]
    assert len(live["token_ids"]) == live["n_audio_tokens"] - (32 + 6 + 1)  # the generate length
    after = [t for t in live["token_ids"][first:] if t != tok.eos_id and t >= tok.num_special_tokens]
    assert len(after) > 10 and len(live["text"]) > len(stop["text"])  # text after the EOS is not lost
    # The .pte, every draft setting, any chunking: the same.
    pte = PteEngine(m["pte"])
    for draft, chunk in ((0, 0), (-1, 1280), (5, 999)):
        assert transcribe(pte, tok, m["audio"], draft_tokens=draft, chunk_samples=chunk,
                          stop_at_eos=False)["token_ids"] == live["token_ids"]
        assert transcribe(pte, tok, m["audio"], draft_tokens=draft, chunk_samples=chunk)["token_ids"] == stop["token_ids"]
    # The runner: files stop at EOS by default, --stdin goes on by default; both follow --stop_at_eos.
    pcm = m["audio"].astype("<f4").tobytes()
    assert _runner(m)["token_ids"] == stop["token_ids"]
    got = _runner(m, stdin=pcm)
    assert got["token_ids"] == live["token_ids"] and got["text"] == live["text"]
    assert _runner(m, "--stop_at_eos=false", "--streaming", "--chunk_ms", "80")["token_ids"] == live["token_ids"]
    assert _runner(m, "--stop_at_eos=true", stdin=pcm)["token_ids"] == stop["token_ids"]
