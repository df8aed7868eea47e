"""Cosmos-Predict2.5 action-conditioned Video2World DiT (upstream
`ActionChunkConditionedMinimalV1LVGDiT`, docs/upstream/cosmos_predict2_5.md §6.2) and its family.

The Predict2.5 net plus two action embedders. The clip's actions [B, (T-1) k, D] (one per frame
transition, k = the tokenizer's temporal compression, 4 for the Wan VAE) are grouped k per latent
frame -> [B, T-1, k D]; each group goes through `action_embedder_B_D` (-> D) and
`action_embedder_B_3D` (-> 3 D); latent frame 0 gets a zero embedding, and every conditional
(given) latent frame gets none. The first is added to the timestep sinusoid before
`t_embedding_norm`, the second to the AdaLN-LoRA vector, both in fp32 (§6.2 "Injection"). The
family `cosmos2_5_action` declares `conditions=("actions",)`: the world model binds a batch's
`actions` to the net call. Importing this module registers it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.config import L
from framework.models.cosmos2_5.family import LORA_TARGETS
from framework.models.cosmos2_5.flops import flops_per_sample
from framework.models.cosmos2_5.layers import fp32_linear
from framework.models.cosmos2_5.net import IGNORED_CHECKPOINT_KEYS, Predict25DiT
from framework.models.dit.action import (
    ACTION_KEYS,
    action_embedders,
    load_action_lora_base,
    load_action_net,
    reset_action_embedders,
)
from framework.models.family import ModelFamily, StateDict, register_family

# Bridge (§6.2, §6.3): 7-dim actions, 4 per latent frame of the Wan VAE.
BRIDGE_ACTION_DIM = 7


class ActionChunkConditionedDiT(Predict25DiT):
    """`Predict25DiT` whose forward also takes `actions` [B, (T-1) * temporal_compression_ratio,
    action_dim] (T latent frames)."""

    def __init__(
        self,
        *args,
        action_dim: int = BRIDGE_ACTION_DIM,
        temporal_compression_ratio: int = 4,
        hidden_dim_in_action_embedder: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        own = dict(
            action_dim=action_dim,
            temporal_compression_ratio=temporal_compression_ratio,
            hidden_dim_in_action_embedder=hidden_dim_in_action_embedder,
        )
        self.config = {**self.config, **own}
        self.action_dim, self.actions_per_frame = action_dim, temporal_compression_ratio
        self.action_embedder_B_D, self.action_embedder_B_3D = action_embedders(
            action_dim * temporal_compression_ratio,
            self.model_channels,
            hidden_dim_in_action_embedder,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        reset_action_embedders(self)

    def forward(
        self,
        x_B_C_T_H_W: Tensor,
        timesteps_B_T: Tensor,
        crossattn_emb: Tensor,
        condition_video_input_mask_B_C_T_H_W: Tensor | None = None,
        padding_mask: Tensor | None = None,
        **conditions: Any,
    ) -> Tensor:
        actions = conditions.pop("actions", None)
        frames = x_B_C_T_H_W.shape[2] // self.patch_temporal
        mask = condition_video_input_mask_B_C_T_H_W
        # Given latent frames take no action (upstream multiplies by 1 - mask, §6.2).
        free = None if mask is None else 1.0 - mask[:, 0, :frames, 0, 0].float()
        return super().forward(
            x_B_C_T_H_W,
            timesteps_B_T,
            crossattn_emb,
            condition_video_input_mask_B_C_T_H_W=mask,
            padding_mask=padding_mask,
            action_emb=self.embed_actions(actions, frames, free),
            **conditions,
        )

    def embed_actions(self, actions: Tensor | None, frames: int, free: Tensor | None):
        """(emb [B, T, D], emb [B, T, 3D]) in fp32: zero for latent frame 0 and given frames."""
        want = (frames - 1) * self.actions_per_frame
        if actions is None or actions.ndim != 3 or actions.shape[1:] != (want, self.action_dim):
            got = "none" if actions is None else tuple(actions.shape)
            raise ValueError(
                f"this action-conditioned net needs actions [B, {want}, {self.action_dim}] for "
                f"{frames} latent frames ({self.actions_per_frame} per frame after the first); "
                f"got {got}. Use a dataset that yields them (docs/data.md, 'Actions')."
            )
        b = actions.shape[0]
        param = self.action_embedder_B_D.fc1.weight
        chunks = actions.to(param.dtype).reshape(b, frames - 1, -1)
        out = []
        for embedder in (self.action_embedder_B_D, self.action_embedder_B_3D):
            emb = embedder(chunks).float()
            emb = torch.cat([emb.new_zeros(b, 1, emb.shape[-1]), emb], dim=1)
            out.append(emb if free is None else emb * free[..., None])
        return tuple(out)

    def embed_time(self, timesteps: Tensor, dtype: torch.dtype, **conditions: Any):
        """Predict25DiT's fp32 timestep embedding with the action embeddings added: to the
        sinusoid before `t_embedding_norm`, and to the AdaLN-LoRA vector."""
        action_d, action_3d = conditions.pop("action_emb")
        if conditions:
            raise ValueError(
                f"{type(self).__name__} takes only actions, not {sorted(conditions)}; remove "
                "them from the model's conditions."
            )
        sinusoid = self.t_embedder[0](timesteps * self.timestep_scale)  # fp32
        mlp: Any = self.t_embedder[1]
        adaln_lora = fp32_linear(mlp.linear_2, F.silu(fp32_linear(mlp.linear_1, sinusoid)))
        return self.t_embedding_norm(sinusoid + action_d), adaln_lora + action_3d


def load_official(net: nn.Module, state_dict: StateDict, *, assign: bool = False) -> None:
    """Strict load of an action-conditioned file, or of the plain Predict2.5 file the recipe
    starts from (the action embedders then keep their init; framework/models/dit/action.py)."""
    load_action_net(net, state_dict, assign=assign, ignore=IGNORED_CHECKPOINT_KEYS)


def load_lora_base(net: nn.Module, state_dict: StateDict) -> None:
    """The LoRA base: the family's file or the plain Video2World one (no action embedders)."""
    load_action_lora_base(net, state_dict, ignore=IGNORED_CHECKPOINT_KEYS)


PREDICT2_5_ACTION = register_family(
    ModelFamily(
        name="cosmos2_5_action",
        net_classes=(ActionChunkConditionedDiT,),
        flops_per_sample=flops_per_sample,
        load_official=load_official,
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        # LoRA trains the action embedders fully (the base has none or the family's own).
        lora_trainable=ACTION_KEYS,
        load_base_into_lora=load_lora_base,
        lora_targets=LORA_TARGETS,
        objective=lambda: L("framework.diffusion.flow_matching.FlowMatchingObjective").full(),
        sampler=lambda: L("framework.diffusion.unipc.UniPCSampler").full(),
        conditions=("actions",),
    )
)
