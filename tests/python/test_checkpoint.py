"""Checkpoint loading: shapes, name mappings, RoPE un-permutation, strict errors (tiny preset only)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from voxtral_rt.checkpoint import (
    CheckpointError,
    detect_format,
    expected_shapes,
    internal_to_hf,
    internal_to_native,
    load_model,
    load_state_dict,
    param_count,
    read_args,
    rope_heads,
    rope_hf_to_native,
    rope_native_to_hf,
)
from voxtral_rt.config import REAL_MODEL, TINY_MODEL, ConfigError
from voxtral_rt.synth import synth, synth_state_dict

A = TINY_MODEL


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {f: synth(root / f, "tiny", seed=3, fmt=f) for f in ("mistral", "hf")}


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return synth_state_dict(A, seed=3)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _raw(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k).clone() for k in f.keys()}


# ----------------------------------------------------------------------------- shapes and names


def test_real_model_shapes():
    s = expected_shapes(REAL_MODEL)
    assert len(s) == 711  # docs/model.md, "Checkpoint formats"
    assert param_count(REAL_MODEL) == 4_429_679_360
    assert s["whisper_encoder.conv_layers.0.conv.weight"] == (1280, 128, 3)
    assert s["whisper_encoder.conv_layers.1.conv.weight"] == (1280, 1280, 3)
    assert s["whisper_encoder.transformer.layers.31.attention.wq.weight"] == (2048, 1280)
    assert s["whisper_encoder.transformer.layers.0.attention.wo.weight"] == (1280, 2048)
    assert "whisper_encoder.transformer.layers.0.attention.wk.bias" not in s
    assert s["audio_language_projection.0.weight"] == (3072, 5120)
    assert s["layers.25.attention.wq.weight"] == (4096, 3072)
    assert s["layers.25.attention.wk.weight"] == (1024, 3072)
    assert s["layers.0.ada_rms_norm_t_cond.0.weight"] == (32, 3072)
    assert s["tok_embeddings.weight"] == (131072, 3072)
    # Mapped names are unique in both formats (a collision would silently drop a tensor).
    assert len({internal_to_hf(n) for n in s}) == len({internal_to_native(n) for n in s}) == 711


def test_no_biases_variant():
    from dataclasses import replace

    s = expected_shapes(replace(A, encoder=replace(A.encoder, use_biases=False)))
    assert not any(n.endswith(".bias") and ".transformer." in n for n in s)
    assert "whisper_encoder.conv_layers.0.conv.bias" in s  # the conv stem always has biases


def test_native_and_hf_names():
    assert internal_to_native("tok_embeddings.weight") == "mm_streams_embeddings.embedding_module.tok_embeddings.weight"
    assert internal_to_native("layers.0.attention.wq.weight") == "layers.0.attention.wq.weight"
    assert internal_to_hf("whisper_encoder.transformer.layers.3.attention.wq.bias") == "audio_tower.layers.3.self_attn.q_proj.bias"
    assert internal_to_hf("whisper_encoder.transformer.layers.3.feed_forward.w3.weight") == "audio_tower.layers.3.mlp.up_proj.weight"
    assert internal_to_hf("layers.1.ada_rms_norm_t_cond.2.weight") == "language_model.model.layers.1.ada_rms_norm.linear2.weight"
    assert internal_to_hf("norm.weight") == "language_model.model.norm.weight"
    assert internal_to_hf("whisper_encoder.transformer.norm.weight") == "audio_tower.norm.weight"


# ----------------------------------------------------------------------------- RoPE permutation


def _rope_interleaved(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Native RoPE: rotate (x[2j], x[2j+1]) as a complex number. x [S, H, D]."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # [S, D/2]
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)[:, None]).flatten(-2)


def _rope_rotate_half(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """transformers' RoPE: x*cos + rotate_half(x)*sin with frequencies repeated over the two halves."""
    d = x.shape[-1]
    ang = pos[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.cat([ang, ang], -1)[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * ang.cos() + torch.cat([-x2, x1], -1) * ang.sin()


@pytest.mark.parametrize("where", ["encoder", "decoder"])
def test_rope_unpermutation_matches_independent_formula(dirs, where):
    """Attention scores after RoPE must agree: interleaved RoPE on native weights vs rotate-half RoPE on the
    weights as stored in the HF file -- and the loader must give back the native weights exactly."""
    hf_raw = _raw(dirs["hf"] / "model.safetensors")
    loaded = load_state_dict(dirs["hf"], A)
    native = load_state_dict(dirs["mistral"], A)
    if where == "encoder":
        p, h, hk, d, theta = "whisper_encoder.transformer.layers.1.attention", A.encoder.n_heads, A.encoder.n_heads, A.encoder.head_dim, A.encoder.rope_theta
        dim = A.encoder.dim
    else:
        p, h, hk, d, theta = "layers.1.attention", A.n_heads, A.n_kv_heads, A.head_dim, A.rope_theta
        dim = A.dim
    g = torch.Generator().manual_seed(0)
    s = 7
    x = torch.randn(s, dim, generator=g, dtype=torch.float64)
    pos = torch.arange(s, dtype=torch.float64) * 37 + 5  # far-apart positions: every frequency matters

    def proj(sd, name_of, key, heads):
        w = sd[name_of(f"{p}.w{key}.weight")].double()
        y = x @ w.T
        bname = f"{p}.w{key}.bias"
        if bname in native:
            y = y + sd[name_of(bname)].double()
        return y.view(s, heads, d)

    ident = lambda n: n  # noqa: E731
    qn, kn = proj(native, ident, "q", h), proj(native, ident, "k", hk)
    qh, kh = proj(hf_raw, internal_to_hf, "q", h), proj(hf_raw, internal_to_hf, "k", hk)
    qn, kn = _rope_interleaved(qn, pos, theta), _rope_interleaved(kn, pos, theta)
    qh, kh = _rope_rotate_half(qh, pos, theta), _rope_rotate_half(kh, pos, theta)
    rep = h // hk  # GQA: q head i reads kv head i // rep
    sn = torch.einsum("qhd,khd->hqk", qn, kn.repeat_interleave(rep, 1))
    sh = torch.einsum("qhd,khd->hqk", qh, kh.repeat_interleave(rep, 1))
    assert torch.allclose(sn, sh, atol=1e-9 * sn.abs().max().item())
    # The HF file really is permuted (else the check above would be vacuous) ...
    assert not torch.equal(hf_raw[internal_to_hf(f"{p}.wq.weight")], native[f"{p}.wq.weight"])
    # ... and the loader undoes it exactly, biases included.
    for n in native:
        if n.startswith(p + "."):
            assert torch.equal(loaded[n], native[n]), n


def test_rope_permutation_layout():
    # HF row j = native row 2j, HF row hd/2 + j = native row 2j+1, per head.
    t = torch.arange(2 * 8)
    assert rope_native_to_hf(t, 2).tolist() == [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
    w = torch.randn(3 * 6, 5)
    assert torch.equal(rope_hf_to_native(rope_native_to_hf(w, 3), 3), w)
    heads = rope_heads(REAL_MODEL)
    assert heads["layers.0.attention.wk.weight"] == 8 and heads["layers.0.attention.wq.weight"] == 32
    assert heads["whisper_encoder.transformer.layers.0.attention.wq.bias"] == 32
    assert "whisper_encoder.transformer.layers.0.attention.wv.weight" not in heads


# ----------------------------------------------------------------------------- formats


def test_detect_format(dirs, tmp_path):
    assert detect_format(dirs["mistral"]) == "mistral"
    assert detect_format(dirs["hf"]) == "hf"
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        detect_format(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        detect_format(tmp_path / "nope")
    both = _copy(dirs["hf"], tmp_path / "both")
    for f in ("params.json", "consolidated.safetensors"):
        shutil.copy(dirs["mistral"] / f, both / f)
    assert detect_format(both) == "mistral"  # Mistral's repos ship both; native needs no permutation


def test_both_formats_load_identically(dirs, ref):
    for fmt, d in dirs.items():
        args = read_args(d)
        assert args == A, fmt
        sd = load_state_dict(d, args)
        assert list(sd) == list(expected_shapes(A))
        for n, t in sd.items():
            assert t.dtype == torch.bfloat16, n  # no upcast unless asked
            assert torch.equal(t, ref[n]), (fmt, n)
    sd32 = load_state_dict(dirs["hf"], A, dtype=torch.float32)
    assert all(t.dtype == torch.float32 for t in sd32.values())
    assert torch.equal(sd32["layers.0.attention.wq.weight"], ref["layers.0.attention.wq.weight"].float())


def test_load_model(dirs, ref):
    for fmt in ("mistral", "hf"):
        for dtype in (torch.bfloat16, torch.float32):
            model, args = load_model(dirs[fmt], dtype=dtype)
            assert args == A
            sd = model.state_dict()
            assert set(sd) == set(ref)
            for n, t in sd.items():
                assert t.dtype == dtype and not t.is_meta, n
                assert torch.equal(t, ref[n].to(dtype)), (fmt, n)


def _mapped_from(t: torch.Tensor, path: Path) -> bool:
    """Is t's memory inside a mapping of `path` (per /proc/self/maps)?"""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path.resolve()):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_load_is_mmap_backed(dirs):
    """bf16 weights stay views of the file mapping; only permuted HF q/k (and casts) are copies."""
    model, _ = load_model(dirs["mistral"], dtype=torch.bfloat16)
    f = dirs["mistral"] / "consolidated.safetensors"
    assert all(_mapped_from(p, f) for p in model.parameters())
    sd = load_state_dict(dirs["hf"], A)
    f = dirs["hf"] / "model.safetensors"
    perm = rope_heads(A)
    for n, t in sd.items():
        assert _mapped_from(t, f) == (n not in perm), n
    sd32 = load_state_dict(dirs["mistral"], A, dtype=torch.float32)
    assert not any(_mapped_from(t, dirs["mistral"] / "consolidated.safetensors") for t in sd32.values())


# ----------------------------------------------------------------------------- strict errors


def _native_dir(dirs, tmp_path: Path, edit) -> Path:
    d = _copy(dirs["mistral"], tmp_path / "edited")
    sd = _raw(d / "consolidated.safetensors")
    edit(sd)
    save_file(sd, str(d / "consolidated.safetensors"))
    return d


def test_missing_tensor(dirs, tmp_path):
    name = "layers.1.feed_forward.w2.weight"
    d = _native_dir(dirs, tmp_path, lambda sd: sd.pop(name))
    with pytest.raises(CheckpointError, match=r"missing tensor 'layers\.1\.feed_forward\.w2\.weight'"):
        load_model(d)


def test_unexpected_tensor(dirs, tmp_path):
    d = _native_dir(dirs, tmp_path, lambda sd: sd.__setitem__("output.weight", torch.zeros(3, dtype=torch.bfloat16)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'output\.weight'"):
        load_state_dict(d, A)
    # A bias on a model whose config says no biases is unexpected too.
    name = "mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0.attention.wk.bias"
    d2 = _native_dir(dirs, tmp_path / "b", lambda sd: sd.__setitem__(name, torch.zeros(72, dtype=torch.bfloat16)))
    with pytest.raises(CheckpointError, match="unexpected tensor .*wk.bias"):
        load_state_dict(d2, A)


def test_misshaped_tensor(dirs, tmp_path):
    name = "layers.0.attention.wk.weight"

    def edit(sd):
        sd[name] = sd[name][:-1].contiguous()

    d = _native_dir(dirs, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.attention\.wk\.weight' has shape mismatch: expected \[40, 96\], got \[39, 96\]"):
        load_model(d)


def test_truncated_and_corrupt_file(dirs, tmp_path):
    d = _copy(dirs["mistral"], tmp_path / "trunc")
    f = d / "consolidated.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="consolidated.safetensors: truncated or corrupt"):
        load_model(d)
    f.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict(d, A)
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + data[24:])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict(d, A)


def test_missing_config_field(dirs, tmp_path):
    d = _copy(dirs["mistral"], tmp_path / "cfg")
    p = json.loads((d / "params.json").read_text())
    del p["n_kv_heads"]
    (d / "params.json").write_text(json.dumps(p))
    with pytest.raises(ConfigError, match=r"params\.json: missing field 'n_kv_heads'"):
        load_model(d)
    p = json.loads((dirs["mistral"] / "params.json").read_text())
    del p["multimodal"]["whisper_model_args"]["encoder_args"]["head_dim"]
    (d / "params.json").write_text(json.dumps(p))
    with pytest.raises(ConfigError, match="encoder_args.*missing field 'head_dim'"):
        load_model(d)


def test_config_shape_disagreement(dirs, tmp_path):
    """A config that does not match the weights reports the first tensor that disagrees."""
    d = _copy(dirs["mistral"], tmp_path / "cfg2")
    p = json.loads((d / "params.json").read_text())
    p["hidden_dim"] = 128
    (d / "params.json").write_text(json.dumps(p))
    with pytest.raises(CheckpointError, match=r"layers\.0\.feed_forward\.w1\.weight' has shape mismatch: expected \[128, 96\], got \[160, 96\]"):
        load_model(d)


# ----------------------------------------------------------------------------- HF variants


def _hf_dir(dirs, tmp_path: Path, edit) -> Path:
    d = _copy(dirs["hf"], tmp_path / "hfedit")
    sd = _raw(d / "model.safetensors")
    res = edit(sd)
    if isinstance(res, dict):  # edits may also rebuild the dict
        sd = res
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def test_hf_lm_head_and_in_memory_names(dirs, tmp_path, ref):
    emb = "language_model.model.embed_tokens.weight"
    d = _hf_dir(dirs, tmp_path / "a", lambda sd: sd.__setitem__("language_model.lm_head.weight", sd[emb].clone()))
    assert torch.equal(load_state_dict(d, A)["tok_embeddings.weight"], ref["tok_embeddings.weight"])

    def bad_head(sd):
        h = sd[emb].clone()
        h[5, 3] += 1
        sd["language_model.lm_head.weight"] = h

    d = _hf_dir(dirs, tmp_path / "b", bad_head)
    with pytest.raises(CheckpointError, match="lm_head.weight' differs from the token embedding"):
        load_state_dict(d, A)

    def in_memory(sd):  # transformers >= 5 in-memory names
        out = {}
        for k, v in sd.items():
            if k.startswith("language_model.model."):
                out["model.language_model." + k[len("language_model.model.") :]] = v
            else:
                out["model." + k] = v
        out["lm_head.weight"] = sd[emb].clone()
        return out

    d = _hf_dir(dirs, tmp_path / "c", in_memory)
    sd = load_state_dict(d, A)
    assert all(torch.equal(sd[n], ref[n]) for n in ref)

    def dup(sd):
        sd["model.audio_tower.norm.weight"] = sd["audio_tower.norm.weight"].clone()

    d = _hf_dir(dirs, tmp_path / "d", dup)
    with pytest.raises(CheckpointError, match="appears twice"):
        load_state_dict(d, A)


def test_hf_missing_tensor(dirs, tmp_path):
    d = _hf_dir(dirs, tmp_path, lambda sd: sd.pop("audio_tower.layers.1.self_attn.q_proj.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'audio_tower\.layers\.1\.self_attn\.q_proj\.bias'"):
        load_state_dict(d, A)


def test_hf_sharded(dirs, tmp_path, ref):
    d = _copy(dirs["hf"], tmp_path / "sharded")
    sd = _raw(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(sd)
    half = math.ceil(len(names) / 2)
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(d / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert detect_format(d) == "hf"
    loaded = load_state_dict(d, A)
    assert all(torch.equal(loaded[n], ref[n]) for n in ref)
    # A stale index (tensor listed in the wrong shard) and a missing shard are errors.
    k = names[0]
    index["weight_map"][k] = "model-00002-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"'{k}' is not listed for this shard"):
        load_state_dict(d, A)
    index["weight_map"][k] = "model-00003-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00003-of-00002.safetensors: file not found"):
        load_state_dict(d, A)
