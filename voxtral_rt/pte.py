"""The .pte contract: what export/export_voxtral_rt.py writes and the runtimes read (voxtral_rt.engine.PteEngine,
the C++ runner's runner/src/metadata.h). The methods' inputs and outputs: docs/design.md, ".pte interface"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import OFFLINE_STREAMING_BUFFER_TOKENS

if TYPE_CHECKING:
    from .model import VoxtralRealtime
    from .tokenizer import Tekken

FORMAT_VERSION = 3  # 2: attention masks are method inputs; 3: text_decoder returns the logits of every position
METHODS = ("preprocessor", "audio_encoder", "token_embedding", "text_decoder")

# Every int64 constant method a .pte carries, in the order the exporter writes them. The C++ runner reads the same
# list (VOXTRAL_RT_METADATA_KEYS in runner/src/metadata.h; tests/python/test_pte_contract.py compares the two).
# All are required: format_version is read first and gates the rest, and every file of this version has them all.
METADATA = (
    ("format_version", "layout of the methods and their inputs (FORMAT_VERSION); read first"),
    ("sample_rate", "Hz of the samples the preprocessor takes (16000)"),
    ("hop_length", "samples per mel frame (160)"),
    ("window_size", "STFT window in samples (400)"),
    ("num_mel_bins", "mel bins per frame (128)"),
    ("samples_per_token", "samples per audio token = decoder position (1280 = 80 ms)"),
    ("mel_frames_per_token", "mel frames per token (8)"),
    ("enc_frames_per_token", "encoder positions per token (4); audio_encoder's enc_pos counts these"),
    ("dim", "width of the audio and token embeddings the decoder sums (3072)"),
    ("vocab_size", "logits per position"),
    ("enc_sliding_window", "encoder attention window, in encoder positions"),
    ("dec_sliding_window", "decoder attention window, in positions"),
    ("enc_cache_slots", "encoder KV ring slots (window + longest chunk): the audio_encoder mask's most columns"),
    ("dec_cache_slots", "decoder KV ring slots (window + max_dec_tokens): the text_decoder mask's most columns"),
    ("max_mel_frames", "most mel frames per preprocessor call"),
    ("max_enc_tokens", "most tokens per audio_encoder call"),
    ("max_dec_tokens", "most positions per token_embedding / text_decoder call"),
    ("default_delay_tokens", "transcription delay when the caller asks for none (export's --delay-ms)"),
    ("left_pad_tokens", "silent tokens before the audio; the prompt is BOS + STREAMING_PAD x (left pad + delay)"),
    ("right_pad_buffer_tokens", "silent tokens past the delay + 1 at the end of a stream, so the last words come out"),
    ("bos_id", "<s>, the prompt's first token"),
    ("eos_id", "</s>, the end of the transcript"),
    ("streaming_pad_id", "[STREAMING_PAD]: no text at this position"),
    ("streaming_word_id", "[STREAMING_WORD] (special, no text); the runners check it against the tokenizer"),
    ("num_special_tokens", "ids below this are special tokens (no text)"),
    ("ms_per_token", "milliseconds per token (80)"),
)
METADATA_KEYS = tuple(key for key, _ in METADATA)


def metadata(model: VoxtralRealtime, tok: Tekken, max_enc_tokens: int, max_dec_tokens: int,
             delay_tokens: int) -> dict[str, int]:
    """The constant methods of a .pte, in METADATA order. delay_tokens: the default transcription delay
    (default_delay_tokens); the delay stays a text_decoder input, so the runner can still choose any trained one
    per session."""
    a, e, au = model.args, model.args.encoder, tok.audio
    values = {
        "format_version": FORMAT_VERSION,
        "sample_rate": e.sampling_rate,
        "hop_length": e.hop_length,
        "window_size": e.window_size,
        "num_mel_bins": e.num_mel_bins,
        "samples_per_token": e.samples_per_token,
        "mel_frames_per_token": e.mel_frames_per_token,
        "enc_frames_per_token": e.downsample_factor,
        "dim": a.dim,
        "vocab_size": a.vocab_size,
        "enc_sliding_window": e.sliding_window,
        "dec_sliding_window": a.sliding_window,
        "enc_cache_slots": model.enc_cache_slots,
        "dec_cache_slots": model.dec_cache_slots,
        "max_mel_frames": max_enc_tokens * e.mel_frames_per_token,
        "max_enc_tokens": max_enc_tokens,
        "max_dec_tokens": max_dec_tokens,
        "default_delay_tokens": delay_tokens,
        "left_pad_tokens": au.streaming_n_left_pad_tokens,
        "right_pad_buffer_tokens": OFFLINE_STREAMING_BUFFER_TOKENS,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "streaming_pad_id": tok.streaming_pad_id,
        "streaming_word_id": tok.streaming_word_id,
        "num_special_tokens": tok.num_special_tokens,
        "ms_per_token": int(round(au.ms_per_token)),
    }
    assert set(values) == set(METADATA_KEYS), set(values) ^ set(METADATA_KEYS)
    return {key: values[key] for key in METADATA_KEYS}
