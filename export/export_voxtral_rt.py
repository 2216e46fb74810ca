"""Export Voxtral Realtime to ONE ExecuTorch .pte for XNNPACK (CPU).

Methods (shapes for the real model; all sizes also in the constant methods below):
  preprocessor     f32 [hop*n + win - hop] stream samples   -> f32 [1, 128, n]     log-mel frames, 1 <= n <= max_mel_frames
  audio_encoder    f32 [1, 128, 8k] mel, int64 [1] enc_pos, f32 [4k, L] mask
                                                            -> f32 [1, k, 3072]    audio embeddings, 1 <= k <= max_enc_tokens
  token_embedding  int64 [1, S]                             -> f32 [1, S, 3072]    1 <= S <= max_dec_tokens
  text_decoder     f32 [1, S, 3072], int64 [1] pos, int64 [1] delay_tokens, f32 [S, L] mask
                                                            -> f32 [1, S, vocab] logits of every position (the
                                                               runner verifies guessed positions with them)
The masks are additive (0 / -inf) over the first L = min(end, cache_slots) ring slots (voxtral_rt.model.ring_mask;
the runner computes them). Taking them as inputs makes every attention size an input size, so XNNPACK runs
the attention matmuls and softmax, and attention work follows the valid length, not the capacity.
Conv state and the encoder/decoder KV rings are mutable buffers shared by the methods; position 0 starts a
new stream. Only ops present in the executorch pip wheel's C++ runtime are used (no llama:: custom ops).

Usage:
  python export/export_voxtral_rt.py --model-path DIR --output model.pte \
      --qlinear 8da4w --qlinear-encoder 8da4w --qembedding 8w
See docs/design.md for the protocol the runner follows.
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from pathlib import Path

# The command line only: the steps are voxtral_rt/export/ (one module a job), the file's layout voxtral_rt/pte.py.
# The repository root goes on the path, so that the script runs from a checkout without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxtral_rt.checkpoint import CheckpointError  # noqa: E402
from voxtral_rt.config import ConfigError  # noqa: E402
from voxtral_rt.export.lower import export_programs, lower  # noqa: E402
from voxtral_rt.export.memory import log, peak_rss_gb, return_freed_memory_to_os, wall_s  # noqa: E402
from voxtral_rt.export.prepare import KV_DTYPES, prepare_model  # noqa: E402
from voxtral_rt.export.quantize import QEMBEDDING, QLINEAR, WEIGHT_ONLY_LINEAR_NOTE  # noqa: E402
from voxtral_rt.export.toolchain import check_versions  # noqa: E402
from voxtral_rt.pte import metadata  # noqa: E402
from voxtral_rt.tokenizer import Tekken  # noqa: E402


def _quiet_known_noise() -> None:
    """Keep the progress lines readable: these messages are known and harmless here (40 of 65 lines before)."""
    from voxtral_rt import quiet_known_noise

    quiet_known_noise()
    # By design: the caches' initial values are never read (stale ring slots are masked, and the runtime zero-fills
    # its planned memory), so they are not stored in the .pte.
    warnings.filterwarnings("ignore", message=r"Mutation on a buffer in the model is detected")


def default_delay_tokens(tok: Tekken, delay_ms: float | None, delay_tokens: int | None) -> int:
    """The delay the .pte carries as its default, checked against the delays the model was trained for."""
    au = tok.audio
    if delay_tokens is not None:
        delay_ms = delay_tokens * au.ms_per_token
    n = au.default_delay_tokens if delay_ms is None else au.delay_tokens(delay_ms)
    log(f"default transcription delay {n} tokens = {n * au.ms_per_token:g} ms")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="checkpoint dir (params.json + consolidated.safetensors, or HF config.json + model.safetensors)")
    p.add_argument("--tokenizer", help="tekken.json (default: MODEL_PATH/tekken.json)")
    p.add_argument("--output", required=True, help="output .pte path")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="activation / float weight dtype (default fp32)")
    p.add_argument("--qlinear", choices=QLINEAR, default="none", help="decoder linears + LM head (default none)")
    p.add_argument("--qlinear-encoder", choices=QLINEAR, default="none", help="encoder + adapter linears (default none)")
    p.add_argument("--qlinear-group-size", type=int, default=32, help="group size for 4-bit linears (default 32)")
    p.add_argument("--qlinear-encoder-group-size", type=int, default=None,
                   help="group size for 4-bit encoder + adapter linears (default: --qlinear-group-size)")
    p.add_argument("--qembedding", choices=QEMBEDDING, default="none", help="token embedding (default none)")
    p.add_argument("--qembedding-group-size", type=int, default=32, help="group size for 4w embedding (default 32)")
    p.add_argument("--kv-dtype", choices=list(KV_DTYPES), default=None,
                   help="K/V cache dtype (default: fp16 with --dtype fp32, else the model dtype). fp16 halves the "
                        "cache memory and the bytes attention reads per step; the matmuls run in fp16, the "
                        "softmax in fp32 (docs/design.md, \"fp16 K/V caches\")")
    p.add_argument("--max-enc-tokens", type=int, default=16,
                   help="audio tokens (80 ms each) per audio_encoder call; bigger amortizes weight reads (default 16)")
    p.add_argument("--max-dec-tokens", type=int, default=64, help="positions per text_decoder call (prompt prefill; default 64)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--delay-ms", type=float, default=None,
                   help="default transcription delay the .pte carries: a multiple of 80 ms in 80..1200, or 2400 "
                        "(default: tekken.json's transcription_delay_ms, 480 for the real model). The delay is a "
                        "text_decoder input, so runners can still pick another per session")
    d.add_argument("--delay-tokens", type=int, default=None, help="the same in tokens (80 ms each), as upstream's flag")
    p.add_argument("--sliding-window", type=int, default=0,
                   help="decoder attention window in positions (default: the trained one from params.json, 8192 = "
                        "11 min). Smaller bounds the KV cache and the attention work per step after that much "
                        "audio, at the cost of context the model was trained with")
    a = p.parse_args(argv)
    if a.qlinear_encoder_group_size is None:
        a.qlinear_encoder_group_size = a.qlinear_group_size
    if min(a.qlinear_group_size, a.qlinear_encoder_group_size, a.qembedding_group_size) <= 0:
        p.error("group sizes must be > 0")
    for flag, kind, gs in (("--qlinear-group-size", a.qlinear, a.qlinear_group_size),
                           ("--qlinear-encoder-group-size", a.qlinear_encoder, a.qlinear_encoder_group_size)):
        if kind == "8da4w" and gs % 32:  # XNNPACK's 4-bit kernels (ExecuTorch 1.5.1 asserts this while lowering)
            p.error(f"{flag} {gs}: 8da4w on XNNPACK needs a multiple of 32")
    if not 1 <= a.max_enc_tokens <= 256:
        p.error("--max-enc-tokens must be in 1..256")
    if not 1 <= a.max_dec_tokens <= 1024:
        p.error("--max-dec-tokens must be in 1..1024")
    if a.sliding_window < 0:
        p.error("--sliding-window must be > 0 (or 0 for the model's own)")
    for what, kind in (("--qlinear", a.qlinear), ("--qlinear-encoder", a.qlinear_encoder)):
        if kind in ("4w", "8w"):
            print("warning: " + WEIGHT_ONLY_LINEAR_NOTE.format(what=what, kind=kind, bits=kind[0]), file=sys.stderr)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return_freed_memory_to_os()
    _quiet_known_noise()
    check_versions()  # the toolchain workarounds patch internals of pinned versions
    try:
        tok = Tekken.from_file(a.tokenizer or Path(a.model_path) / "tekken.json")
        delay_tokens = default_delay_tokens(tok, a.delay_ms, a.delay_tokens)  # before minutes of loading
        model = prepare_model(a.model_path, a.dtype, a.qlinear, a.qlinear_encoder, a.qlinear_group_size,
                              a.qembedding, a.qembedding_group_size, a.max_enc_tokens, a.max_dec_tokens,
                              a.sliding_window, a.qlinear_encoder_group_size, a.kv_dtype)
        if tok.vocab_size != model.args.vocab_size:
            raise ConfigError(f"tokenizer vocab size {tok.vocab_size} != model vocab size {model.args.vocab_size}")
        tok.audio.check_matches(model.args.encoder, "tokenizer")
        meta = metadata(model, tok, a.max_enc_tokens, a.max_dec_tokens, delay_tokens)
        progs = export_programs(model, a.max_enc_tokens, a.max_dec_tokens)
        del model
        gc.collect()
        et = lower(progs, meta)
        log(f"writing {a.output}")
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        with open(a.output, "wb") as f:
            et.write_to_file(f)
    except (ConfigError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = Path(a.output).stat().st_size
    log(f"done: {a.output} {size / 2**20:.1f} MiB, wall {wall_s():.0f} s, peak RSS {peak_rss_gb():.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
