"""Voxtral-Mini-4B-Realtime in plain PyTorch: causal audio encoder, adapter, delay-conditioned Mistral decoder.

One forward serves offline and streaming: every call takes a chunk and an absolute start position, and the
state (conv context, encoder and decoder KV rings) lives in buffers. Offline transcription is streaming with
big chunks. The same graph is exported to ExecuTorch, so everything here is standard ops with static
buffers; data-dependent sizes come from `.item()` on the position tensor plus `torch._check` bounds.

Parameter names follow the Mistral-native checkpoint minus its `mm_streams_embeddings.embedding_module.`
prefix, and q/k rows use the native RoPE layout (rotation pairs interleaved: rows 2j, 2j+1).
References: mistral-common / transformers `modeling_voxtral_realtime.py` / vLLM `voxtral_realtime.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import EncoderArgs, ModelArgs

# ----------------------------------------------------------------------------- building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 statistics, weight applied in the model dtype (as transformers does).
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(pos: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [S, head_dim/2] for absolute positions `pos` [S]; computed on the fly, so positions are unbounded."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = pos.float()[:, None] * inv_freq[None, :]  # [S, head_dim/2]
    # transformers casts cos/sin to the activation dtype before rotating; do the same.
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2j, 2j+1) of x [B, H, S, D] -- the native (interleaved) layout."""
    xr = x.unflatten(-1, (-1, 2))  # [B, H, S, D/2, 2]
    re, im = xr[..., 0], xr[..., 1]
    out = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1)
    return out.flatten(-2)


