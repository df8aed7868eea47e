"""mPLUG-Owl-Video, the VideoCon-Physics judge's network, in plain torch with the official keys.

A port of Hritikbansal/videophy `videocon/training/pipeline_video/mplug_owl_video/
modeling_mplug_owl.py` (commit 01d366c9; itself X-PLUG's mPLUG-Owl-Video), the code VideoPhy's
`entailment_inference.py` loads `videophysics/videocon_physics` with under transformers 4.28.1.
Only the inference path the judge takes is here: one video per sequence, no images, no
generate, no LoRA modules (the released checkpoint is the LoRA-merged model: upstream's
`model_unload_merge.py` saves `merge_and_unload().state_dict()`, r=32, alpha=32 on the LLaMA's
q/k/v/o/gate/up/down projections), no dropout (eval).

- vision_model: a ViT-L/14 (224 px, 256 patches + CLS) whose every layer first adds a local
  temporal module (LayerNorm -> 1x1x1 down -> depthwise 3x1x1 conv over time -> QuickGELU ->
  1x1x1 up, on the patch tokens; upstream returns the CLS token unchanged from that module, so
  the residual doubles the CLS token in every layer; kept);
- abstractor: 64 query + 64 temporal query tokens cross-attend (keys = the normed queries and
  all frames' tokens) through 6 layers; visual_fc(queries) + temporal_visual_fc(temporal
  queries) + a learned `vit_eos` give 65 tokens in the LLaMA's width;
- language_model: transformers' LlamaForCausalLM (LLaMA-7B); the 65 `<|video|>` positions of
  the input ids (id -2, upstream's media marker) take the 65 video tokens.

State-dict keys are upstream's (`vision_model.*`, `query_tokens`, `temporal_query_tokens`,
`abstractor.*`, `language_model.model.*`, `language_model.lm_head.weight`); the checkpoint's
`...self_attn.rotary_emb.inv_freq` buffers (persistent under 4.28.1, recomputed here) are the
only keys ignored. Layer-norm epsilons follow upstream: config eps for the ViT's and the
abstractor MLP's norms, torch's default 1e-5 where upstream builds `LayerNormFp32(dim)` without
one (temporal `ln`, abstractor `norm1`, `normk`, `norm2`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VIDEO_TOKEN = -2  # upstream's media ids: <image> -1, <|video|> -2
IGNORED_KEYS = re.compile(r"^language_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class MplugOwlError(ValueError):
    """A VideoCon-Physics checkpoint cannot be loaded; the message names the fix."""


@dataclass
class VisionConfig:  # upstream MplugOwlVisionConfig defaults
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    layer_norm_eps: float = 1e-6


@dataclass
class AbstractorConfig:  # upstream MplugOwlVisualAbstractorConfig defaults
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    layer_norm_eps: float = 1e-6
    encoder_hidden_size: int = 1024


def _pick(cls: type, values: dict[str, Any] | None) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


@dataclass
class MplugOwlConfig:
    vision: VisionConfig
    abstractor: AbstractorConfig
    text: Any  # transformers.LlamaConfig
    num_query_tokens: int = 64

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MplugOwlConfig:
        """From the checkpoint's config.json (model_type "mplug-owl")."""
        from transformers import LlamaConfig

        text = {k: v for k, v in (d.get("text_config") or {}).items() if k != "model_type"}
        return cls(
            vision=_pick(VisionConfig, d.get("vision_config")),
            abstractor=_pick(AbstractorConfig, d.get("visual_abstractor_config")),
            text=LlamaConfig(**text),
            num_query_tokens=int(d.get("num_query_tokens", 64)),
        )


