"""Voxtral-Mini-4B-Realtime in plain PyTorch: causal audio encoder, adapter, delay-conditioned Mistral decoder.

One forward serves offline and streaming: every call takes a chunk and an absolute start position, and the
state (conv context, encoder and decoder KV rings) lives in buffers. Offline transcription is streaming with
big chunks. The same graph is exported to ExecuTorch, so everything here is standard ops with static
buffers. Positions stay tensors (no `.item()`), and the number of cache slots to attend comes from the mask's
shape, so every size in the exported graph is an input size; norms, RoPE and reshapes are written in the
forms XNNPACK accepts, so each layer lowers to few, large XNNPACK subgraphs.

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


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`; no op when it already is (an exported no-op cast would be a copy outside XNNPACK)."""
    return x if x.dtype == dtype else x.to(dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 statistics, weight applied in the model dtype (as transformers does). The mean of squares is
        # taken over a trailing singleton axis too (same value): XNNPACK delegates mean.dim only for 4-D
        # inputs averaged over their last two dims, and a norm left outside splits every layer's XNNPACK graph.
        x32 = cast(x, torch.float32)
        # Back to [..., 1] as a view with one inferred size (XNNPACK takes no symbolic reshape sizes); only the
        # sequence dim (-2) of x may be dynamic.
        ms = (x32 * x32).unsqueeze(-1).mean((-2, -1), keepdim=True).view(*x.shape[:-2], -1, 1)
        return self.weight * cast(x32 * torch.rsqrt(ms + self.eps), x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE for the native (interleaved) layout: pairs (2j, 2j+1) of a head rotate at frequency j.

    Its constants are non-persistent buffers (not in checkpoints): the per-channel frequencies, and the
    rotation R with linear(x, R) = each pair turned by 90 degrees, (-x[2j+1], x[2j]). R is a +-1 permutation,
    so that product is exact; it keeps RoPE to linear/mul/add (XNNPACK has no select or strided slice for the
    interleaved pairs).
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", torch.empty(head_dim), persistent=False)
        self.register_buffer("rot", torch.empty(head_dim, head_dim), persistent=False)
        self.init_buffers()

    def init_buffers(self) -> None:
        d = self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        self.inv_freq = inv_freq.repeat_interleave(2)  # channel 2j and 2j+1: frequency j
        rot = torch.zeros(d, d)
        j = torch.arange(0, d, 2)
        rot[j, j + 1] = -1.0
        rot[j + 1, j] = 1.0
        self.rot = rot

    def forward(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cos, sin, R) for absolute positions `pos` [S]: cos/sin [S, 1, head_dim] (broadcast over heads),
        computed on the fly, so positions are unbounded."""
        freqs = pos.float()[:, None, None] * self.inv_freq  # [S, 1, head_dim]
        # transformers casts cos/sin to the activation dtype before rotating; do the same.
        return cast(freqs.cos(), dtype), cast(freqs.sin(), dtype), cast(self.rot, dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2j, 2j+1) of x [S, H, D] -- the native (interleaved) layout:
    (x[2j] cos - x[2j+1] sin, x[2j+1] cos + x[2j] sin); (cos, sin, rot) from RotaryEmbedding."""
    return x * cos + F.linear(x, rot) * sin


ATTEND_BLOCK = 64  # attended widths are whole blocks of 64 slots: see attended_slots


def attended_slots(end: int, size: int, whole_ring: bool = False) -> int:
    """Ring slots a call attends when it ends at position `end` (exclusive): the valid prefix min(end, size)
    rounded up to whole ATTEND_BLOCKs (capped at `size`; the extra columns are masked), or with whole_ring all
    `size` slots once at least 3/4 of them are valid. The C++ runner aliases a whole-ring slice instead of
    copying it (docs/design.md, "Attention reads the caches in place"); the Python runtime uses the same widths,
    so both make bit-identical calls. Same as C++ `detail::attended_slots`.

    Why blocks: XNNPACK's softmax and P.V sum a row in an order that depends on the row's length; with lengths in
    whole 64-blocks the columns past a query's own end only add exact zeros, so a position's logits do not depend
    on how many positions share its decoder call, and multi-position decoding is bit-exact (docs/design.md)."""
    valid = min(-(-end // ATTEND_BLOCK) * ATTEND_BLOCK, size)
    return size if whole_ring and 4 * valid >= 3 * size else valid


def ring_mask(start: int, s: int, window: int, size: int, whole_ring: bool = False) -> torch.Tensor:
    """Additive attention mask [s, L] for queries at positions start..start+s-1 over the first
    L = attended_slots(start + s, size, whole_ring) slots of a ring of `size` slots (position p lives in slot
    p % size): 0 where the query may attend the slot, -inf elsewhere.

    After the chunk is written, slot j < end holds position j + ((end - 1 - j) // size) * size (end = start + s);
    a query at q sees positions q - window + 1 .. q. Stale slots (an earlier stream, or not yet written: j >= end)
    are masked by that rule, so they need no clearing; they hold zeros or earlier values, finite, so masked
    columns add exact zeros. The exported methods take this mask as an input (the runner computes it): its
    shape carries L, which keeps every attention size an input size, so XNNPACK can take the attention
    matmuls and softmax. Requires size >= window + s - 1.
    """
    end = start + s
    n_cols = attended_slots(end, size, whole_ring)
    j = torch.arange(n_cols)
    slot_pos = j + torch.div(end - 1 - j, size, rounding_mode="floor") * size  # [L]; j >= end: negative
    delta = (torch.arange(s) + start)[:, None] - slot_pos[None, :]
    visible = (delta >= 0) & (delta < window) & (slot_pos >= 0)[None, :]
    return torch.zeros(s, n_cols).masked_fill(~visible, float("-inf"))


class RingKVCache(nn.Module):
    """Sliding-window KV cache as a ring of `size` slots: keys stored transposed [n_kv_heads, head_dim, size]
    (so Q K^T needs no transpose copy), values [n_kv_heads, size, head_dim].

    Position p lives in slot p % size. A chunk of S new positions is written before attending, so the
    oldest key any query of the chunk needs (start - window + 1) must survive the chunk's own writes:
    size >= window + max_chunk - 1. Which slots a query may see is `ring_mask`.
    """

    def __init__(self, n_kv_heads: int, head_dim: int, window: int, max_chunk: int, dtype: torch.dtype,
                 zeroed: bool = True) -> None:
        super().__init__()
        self.window = window
        self.size = window + max_chunk
        self.max_chunk = max_chunk
        new = torch.zeros if zeroed else torch.empty
        # No batch dim: slicing the valid prefix is then the only copy (ExecuTorch has no strided views).
        self.register_buffer("k", new(n_kv_heads, head_dim, self.size, dtype=dtype), persistent=False)
        self.register_buffer("v", new(n_kv_heads, self.size, head_dim, dtype=dtype), persistent=False)

    def update(self, start: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [S, H, D] at positions start..start+S-1 (start: int64 [1]); return the first n_valid slots
        to attend: keys^T [H, D, n_valid] and values [H, n_valid, D]. Attention work is O(valid length)."""
        slots = (torch.arange(k.shape[0]) + start) % self.size
        self.k.index_copy_(2, slots, cast(k.permute(1, 2, 0), self.k.dtype))
        self.v.index_copy_(1, slots, cast(v.permute(1, 0, 2), self.v.dtype))
        if torch.compiler.is_exporting():
            # The functional slice_copy, which the .pte runs either way: a view of the buffer would make (non-strict)
            # export guard n_valid != size, since a view of the whole buffer is special-cased.
            return (torch.ops.aten.slice_copy.Tensor(self.k, 2, 0, n_valid),
                    torch.ops.aten.slice_copy.Tensor(self.v, 1, 0, n_valid))
        return self.k[:, :, :n_valid], self.v[:, :n_valid]


def attention(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked softmax attention with grouped KV heads, no KV repetition.

    q [S, H, D], k_t [Hkv, D, L], v [Hkv, L, D], mask [S*g, L] additive (row s*g + j: ring_mask row s, for the
    j-th query head of a group) -> [S, H, D]. Query head h uses KV head h // g, g = H / Hkv. Plain 3-D bmm: no
    broadcast or transpose copies of the cache. Every reshape is a view of a contiguous tensor with one
    inferred size, the form XNNPACK takes (it refuses symbolic sizes), so the whole function is delegated.
    """
    _, n_heads, d = q.shape
    n_kv = k_t.shape[0]
    g = n_heads // n_kv
    qg = q.view(-1, n_kv, g, d).permute(1, 0, 2, 3).contiguous().view(n_kv, -1, d)  # [Hkv, S*g, D]
    # Both matmuls run in the caches' dtype (fp16 caches: half the bytes of the per-step K/V reads); the scale,
    # mask and softmax in the activations' (fp32 softmax for bf16 models). With caches in the model dtype every
    # cast here is a no-op.
    scores = cast(torch.bmm(cast(qg, k_t.dtype), k_t), q.dtype) * (1.0 / math.sqrt(d)) + mask  # [Hkv, S*g, L]
    probs = cast(torch.softmax(cast(scores, torch.float32), dim=-1), v.dtype)
    out = cast(torch.bmm(probs, v), q.dtype).view(n_kv, -1, g, d)  # [Hkv, S, g, D]
    return out.permute(1, 0, 2, 3).contiguous().view(-1, n_heads, d)


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

    def forward(self, x: torch.Tensor, start: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        """start: int64 [1] position of x[:, 0]; rope: (cos, sin, rot) for these positions (apply_rope);
        mask: [g*S, L] additive, see `attention`; L = number of ring slots to attend."""
        # Heads as [S, H, D]: views of the projections, no transposes until the cache write.
        q = self.wq(x).view(-1, self.n_heads, self.head_dim)
        k = self.wk(x).view(-1, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(-1, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        assert self.cache is not None, "call setup_caches() first"
        k_t, values = self.cache.update(start, k, v, mask.shape[1])
        out = attention(q, k_t, values, mask)  # [S, H, D]
        return self.wo(out.view(1, -1, self.n_heads * self.head_dim))


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

    def forward(self, x: torch.Tensor, start: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), start, rope, mask)
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
        self.rope = RotaryEmbedding(a.head_dim, a.rope_theta)

    def forward(self, mel: torch.Tensor, start: torch.Tensor, keep_state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """start: int64 [1], the encoder position (frame) of the chunk's first output frame."""
        x = cast(mel[0].transpose(0, 1), self.dtype)  # [T, n_mels]
        x = F.gelu(self.conv_layers[0](x, keep_state))
        x = F.gelu(self.conv_layers[1](x, keep_state))  # [T/2, dim]
        x = x[None]  # [1, T/2, dim]
        rope = self.rope(torch.arange(x.shape[1]) + start, x.dtype)
        for layer in self.transformer.layers:
            x = layer(x, start, rope, mask)
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

    def forward(self, x: torch.Tensor, start: torch.Tensor, rope: tuple[torch.Tensor, ...], t_cond: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), start, rope, mask)
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
        self.rope = RotaryEmbedding(args.head_dim, args.rope_theta)
        self.max_enc_tokens = 0
        self.max_dec_tokens = 0

    def init_buffers(self) -> None:
        """(Re)create the constant non-persistent buffers, for loaders that build the module on the meta device.
        The caches and conv state come from setup_caches()."""
        for m in self.modules():
            if isinstance(m, RotaryEmbedding):
                m.init_buffers()

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype  # a norm is never quantized (the embedding may be, for export)

    def setup_caches(self, max_enc_tokens: int = 64, max_dec_tokens: int = 64, cache_dtype: torch.dtype | None = None,
                     zeroed: bool = True) -> None:
        """Allocate conv state and KV rings for chunks of up to max_enc_tokens audio tokens / max_dec_tokens positions.
        zeroed=False leaves the KV rings unwritten (no resident memory): enough for export, which needs only their
        shapes (the runtime allocates its own); eager inference needs them zeroed, since masked slots must be finite."""
        a, e = self.args, self.args.encoder
        dtype = cache_dtype or self.dtype
        enc_frames = max_enc_tokens * e.downsample_factor
        for layer in self.whisper_encoder.transformer.layers:
            layer.attention.cache = RingKVCache(e.n_heads, e.head_dim, e.sliding_window, enc_frames, dtype, zeroed)
        for layer in self.layers:
            layer.attention.cache = RingKVCache(a.n_kv_heads, a.head_dim, a.sliding_window, max_dec_tokens, dtype, zeroed)
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

    @property
    def enc_cache_slots(self) -> int:
        return self.whisper_encoder.transformer.layers[0].attention.cache.size

    @property
    def dec_cache_slots(self) -> int:
        return self.layers[0].attention.cache.size

    def enc_mask(self, enc_pos: int, n_frames: int) -> torch.Tensor:
        """The audio_encoder's mask input for n_frames encoder frames (4 per token) from frame enc_pos."""
        return ring_mask(enc_pos, n_frames, self.args.encoder.sliding_window, self.enc_cache_slots)

    def dec_mask(self, pos: int, n: int) -> torch.Tensor:
        """The text_decoder's mask input for n positions from pos."""
        return ring_mask(pos, n, self.args.sliding_window, self.dec_cache_slots)

    def encode(self, mel: torch.Tensor, enc_pos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """mel [1, n_mels, 8k] of tokens t0..t0+k-1, enc_pos [1] = 4*t0 -> audio embeddings [1, k, dim].
        mask: enc_mask(4*t0, 4k), computed here when not given (the exported method takes it as an input)."""
        e = self.args.encoder
        if mask is None:
            mask = self.enc_mask(int(enc_pos[0]), mel.shape[2] // 2)
        start = enc_pos[:1]  # kept a tensor: the exported graph then has no data-dependent sizes
        keep_state = cast(enc_pos[:1] > 0, self.dtype)  # new stream at position 0: zero conv context
        x = self.whisper_encoder(mel, start, keep_state, cast(mask, self.dtype))  # [T/2, enc_dim]
        x = x.reshape(-1, e.dim * e.downsample_factor)  # concatenate `downsample_factor` consecutive frames
        return self.audio_language_projection(x)[None]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """token ids [1, S] -> [1, S, dim]."""
        return self.tok_embeddings(ids)

    def decode(self, h: torch.Tensor, pos: torch.Tensor, n_delay: torch.Tensor, all_logits: bool = False,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Summed embeddings h [1, S, dim] at positions pos[0].. -> logits [1, vocab] of the last position
        (or [1, S, vocab] with all_logits). mask: dec_mask(pos, S), computed here when not given."""
        a = self.args
        if mask is None:
            mask = self.dec_mask(int(pos[0]), h.shape[1])
        start = pos[:1]  # kept a tensor: the exported graph then has no data-dependent sizes
        g = a.n_heads // a.n_kv_heads
        # Row s*g + j for the j-th query head of a group (see `attention`).
        mask = cast(mask.repeat_interleave(g, dim=0) if g > 1 else mask, self.dtype)
        h = cast(h, self.dtype)
        t_cond = delay_embedding(n_delay, a.dim, self.dtype)
        rope = self.rope(torch.arange(h.shape[1]) + start, h.dtype)
        for layer in self.layers:
            h = layer(h, start, rope, t_cond, mask)
        if not all_logits:
            h = h[:, -1:]  # a slice, not a select: the norm and the head stay 3-D, one XNNPACK graph
        h = self.norm(h)
        logits = self.output(h) if self.output is not None else F.linear(h, self.tok_embeddings.weight)  # tied head
        return cast(logits if all_logits else logits.view(1, -1), torch.float32)
