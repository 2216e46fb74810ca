"""bench/bench_live.py end to end on the tiny .pte (paced live, backlog, offline, A/B), and its draft ceiling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_live.py"
sys.path.insert(0, str(ROOT / "bench"))


def test_pad_draft_tokens_per_call():
    from bench_live import pad_draft_tokens_per_call

    pad = np.array([1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1], bool)
    assert pad_draft_tokens_per_call(pad, 1) == 1.0
    # k=4: [P P P 0]... calls cover 4 (PPP + 0), then P,0 (2), then 0 (1), then PPP+P (4), then P (1): 12 / 5
    assert pad_draft_tokens_per_call(pad, 4) == 12 / 5
    assert pad_draft_tokens_per_call(np.zeros(5, bool), 8) == 1.0


def test_bench_live_tiny(tiny):
    r = subprocess.run([sys.executable, str(BENCH), "--pte", str(tiny["q"]), "--tokenizer", str(tiny["dir"] / "tekken.json"),
                        "--audio-s", "3", "--pace", "2", "--baseline-pte", str(tiny["fp32"])],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    j = json.loads(r.stdout)
    assert j["machine"]["read_gbs"] > 0
    for side in ("ours", "baseline"):
        s = j[side]
        assert s["tokens_identical"]  # live, backlog and offline give the same tokens
        live = s["live"]
        for k in ("lag_p50_ms", "lag_p95_ms", "lag_max_ms", "drift_ms_per_audio_s", "end_lag_ms", "pad_share",
                  "decoder_ms_per_token", "tokens_per_decoder_call", "n_encoder_calls"):
            assert set(live[k]) == {"min", "median"}, k
        # A token needs its audio up to delay + 2.5 ms past its time: at least the delay in audio time.
        assert live["lag_p50_ms"]["min"] * 2 >= 480 - 1
        assert s["backlog"]["throughput_audio_s_per_s"]["median"] > 0 and s["offline"]["rtf"]["median"] > 0
    assert "backlog" in j["baseline_over_ours"]