class RingKVCache(nn.Module):
    """Sliding-window KV cache as a ring of `size` slots, layout [1, n_kv_heads, size, head_dim].

    Position p lives in slot p % size. A chunk of S new positions is written before attending, so the
    oldest key any query of the chunk needs (start - window + 1) must survive the chunk's own writes:
    size >= window + max_chunk - 1. Slot j then holds position j + ((end - 1 - j) // size) * size, where
    end = start + S; the mask is derived from that formula, so stale slots (from an earlier stream or
    not yet written) are never attended and need no clearing.
    """

    def __init__(self, n_kv_heads: int, head_dim: int, window: int, max_chunk: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.window = window
        self.size = window + max_chunk
        self.max_chunk = max_chunk
        shape = (1, n_kv_heads, self.size, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write k/v [1, H, S, D] at positions start..start+S-1; return (keys, values, mask) to attend.

        keys/values cover only the slots written so far (min(end, size) of them), so attention costs
        O(valid length), not O(capacity). mask [S, L] is True where query i may see slot j.
        """
        s = k.shape[2]
        end = start + s
        slots = (torch.arange(s) + start) % self.size
        self.k.index_copy_(2, slots, k.to(self.k.dtype))
        self.v.index_copy_(2, slots, v.to(self.v.dtype))
        n_valid = torch.sym_min(end, self.size)
        j = torch.arange(n_valid)
        slot_pos = j + torch.div(end - 1 - j, self.size, rounding_mode="floor") * self.size  # [L]
        q_pos = torch.arange(s) + start  # [S]
        delta = q_pos[:, None] - slot_pos[None, :]
        mask = (delta >= 0) & (delta < self.window)
        return self.k[:, :, :n_valid], self.v[:, :, :n_valid], mask


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked softmax attention with grouped KV heads, no KV repetition.

    q [1, H, S, D], k/v [1, Hkv, L, D], mask [S, L] -> [1, H, S, D]. Query head h uses KV head h // (H/Hkv).
    """
    _, n_heads, s, d = q.shape
    n_kv = k.shape[1]
    g = n_heads // n_kv
    qg = q.reshape(1, n_kv, g * s, d)  # heads of a group are consecutive
    scores = torch.matmul(qg, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # [1, Hkv, g*S, L]
    scores = scores.unflatten(2, (g, s)).masked_fill(~mask, float("-inf"))  # [1, Hkv, g, S, L]
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = torch.matmul(probs.flatten(2, 3), v)  # [1, Hkv, g*S, D]
    return out.reshape(1, n_heads, s, d)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, rope_theta: float, biases: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.rope_theta = n_heads, n_kv_heads, head_dim, rope_theta
        # Encoder pattern when biased: q, v, o have biases, k never does.
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=biases)
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=biases)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=biases)
        self.cache: RingKVCache | None = None

    def forward(self, x: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        q = self.wq(x).view(1, s, self.n_heads, self.head_dim).transpose(1, 2)  # [1, H, S, D]
        k = self.wk(x).view(1, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(1, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        assert self.cache is not None, "call setup_caches() first"
        keys, values, mask = self.cache.update(start, k, v)
        out = attention(q, keys, values, mask)  # [1, H, S, D]
        return self.wo(out.transpose(1, 2).reshape(1, s, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); only w2 may carry a bias (encoder)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# ----------------------------------------------------------------------------- audio encoder


class CausalConv(nn.Module):
    """Causal Conv1d (kernel 3) as one matmul over stacked shifted inputs, with carried left context.

    Written as a linear layer (not nn.functional.conv1d) so chunk lengths can be dynamic under export
    and the streaming state is explicit. Left context = kernel - stride frames: 2 for conv1 (stride 1),
    1 for conv2 (stride 2) -- the reference padding; upstream ExecuTorch pads conv2 by 2 and diverges.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=3, stride=stride)  # holds weight [out, in, 3] + bias
        self.stride = stride
        self.left = 3 - stride
        # [left, c_in] last input frames of the previous chunk; allocated by VoxtralRealtime.setup_caches.
        self.register_buffer("state", None, persistent=False)
        self.linear: nn.Linear | None = None  # set by to_linear() for export

    def to_linear(self) -> None:
        """Replace the conv weight by an equivalent nn.Linear [out, 3 * in] (tap-major) so export sees a
        plain linear layer with a constant weight (XNNPACK delegates it; the permute is not traced)."""
        w = self.conv.weight.detach().permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        self.linear = nn.Linear(w.shape[1], w.shape[0], bias=True, dtype=w.dtype)
        self.linear.weight = nn.Parameter(w.contiguous())
        self.linear.bias = nn.Parameter(self.conv.bias.detach().clone())
        del self.conv.weight, self.conv.bias

    def forward(self, x: torch.Tensor, keep_state: torch.Tensor) -> torch.Tensor:
        """x [T, c_in] -> [T / stride, c_out]; keep_state is 0.0 at the start of a stream (zero left pad)."""
        assert self.state is not None, "call setup_caches() first"
        t = x.shape[0]
        xp = torch.cat([self.state * keep_state, x], dim=0)  # [left + T, c_in]
        self.state.copy_(xp[t:])  # last `left` frames
        if self.stride == 1:  # out[t] sees inputs t-2, t-1, t
            taps = torch.cat([xp[0:t], xp[1 : t + 1], xp[2 : t + 2]], dim=1)
        else:  # stride 2: out[j] sees inputs 2j-1, 2j, 2j+1 (xp is shifted by one)
            taps = torch.cat([xp[0:t].reshape(t // 2, -1), xp[2 : t + 1 : 2]], dim=1)
        if self.linear is not None:
            return self.linear(taps)
        w = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)  # [out, 3 * in], tap-major
        return F.linear(taps, w, self.conv.bias)


class EncoderLayer(nn.Module):
    def __init__(self, a: EncoderArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.attention = Attention(a.dim, a.n_heads, a.n_heads, a.head_dim, a.rope_theta, a.use_biases)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        self.feed_forward = FeedForward(a.dim, a.hidden_dim, a.use_biases)

    def forward(self, x: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), start, cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, a: EncoderArgs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)


class WhisperEncoder(nn.Module):
    """mel [1, n_mels, T] -> encoder frames [T/2, dim]; conv stem (GELU after each conv) then causal transformer."""

    def __init__(self, a: EncoderArgs) -> None:
        super().__init__()
        self.args = a
        self.dtype = torch.float32  # set by VoxtralRealtime.setup_caches
        self.conv_layers = nn.ModuleList([CausalConv(a.num_mel_bins, a.dim, 1), CausalConv(a.dim, a.dim, 2)])
        self.transformer = Transformer(a)

    def forward(self, mel: torch.Tensor, start: int, keep_state: torch.Tensor) -> torch.Tensor:
        x = mel[0].transpose(0, 1).to(self.dtype)  # [T, n_mels]
        x = F.gelu(self.conv_layers[0](x, keep_state))
        x = F.gelu(self.conv_layers[1](x, keep_state))  # [T/2, dim]
        x = x[None]  # [1, T/2, dim]
        a = self.args
        cos, sin = rope_cos_sin(torch.arange(x.shape[1]) + start, a.head_dim, a.rope_theta, x.dtype)
        for layer in self.transformer.layers:
            x = layer(x, start, cos, sin)
        return self.transformer.norm(x)[0]


# ----------------------------------------------------------------------------- text decoder


def delay_embedding(n_delay: torch.Tensor, dim: int, dtype: torch.dtype, theta: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the delay (in tokens), cos first then sin -> [dim]. Evaluated in the model dtype."""
    half = dim // 2
    inv_freq = torch.exp(-math.log(theta) * torch.arange(half, dtype=torch.float32) / half).to(dtype)
    e = n_delay.to(dtype).reshape(1) * inv_freq
    return torch.cat([e.cos(), e.sin()])


class DecoderLayer(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.attention = Attention(a.dim, a.n_heads, a.n_kv_heads, a.head_dim, a.rope_theta, biases=False)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        # Delay conditioning: scales the FFN norm output by (1 + MLP(t_cond)); the attention norm is untouched.
        self.ada_rms_norm_t_cond = nn.Sequential(
            nn.Linear(a.dim, a.ada_t_cond_dim, bias=False), nn.GELU(), nn.Linear(a.ada_t_cond_dim, a.dim, bias=False)
        )
        self.feed_forward = FeedForward(a.dim, a.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor, t_cond: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), start, cos, sin)
        h = self.ffn_norm(x) * (1 + self.ada_rms_norm_t_cond(t_cond))
        return x + self.feed_forward(h)


# ----------------------------------------------------------------------------- the model


class VoxtralRealtime(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        e = args.encoder
        self.whisper_encoder = WhisperEncoder(e)
        self.audio_language_projection = nn.Sequential(
            nn.Linear(e.dim * e.downsample_factor, args.dim, bias=False), nn.GELU(), nn.Linear(args.dim, args.dim, bias=False)
        )
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output: nn.Linear | None = None  # untied LM head (export with quantization); None = tied
        self.max_enc_tokens = 0
        self.max_dec_tokens = 0

    def init_buffers(self) -> None:
        """Kept for loaders that build on the meta device; all non-cache buffers are computed on the fly."""

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def setup_caches(self, max_enc_tokens: int = 64, max_dec_tokens: int = 64, cache_dtype: torch.dtype | None = None) -> None:
        """Allocate conv state and KV rings for chunks of up to max_enc_tokens audio tokens / max_dec_tokens positions."""
        a, e = self.args, self.args.encoder
        dtype = cache_dtype or self.dtype
        enc_frames = max_enc_tokens * e.downsample_factor
        for layer in self.whisper_encoder.transformer.layers:
            layer.attention.cache = RingKVCache(e.n_heads, e.head_dim, e.sliding_window, enc_frames, dtype)
        for layer in self.layers:
            layer.attention.cache = RingKVCache(a.n_kv_heads, a.head_dim, a.sliding_window, max_dec_tokens, dtype)
        self.whisper_encoder.dtype = self.dtype
        c1, c2 = self.whisper_encoder.conv_layers
        # Registered as buffers so export sees them as mutable state.
        c1.register_buffer("state", torch.zeros(c1.left, c1.conv.in_channels, dtype=self.dtype), persistent=False)
        c2.register_buffer("state", torch.zeros(c2.left, c2.conv.in_channels, dtype=self.dtype), persistent=False)
        self.max_enc_tokens, self.max_dec_tokens = max_enc_tokens, max_dec_tokens

    def untie_head(self) -> None:
        """Give the LM head its own weight so the embedding and the head can be quantized differently."""
        self.output = nn.Linear(self.args.dim, self.args.vocab_size, bias=False, dtype=self.dtype)
        self.output.weight = nn.Parameter(self.tok_embeddings.weight.detach().clone())

    # ---- the three compute steps (each is one exported method)

    def encode(self, mel: torch.Tensor, enc_pos: torch.Tensor) -> torch.Tensor:
        """mel [1, n_mels, 8k] of tokens t0..t0+k-1, enc_pos [1] = 4*t0 -> audio embeddings [1, k, dim]."""
        e = self.args.encoder
        start = enc_pos[0].item()
        torch._check(start >= 0)
        keep_state = (enc_pos[:1] > 0).to(self.dtype)  # new stream at position 0: zero conv context
        x = self.whisper_encoder(mel, start, keep_state)  # [T/2, enc_dim]
        x = x.reshape(-1, e.dim * e.downsample_factor)  # concatenate `downsample_factor` consecutive frames
        return self.audio_language_projection(x)[None]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """token ids [1, S] -> [1, S, dim]."""
        return self.tok_embeddings(ids)

    def decode(self, h: torch.Tensor, pos: torch.Tensor, n_delay: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        """Summed embeddings h [1, S, dim] at positions pos[0].. -> logits [1, vocab] of the last position
        (or [1, S, vocab] with all_logits)."""
        a = self.args
        start = pos[0].item()
        torch._check(start >= 0)
        h = h.to(self.dtype)
        t_cond = delay_embedding(n_delay, a.dim, self.dtype)
        cos, sin = rope_cos_sin(torch.arange(h.shape[1]) + start, a.head_dim, a.rope_theta, h.dtype)
        for layer in self.layers:
            h = layer(h, start, cos, sin, t_cond)
        if not all_logits:
            h = h[:, -1]
        h = self.norm(h)
        logits = self.output(h) if self.output is not None else F.linear(h, self.tok_embeddings.weight)  # tied head
        return logits.float()
