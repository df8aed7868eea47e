"""Cosmos-Predict2 action-conditioned Video2World DiT (upstream `ActionConditionedMinimalV1LVGDiT`,
cosmos-predict2@661da47 `models/video2world_action_dit.py`; docs/upstream/cosmos_predict2_5.md
§6.6) and its family.

The Predict2 net plus two action embedders. Unlike Predict2.5's chunked net, the clip's whole
action sequence [B, 12, 7] is flattened to one vector (`action_dim` = 84) and embedded once; that
embedding is added to every latent frame's timestep sinusoid (before `t_embedding_norm`) and
AdaLN-LoRA vector, the conditional frame included. Same module names and MLP sizes (hidden 4 D,
GELU tanh) as 2.5, so the released `Cosmos-Predict2-2B-Sample-Action-Conditioned` file loads
strictly. The family `cosmos2_action` declares `conditions=("actions",)`. Importing this module
registers it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from framework.config import L
from framework.models.cosmos2.flops import flops_per_sample
from framework.models.cosmos2.lora import DEFAULT_TARGETS
from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS, MiniTrainDiT
from framework.models.dit.action import (
    ACTION_KEYS,
    action_embedders,
    load_action_lora_base,
    load_action_net,
    reset_action_embedders,
)
from framework.models.family import ModelFamily, StateDict, register_family

# Bridge (§6.6): 12 actions of 7 dims flattened.
BRIDGE_ACTION_DIM = 7 * 12


class ActionConditionedDiT(MiniTrainDiT):
    """`MiniTrainDiT` whose forward also takes `actions` [B, T_a, D] with T_a * D = action_dim."""

    def __init__(self, *args, action_dim: int = BRIDGE_ACTION_DIM, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config = {**self.config, "action_dim": action_dim}
        self.action_dim = action_dim
        self.action_embedder_B_D, self.action_embedder_B_3D = action_embedders(
            action_dim, self.model_channels
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
        if actions is None or actions.ndim != 3 or actions[0].numel() != self.action_dim:
            got = "none" if actions is None else tuple(actions.shape)
            raise ValueError(
                f"this action-conditioned net needs actions [B, T_a, D] with T_a * D = "
                f"{self.action_dim}; got {got}. Use a dataset that yields them (docs/data.md, "
                "'Actions') or set model.net.action_dim."
            )
        return super().forward(
            x_B_C_T_H_W,
            timesteps_B_T,
            crossattn_emb,
            condition_video_input_mask_B_C_T_H_W=condition_video_input_mask_B_C_T_H_W,
            padding_mask=padding_mask,
            actions=actions,
            **conditions,
        )

    def embed_time(self, timesteps: Tensor, dtype: torch.dtype, **conditions: Any):
        """The Predict2 timestep embedding with one action embedding [B, 1, D] / [B, 1, 3D]
        added to every frame's sinusoid (before the norm) and AdaLN-LoRA vector."""
        actions = conditions.pop("actions")
        if conditions:
            raise ValueError(
                f"{type(self).__name__} takes only actions, not {sorted(conditions)}; remove "
                "them from the model's conditions."
            )
        flat = actions.reshape(actions.shape[0], 1, -1).to(dtype)
        sinusoid = self.t_embedder[0](timesteps).to(dtype)
        emb, adaln_lora = self.t_embedder[1](sinusoid)
        emb = emb + self.action_embedder_B_D(flat)
        adaln_lora = adaln_lora + self.action_embedder_B_3D(flat)
        return self.t_embedding_norm(emb), adaln_lora


def load_official(net: nn.Module, state_dict: StateDict, *, assign: bool = False) -> None:
    """Strict load of an action-conditioned file, or of a plain Predict2 Video2World file (the
    action embedders then keep their init; framework/models/dit/action.py)."""
    load_action_net(net, state_dict, assign=assign, ignore=IGNORED_CHECKPOINT_KEYS)


def load_lora_base(net: nn.Module, state_dict: StateDict) -> None:
    """The LoRA base: the family's file or the plain Video2World one (no action embedders)."""
    load_action_lora_base(net, state_dict, ignore=IGNORED_CHECKPOINT_KEYS)


PREDICT2_ACTION = register_family(
    ModelFamily(
        name="cosmos2_action",
        net_classes=(ActionConditionedDiT,),
        flops_per_sample=flops_per_sample,
        load_official=load_official,
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        # LoRA trains the action embedders fully (the base has none or the family's own).
        lora_trainable=ACTION_KEYS,
        load_base_into_lora=load_lora_base,
        extra_checkpoint_keys=("logvar.*",),
        lora_targets=DEFAULT_TARGETS,
        objective=lambda: L("framework.diffusion.rectified_flow.RectifiedFlowObjective").full(),
        sampler=lambda: L("framework.diffusion.samplers.MultistepSampler").full(),
        conditions=("actions",),
    )
)
