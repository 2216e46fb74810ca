"""Model and audio configuration, read from the files a checkpoint ships.

Three sources, each parsed in one place:
  * params.json (Mistral-native)      -> ModelArgs.from_params_json
  * config.json (+ preprocessor_config.json) (Hugging Face) -> ModelArgs.from_hf_config
  * tekken.json `audio` section        -> AudioArgs.from_tekken_json

Every missing or invalid value raises ConfigError naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file is missing, unreadable, or has a missing/invalid field."""


# Sentinel: a field that has no default and must be present.
_REQUIRED = object()


def read_json_object(path: Path, error: type[ConfigError] = ConfigError, expected: str = "a JSON file") -> dict:
    """The JSON object in `path`; every failure is one `error` naming the file (`expected`: what a directory
    given instead should have been)."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected {expected}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object at top level")
    return data


def _section(d: dict, key: str, where: str, name: str | None = None, hint: str = "") -> dict:
    """d[key], which must be a JSON object; `name` is the field as the error names it (default: key)."""
    v = d.get(key)
    if not isinstance(v, dict):
        raise ConfigError(f"{where}: missing field '{name or key}'{hint}")
    return v


def _get(d: dict, key: str, kind: type, where: str, default: Any = _REQUIRED, positive: bool = False) -> Any:
    """Fetch d[key] as `kind`, with one clear error naming file and field."""
    if key not in d or d[key] is None:
        if default is _REQUIRED:
            raise ConfigError(f"{where}: missing field '{key}'")
        return default
    v = d[key]
    try:
        if kind is bool:
            if not isinstance(v, bool):
                raise TypeError
        elif kind is int:
            # params.json sometimes stores ints as strings (e.g. sliding_window); floats must be integral.
            if isinstance(v, bool):
                raise TypeError
            if isinstance(v, str):
                v = int(v)
            elif isinstance(v, float):
                if not v.is_integer():
                    raise TypeError
                v = int(v)
            elif not isinstance(v, int):
                raise TypeError
        elif kind is float:
            if isinstance(v, bool):
                raise TypeError
            v = float(v)
            if not math.isfinite(v):
                raise TypeError
        elif kind is str:
            if not isinstance(v, str):
                raise TypeError
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: field '{key}' must be {kind.__name__}, got {d[key]!r}") from None
    if positive and v <= 0:
        raise ConfigError(f"{where}: field '{key}' must be > 0, got {v!r}")
    return v


def _mel_front_end(rates: dict, wr: str, mel: dict, wm: str) -> dict[str, Any]:
    """The mel front-end fields EncoderArgs and AudioArgs share: the rates from `rates`, the STFT and mel sizes from
    `mel` (params.json keeps all five in one section, tekken.json in two)."""
    return dict(
        sampling_rate=_get(rates, "sampling_rate", int, wr, positive=True),
        frame_rate=_get(rates, "frame_rate", float, wr, positive=True),
        num_mel_bins=_get(mel, "num_mel_bins", int, wm, positive=True),
        hop_length=_get(mel, "hop_length", int, wm, positive=True),
        window_size=_get(mel, "window_size", int, wm, positive=True),
    )


def _native_transformer(d: dict, where: str) -> dict[str, Any]:
    """The fields a params.json transformer section (the decoder at the top level, the encoder's encoder_args)
    has under the same names in both."""
    kinds = {"dim": int, "n_layers": int, "head_dim": int, "hidden_dim": int, "rope_theta": float, "norm_eps": float,
             "sliding_window": int}
    return {name: _get(d, name, kind, where, positive=True) for name, kind in kinds.items()}


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class EncoderArgs:
    """Causal Whisper-style audio encoder + the mel front-end it was trained with."""

    dim: int
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_dim: int
    rope_theta: float
    norm_eps: float
    sliding_window: int  # encoder frames (50 Hz); query i sees keys i-W+1..i
    use_biases: bool  # True: wq, wv, wo, w2 carry biases (wk, w1, w3 never do)
    # mel front-end (audio_encoding_args)
    num_mel_bins: int
    sampling_rate: int
    hop_length: int
    window_size: int  # = n_fft = win_length
    frame_rate: float  # decoder tokens per second
    global_log_mel_max: float  # log-mel floor is global_log_mel_max - 8
    downsample_factor: int  # encoder frames concatenated per decoder token

    @property
    def samples_per_token(self) -> int:
        return int(round(self.sampling_rate / self.frame_rate))

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length

    def validate(self, where: str) -> None:
        spt = self.sampling_rate / self.frame_rate
        if abs(spt - round(spt)) > 1e-9:
            raise ConfigError(f"{where}: sampling_rate/frame_rate = {spt} is not a whole number of samples")
        if self.samples_per_token % self.hop_length:
            raise ConfigError(f"{where}: samples per token {self.samples_per_token} is not a multiple of hop_length")
        # conv2 has stride 2: mel frames per token = 2 * encoder frames per token = 2 * downsample_factor.
        if self.mel_frames_per_token != 2 * self.downsample_factor:
            raise ConfigError(
                f"{where}: mel frames per token ({self.mel_frames_per_token}) must be 2 x downsample_factor "
                f"({self.downsample_factor})"
            )
        if self.window_size % 2:
            raise ConfigError(f"{where}: window_size must be even, got {self.window_size}")
        if self.head_dim % 2:
            raise ConfigError(f"{where}: encoder head_dim must be even for RoPE, got {self.head_dim}")


@dataclass(frozen=True)
class ModelArgs:
    """The text decoder (top level of params.json) plus the encoder."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    rope_theta: float
    norm_eps: float
    sliding_window: int  # decoder tokens
    ada_t_cond_dim: int  # bottleneck of the delay-conditioning MLP
    encoder: EncoderArgs

    def validate(self, where: str) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{where}: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"{where}: head_dim must be even for RoPE, got {self.head_dim}")
        if self.dim % 2:
            raise ConfigError(f"{where}: dim must be even (sinusoidal delay embedding), got {self.dim}")
        self.encoder.validate(where)

    # ---- Mistral-native params.json

    @classmethod
    def from_params_json(cls, path: str | Path) -> "ModelArgs":
        path = Path(path)
        p = read_json_object(path)
        w = str(path)
        if not _get(p, "ada_rms_norm_t_cond", bool, w, default=True):
            raise ConfigError(f"{w}: field 'ada_rms_norm_t_cond' is false; only delay-conditioned (realtime) models are supported")
        if _get(p, "use_biases", bool, w, default=False):
            raise ConfigError(f"{w}: field 'use_biases' is true; the realtime text decoder has no biases")
        if not _get(p, "tied_embeddings", bool, w, default=True):
            raise ConfigError(f"{w}: field 'tied_embeddings' is false; only tied embeddings are supported")
        mm = _section(p, "multimodal", w, hint=" (not an audio model?)")
        wm = _section(mm, "whisper_model_args", w, "multimodal.whisper_model_args")
        e = _section(wm, "encoder_args", w, "multimodal.whisper_model_args.encoder_args")
        we = w + " [multimodal.whisper_model_args.encoder_args]"
        a = _section(e, "audio_encoding_args", we)
        wa = we + "[audio_encoding_args]"
        ds = _section(wm, "downsample_args", w, "multimodal.whisper_model_args.downsample_args")
        enc_heads = _get(e, "n_heads", int, we, positive=True)
        if _get(e, "n_kv_heads", int, we, default=enc_heads) != enc_heads:
            raise ConfigError(f"{we}: field 'n_kv_heads' must equal n_heads (the encoder has no GQA)")
        if not _get(e, "causal", bool, we, default=True):
            raise ConfigError(f"{we}: field 'causal' is false; only the causal (realtime) encoder is supported")
        enc = EncoderArgs(
            **_native_transformer(e, we),
            n_heads=enc_heads,
            use_biases=_get(e, "use_biases", bool, we, default=True),
            **_mel_front_end(a, wa, a, wa),
            global_log_mel_max=_get(a, "global_log_mel_max", float, wa),
            downsample_factor=_get(ds, "downsample_factor", int, w + " [downsample_args]", positive=True),
        )
        args = cls(
            **_native_transformer(p, w),
            n_heads=_get(p, "n_heads", int, w, positive=True),
            n_kv_heads=_get(p, "n_kv_heads", int, w, positive=True),
            vocab_size=_get(p, "vocab_size", int, w, positive=True),
            ada_t_cond_dim=_get(p, "ada_rms_norm_t_cond_dim", int, w, positive=True),
            encoder=enc,
        )
        args.validate(w)
        return args

    def to_params_json(self) -> dict:
        """The params.json dict a Mistral-native checkpoint of this shape carries."""
        e = self.encoder
        return {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "head_dim": self.head_dim,
            "hidden_dim": self.hidden_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "rope_theta": self.rope_theta,
            "norm_eps": self.norm_eps,
            "vocab_size": self.vocab_size,
            "tied_embeddings": True,
            "sliding_window": self.sliding_window,
            "model_max_length": 131072,
            "use_biases": False,
            "causal": True,
            "model_parallel": 1,
            "ada_rms_norm_t_cond": True,
            "ada_rms_norm_t_cond_dim": self.ada_t_cond_dim,
            "multimodal": {
                "whisper_model_args": {
                    "encoder_args": {
                        "audio_encoding_args": {
                            "sampling_rate": e.sampling_rate,
                            "frame_rate": e.frame_rate,
                            "num_mel_bins": e.num_mel_bins,
                            "hop_length": e.hop_length,
                            "window_size": e.window_size,
                            "chunk_length_s": None,
                            "global_log_mel_max": e.global_log_mel_max,
                            "transcription_format": "streaming",
                        },
                        "dim": e.dim,
                        "n_layers": e.n_layers,
                        "head_dim": e.head_dim,
                        "hidden_dim": e.hidden_dim,
                        "n_heads": e.n_heads,
                        "n_kv_heads": e.n_heads,
                        "use_biases": e.use_biases,
                        "rope_theta": e.rope_theta,
                        "causal": True,
                        "norm_eps": e.norm_eps,
                        "pos_embed": "rope",
                        "max_source_positions": None,
                        "ffn_type": "swiglu",
                        "norm_type": "rms_norm",
                        "vocab_size": self.vocab_size,
                        "sliding_window": e.sliding_window,
                        "use_cache": False,
                    },
                    "downsample_args": {"downsample_factor": e.downsample_factor},
                }
            },
        }

    # ---- Hugging Face config.json (+ preprocessor_config.json for the mel settings)

    @classmethod
    def from_hf_config(cls, path: str | Path) -> "ModelArgs":
        path = Path(path)
        c = read_json_object(path)
        w = str(path)
        t = c.get("text_config")
        au = c.get("audio_config")
        if not isinstance(t, dict) or not isinstance(au, dict):
            raise ConfigError(f"{w}: missing field 'text_config' or 'audio_config' (not a VoxtralRealtime config?)")
        wt, wa = w + " [text_config]", w + " [audio_config]"

        def theta(d: dict, where: str) -> float:
            rp = d.get("rope_parameters")
            if isinstance(rp, dict) and "rope_theta" in rp:
                if rp.get("rope_type", "default") != "default":
                    raise ConfigError(f"{where}: rope_parameters.rope_type {rp.get('rope_type')!r} is not supported")
                return _get(rp, "rope_theta", float, where + "[rope_parameters]", positive=True)
            return _get(d, "rope_theta", float, where, positive=True)

        # Mel settings live in preprocessor_config.json next to config.json (transformers' feature extractor).
        pp_path = path.parent / "preprocessor_config.json"
        pp = read_json_object(pp_path) if pp_path.exists() else {}
        wp = str(pp_path)
        n_heads = _get(t, "num_attention_heads", int, wt, positive=True)
        hidden = _get(t, "hidden_size", int, wt, positive=True)
        enc_heads = _get(au, "num_attention_heads", int, wa, positive=True)
        enc_dim = _get(au, "hidden_size", int, wa, positive=True)
        downsample = _get(c, "downsample_factor", int, w, default=4, positive=True)
        mel_per_tok = _get(c, "audio_length_per_tok", int, w, default=2 * downsample, positive=True)
        sr = _get(pp, "sampling_rate", int, wp, default=16000, positive=True)
        hop = _get(pp, "hop_length", int, wp, default=160, positive=True)
        enc = EncoderArgs(
            dim=enc_dim,
            n_layers=_get(au, "num_hidden_layers", int, wa, positive=True),
            n_heads=enc_heads,
            head_dim=_get(au, "head_dim", int, wa, default=enc_dim // enc_heads, positive=True),
            hidden_dim=_get(au, "intermediate_size", int, wa, positive=True),
            rope_theta=theta(au, wa),
            norm_eps=_get(au, "rms_norm_eps", float, wa, positive=True),
            sliding_window=_get(au, "sliding_window", int, wa, positive=True),
            use_biases=True,
            num_mel_bins=_get(au, "num_mel_bins", int, wa, positive=True),
            sampling_rate=sr,
            hop_length=hop,
            window_size=_get(pp, "n_fft", int, wp, default=400, positive=True),
            frame_rate=sr / (hop * mel_per_tok),
            global_log_mel_max=_get(pp, "global_log_mel_max", float, wp, default=1.5),
            downsample_factor=downsample,
        )
        args = cls(
            dim=hidden,
            n_layers=_get(t, "num_hidden_layers", int, wt, positive=True),
            n_heads=n_heads,
            n_kv_heads=_get(t, "num_key_value_heads", int, wt, default=n_heads, positive=True),
            head_dim=_get(t, "head_dim", int, wt, default=hidden // n_heads, positive=True),
            hidden_dim=_get(t, "intermediate_size", int, wt, positive=True),
            vocab_size=_get(t, "vocab_size", int, wt, positive=True),
            rope_theta=theta(t, wt),
            norm_eps=_get(t, "rms_norm_eps", float, wt, positive=True),
            sliding_window=_get(t, "sliding_window", int, wt, positive=True),
            ada_t_cond_dim=32,  # hard-coded in transformers' VoxtralRealtimeTextAdaRmsNorm
            encoder=enc,
        )
        args.validate(w)
        return args


# ----------------------------------------------------------------------------- audio protocol

# mistral-common's OFFLINE_STREAMING_BUFFER_TOKENS: extra silence after the delay so the last words come out.
# A .pte carries it as right_pad_buffer_tokens.
OFFLINE_STREAMING_BUFFER_TOKENS = 10


def delay_tokens(delay_ms: float, ms_per_token: float) -> int:
    """Number of delay tokens for `delay_ms`; rejects delays the model was not trained for.

    Allowed: multiples of one token (80 ms) from 1 to 15 tokens (80..1200 ms), and 30 tokens (2400 ms).
    """
    step = ms_per_token
    n = delay_ms / step
    if not math.isfinite(n) or abs(n - round(n)) > 1e-6:
        raise ConfigError(f"delay {delay_ms:g} ms is not a multiple of {step:g} ms")
    n = int(round(n))
    if not (1 <= n <= 15 or n == 30):
        raise ConfigError(
            f"delay {delay_ms:g} ms is not supported: use a multiple of {step:g} ms from {step:g} to "
            f"{15 * step:g} ms, or {30 * step:g} ms"
        )
    return n


@dataclass(frozen=True)
class AudioArgs:
    """tekken.json `audio` section: the streaming transcription protocol."""

    sampling_rate: int
    frame_rate: float
    num_mel_bins: int
    hop_length: int
    window_size: int
    transcription_delay_ms: float
    streaming_look_ahead_ms: float
    streaming_look_back_ms: float
    streaming_n_left_pad_tokens: int

    @property
    def samples_per_token(self) -> int:
        return int(round(self.sampling_rate / self.frame_rate))

    @property
    def ms_per_token(self) -> float:
        return 1000.0 / self.frame_rate

    @property
    def default_delay_tokens(self) -> int:
        return self.delay_tokens(self.transcription_delay_ms)

    def delay_tokens(self, delay_ms: float) -> int:
        return delay_tokens(delay_ms, self.ms_per_token)

    @classmethod
    def from_tekken_json(cls, path: str | Path) -> "AudioArgs":
        path = Path(path)
        t = read_json_object(path)
        return cls.from_dict(t.get("audio"), str(path))

    @classmethod
    def from_dict(cls, a: Any, where: str) -> "AudioArgs":
        if not isinstance(a, dict):
            raise ConfigError(f"{where}: missing field 'audio' (this tokenizer has no audio/streaming section)")
        w = where + " [audio]"
        enc = _section(a, "audio_encoding_config", w)
        we = w + "[audio_encoding_config]"
        fmt = _get(a, "transcription_format", str, w, default="streaming")
        if fmt != "streaming":
            raise ConfigError(f"{w}: field 'transcription_format' is {fmt!r}; a realtime model needs 'streaming'")
        args = cls(
            **_mel_front_end(a, w, enc, we),
            transcription_delay_ms=_get(a, "transcription_delay_ms", float, w, positive=True),
            streaming_look_ahead_ms=_get(a, "streaming_look_ahead_ms", float, w),
            streaming_look_back_ms=_get(a, "streaming_look_back_ms", float, w),
            streaming_n_left_pad_tokens=_get(a, "streaming_n_left_pad_tokens", int, w),
        )
        if args.streaming_n_left_pad_tokens < 0:
            raise ConfigError(f"{w}: field 'streaming_n_left_pad_tokens' must be >= 0")
        spt = args.sampling_rate / args.frame_rate
        if abs(spt - round(spt)) > 1e-9 or round(spt) % args.hop_length:
            raise ConfigError(f"{w}: sampling_rate/frame_rate must be a whole multiple of hop_length")
        try:
            args.delay_tokens(args.transcription_delay_ms)
        except ConfigError as e:
            raise ConfigError(f"{w}: field 'transcription_delay_ms': {e}") from None
        return args

    def to_dict(self) -> dict:
        return {
            "sampling_rate": self.sampling_rate,
            "frame_rate": self.frame_rate,
            "audio_encoding_config": {
                "num_mel_bins": self.num_mel_bins,
                "hop_length": self.hop_length,
                "window_size": self.window_size,
            },
            "chunk_length_s": None,
            "transcription_format": "streaming",
            "transcription_delay_ms": self.transcription_delay_ms,
            "streaming_look_ahead_ms": self.streaming_look_ahead_ms,
            "streaming_look_back_ms": self.streaming_look_back_ms,
            "streaming_n_left_pad_tokens": self.streaming_n_left_pad_tokens,
        }

    def check_matches(self, enc: EncoderArgs, where: str) -> None:
        """The tokenizer's audio section must describe the same front-end as the model."""
        for name, a, b in [
            ("sampling_rate", self.sampling_rate, enc.sampling_rate),
            ("num_mel_bins", self.num_mel_bins, enc.num_mel_bins),
            ("hop_length", self.hop_length, enc.hop_length),
            ("window_size", self.window_size, enc.window_size),
            ("frame_rate", self.frame_rate, enc.frame_rate),
        ]:
            if abs(a - b) > 1e-9:
                raise ConfigError(f"{where}: audio.{name} = {a} does not match the model's {name} = {b}")


# ----------------------------------------------------------------------------- presets

# Real Voxtral-Mini-4B-Realtime-2602 shapes (docs/model.md, "Shapes").
REAL_ENCODER = EncoderArgs(
    dim=1280, n_layers=32, n_heads=32, head_dim=64, hidden_dim=5120, rope_theta=1e6, norm_eps=1e-5,
    sliding_window=750, use_biases=True, num_mel_bins=128, sampling_rate=16000, hop_length=160,
    window_size=400, frame_rate=12.5, global_log_mel_max=1.5, downsample_factor=4,
)
REAL_MODEL = ModelArgs(
    dim=3072, n_layers=26, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=9216, vocab_size=131072,
    rope_theta=1e6, norm_eps=1e-5, sliding_window=8192, ada_t_cond_dim=32, encoder=REAL_ENCODER,
)
REAL_AUDIO = AudioArgs(
    sampling_rate=16000, frame_rate=12.5, num_mel_bins=128, hop_length=160, window_size=400,
    transcription_delay_ms=480, streaming_look_ahead_ms=2.5, streaming_look_back_ms=52.5,
    streaming_n_left_pad_tokens=32,
)
# Tiny shapes for tests: deliberately unusual (odd head counts, GQA 3:1, head_dim != dim/heads).
TINY_MODEL = ModelArgs(
    dim=96, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=20, hidden_dim=160, vocab_size=3000,
    rope_theta=1e6, norm_eps=1e-5, sliding_window=24, ada_t_cond_dim=32,
    encoder=EncoderArgs(
        dim=64, n_layers=2, n_heads=3, head_dim=24, hidden_dim=112, rope_theta=1e6, norm_eps=1e-5,
        sliding_window=40, use_biases=True, num_mel_bins=128, sampling_rate=16000, hop_length=160,
        window_size=400, frame_rate=12.5, global_log_mel_max=1.5, downsample_factor=4,
    ),
)
PRESETS = {"tiny": TINY_MODEL, "4b": REAL_MODEL}