class LayerNormFp32(nn.LayerNorm):
    """Upstream's LayerNorm computed in float32 and cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


# ---- vision encoder (MplugOwlVisionModel)


class VisionEmbeddings(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        n = (c.image_size // c.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.patch_embed = nn.Conv2d(3, c.hidden_size, c.patch_size, c.patch_size, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, n + 1, c.hidden_size))
        self.pre_layernorm = LayerNormFp32(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, T, 1 + patches, D]."""
        b, t = pixels.shape[0], pixels.shape[2]
        x = self.patch_embed(pixels.transpose(1, 2).flatten(0, 1)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b * t, 1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_embedding[:, : x.shape[1]].to(x.dtype)
        return self.pre_layernorm(x).unflatten(0, (b, t))


class LocalTemporal(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        d, half = c.hidden_size, c.hidden_size // 2
        self.side = c.image_size // c.patch_size
        self.ln = LayerNormFp32(d)  # eps 1e-5: upstream passes none
        self.down_proj = nn.Conv3d(d, half, kernel_size=1)
        self.conv = nn.Conv3d(half, half, (3, 1, 1), padding=(1, 0, 0), groups=half)
        self.up_proj = nn.Conv3d(half, d, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, 1 + HW, D] -> the same, CLS passed through (upstream's return value)."""
        cls, x = x[:, :, :1], x[:, :, 1:]
        b, t, _, d = x.shape
        x = self.ln(x).permute(0, 3, 1, 2).reshape(b, d, t, self.side, self.side)
        x = self.up_proj(quick_gelu(self.conv(self.down_proj(x))))
        return torch.cat([cls, x.flatten(3).permute(0, 2, 3, 1)], dim=2)


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query_key_value = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # upstream's layout: [b, n, heads, 3, head_dim]
        qkv = self.query_key_value(x).reshape(b, n, self.heads, 3, d // self.heads)
        q, k, v = qkv.permute(3, 0, 2, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.dense(out.transpose(1, 2).reshape(b, n, d))


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        self.temporal = LocalTemporal(c)
        self.self_attn = VisionAttention(c)
        self.input_layernorm = LayerNormFp32(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = VisionMLP(c)
        self.post_attention_layernorm = LayerNormFp32(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if x.shape[1] > 1:
            x = x + self.temporal(x)
        x = x.flatten(0, 1)
        x = x + self.self_attn(self.input_layernorm(x))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x.unflatten(0, (b, -1))


class VisionEncoder(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(c) for _ in range(c.num_hidden_layers))


class VisionModel(nn.Module):
    def __init__(self, c: VisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(c)
        self.encoder = VisionEncoder(c)
        self.post_layernorm = LayerNormFp32(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> last hidden state [B, T, 1 + patches, D]."""
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


# ---- visual abstractor (MplugOwlVisualAbstractorModel)


class AbstractorMLP(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        hidden = c.intermediate_size
        if hidden != 2816:  # upstream: 2/3 of it, rounded up to a multiple of 256
            hidden = 256 * ((int(2 * hidden / 3) + 255) // 256)
        self.w1 = nn.Linear(c.hidden_size, hidden)
        self.w2 = nn.Linear(hidden, c.hidden_size)
        self.w3 = nn.Linear(c.hidden_size, hidden)
        self.ffn_ln = LayerNormFp32(hidden, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class AbstractorMultiHeadAttention(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.encoder_hidden_size, c.hidden_size)
        self.value = nn.Linear(c.encoder_hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        # all masks upstream builds here are zero (no padding): plain attention
        out = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(memory)), heads(self.value(memory))
        )
        return out.transpose(1, 2).flatten(2)


class AbstractorCrossOutput(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        self.out_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm2 = LayerNormFp32(c.hidden_size)  # eps 1e-5
        self.mlp = AbstractorMLP(c)

    def forward(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = residual + self.out_proj(attended)
        return x + self.mlp(self.norm2(x))


class AbstractorAttention(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        self.attention = AbstractorMultiHeadAttention(c)
        self.output = AbstractorCrossOutput(c)
        self.norm1 = LayerNormFp32(c.hidden_size)  # eps 1e-5
        self.normk = LayerNormFp32(c.hidden_size)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        # upstream: the residual is the *normed* queries, which also join the keys
        q = self.norm1(queries)
        memory = torch.cat([q, self.normk(frames)], dim=1)
        return self.output(self.attention(q, memory), q)


class AbstractorLayer(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        self.crossattention = AbstractorAttention(c)


class AbstractorEncoder(nn.Module):
    def __init__(self, c: AbstractorConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AbstractorLayer(c) for _ in range(c.num_hidden_layers))


class AbstractorModel(nn.Module):
    def __init__(self, c: AbstractorConfig, language_hidden_size: int) -> None:
        super().__init__()
        self.encoder = AbstractorEncoder(c)
        self.visual_fc = nn.Linear(c.hidden_size, language_hidden_size)
        self.temporal_visual_fc = nn.Linear(c.hidden_size, language_hidden_size)
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden_size))

    def forward(self, queries: torch.Tensor, temporal: torch.Tensor, frames: torch.Tensor):
        """queries, temporal [B, Q, Da]; frames [B, T, N, Dv] -> [B, Q + 1, D_text]."""
        n = queries.shape[1]
        x = torch.cat([queries, temporal], dim=1) if frames.shape[1] > 1 else queries
        memory = frames.flatten(1, 2)
        for layer in self.encoder.layers:
            x = layer.crossattention(x, memory)
        out = self.visual_fc(x[:, :n])
        if x.shape[1] > n:
            out = out + self.temporal_visual_fc(x[:, n:])
        return torch.cat([out, self.vit_eos.expand(out.shape[0], -1, -1).to(out.dtype)], dim=1)


# ---- the whole model


class MplugOwlForConditionalGeneration(nn.Module):
    def __init__(self, config: MplugOwlConfig) -> None:
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        a = config.abstractor
        self.vision_model = VisionModel(config.vision)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, a.hidden_size))
        self.temporal_query_tokens = nn.Parameter(
            torch.zeros(1, config.num_query_tokens, a.hidden_size)
        )
        self.abstractor = AbstractorModel(a, config.text.hidden_size)
        config.text._attn_implementation = "sdpa"
        self.language_model = LlamaForCausalLM(config.text)

    @property
    def video_tokens(self) -> int:
        """Language positions one video takes: the queries and vit_eos (upstream: 1 + 64)."""
        return self.config.num_query_tokens + 1

    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] normalised frames -> [B, 65, D_text]."""
        frames = self.vision_model(pixels)
        b = frames.shape[0]
        q = self.query_tokens.expand(b, -1, -1).to(frames.dtype)
        tq = self.temporal_query_tokens.expand(b, -1, -1).to(frames.dtype)
        return self.abstractor(q, tq, frames)

    def forward(self, video_pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, vocab]. Each row of `input_ids` holds one video: `video_tokens`
        positions of VIDEO_TOKEN, which take the video's features (upstream's splice); other
        negative ids are not supported (images)."""
        video_rows = (input_ids == VIDEO_TOKEN).sum(1)
        if (input_ids < 0).sum() != video_rows.sum() or (video_rows != self.video_tokens).any():
            raise ValueError(
                f"each sequence needs exactly {self.video_tokens} <|video|> positions (id "
                f"{VIDEO_TOKEN}) and no other negative ids; build them with the VideoPhy prompt."
            )
        embed = self.language_model.get_input_embeddings()
        x = embed(input_ids.clamp(min=0))
        feats = self.video_features(video_pixel_values.to(x.dtype))
        x = x.masked_scatter((input_ids == VIDEO_TOKEN)[..., None], feats.to(x.dtype))
        mask = torch.ones_like(input_ids)
        return self.language_model(inputs_embeds=x, attention_mask=mask).logits


# ---- loading


def load_state_dict(model: MplugOwlForConditionalGeneration, state: dict[str, torch.Tensor]):
    """Strict load of upstream's keys (rotary inv_freq ignored by name); one line naming the
    first wrong keys otherwise. Tensors are assigned (a meta-built model takes them as is)."""
    state = {k: v for k, v in state.items() if not IGNORED_KEYS.match(k)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}"
                if unexpected else ""]  # fmt: skip
        raise MplugOwlError(
            f"VideoCon-Physics state dict does not match mPLUG-Owl-Video's keys "
            f"({'; '.join(w for w in what if w)}); load the videophysics/videocon_physics "
            "checkpoint (the LoRA-merged model), not another layout."
        )
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise MplugOwlError(
            f"VideoCon-Physics weight {k} has shape {tuple(state[k].shape)}, the config asks "
            f"for {tuple(own[k].shape)}; the config.json and the weights are of different models."
        )
    model.load_state_dict(state, strict=True, assign=True)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: safetensors or torch .bin files, single or sharded."""
    from safetensors.torch import load_file

    def one(path: Path) -> dict[str, torch.Tensor]:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(one(folder / shard))
            return out
        return one(path)
    raise MplugOwlError(
        f"no weights in {folder} (none of {', '.join(WEIGHT_FILES)}); download them with "
        "`hf download videophysics/videocon_physics`."
    )


def build(config: MplugOwlConfig, device: Any = "cpu") -> MplugOwlForConditionalGeneration:
    """A randomly initialised model (tests, or before load_state_dict)."""
    with torch.device(device):
        return MplugOwlForConditionalGeneration(config)


def load_mplug_owl(
    folder: Path, dtype: torch.dtype, device: torch.device
) -> MplugOwlForConditionalGeneration:
    """The model of a checkpoint folder (config.json + weights), in eval mode on `device`."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = MplugOwlConfig.from_dict(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        model = MplugOwlForConditionalGeneration(config)
    load_state_dict(model, read_weights(folder))
    # Non-persistent buffers stay on meta after an assign-load: the rotary table is rebuilt
    # after the dtype cast so that inv_freq stays float32 (as 4.28.1's cached cos/sin were).
    model.language_model.model.rotary_emb = nn.Identity()
    model.to(device=device, dtype=dtype)
    with torch.device(device):
        model.language_model.model.rotary_emb = LlamaRotaryEmbedding(config.text)
    return model.eval()
