"""Action embedders of the action-conditioned Cosmos DiTs, shared by the Predict2 and Predict2.5
action nets (docs/upstream/cosmos_predict2_5.md §6.2, §6.6), and the loader that starts them from a
plain Video2World checkpoint.

Upstream adds an action embedding to the timestep embedding (before its RMSNorm) and another to the
AdaLN-LoRA vector; both come from a two-layer MLP with the official names `fc1`, `fc2` (bias on,
GELU tanh in between, dropout 0), so the keys are `action_embedder_B_D.fc{1,2}.{weight,bias}` and
`action_embedder_B_3D.fc{1,2}.{weight,bias}`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from framework.models.dit import lora as dit_lora
from framework.models.dit.state_dict import check_state_dict, matches, net_state_dict

log = logging.getLogger(__name__)

ACTION_KEYS = ("action_embedder_B_D.*", "action_embedder_B_3D.*")


class ActionMlp(nn.Module):
    """Upstream's `Mlp`: fc1 (bias) -> GELU(tanh) -> fc2 (bias); its dropouts are p=0."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.activation = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))

    def reset_parameters(self) -> None:
        """torch's Linear init, which upstream's Mlp gets when built on a real device. Upstream's
        post-training builds the net on the meta device and never initialises these (its
        `init_weights` does not know them; spec §8 item 3), so fine-tuning from the base model
        started them from uninitialised memory; ours are always initialised."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()


def action_embedders(in_features: int, model_channels: int, hidden: int | None = None):
    """(action_embedder_B_D, action_embedder_B_3D): in -> hidden (default 4 D) -> D and 3 D."""
    hidden = hidden or 4 * model_channels
    return (
        ActionMlp(in_features, hidden, model_channels),
        ActionMlp(in_features, hidden, 3 * model_channels),
    )


def reset_action_embedders(net: nn.Module) -> None:
    """torch's Linear init for the action embedders after the net's own init (which would give
    them the trunk's trunc-normal init; upstream leaves them uninitialised, a bug not copied)."""
    for name in ("action_embedder_B_D", "action_embedder_B_3D"):
        embedder = getattr(net, name, None)
        if embedder is not None:
            embedder.reset_parameters()


def load_action_net(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    assign: bool = False,
    ignore: Iterable[str] = (),
) -> None:
    """Strict load of an action net's official file, or of the plain Video2World file the
    action recipes start from (upstream: `strict_resume=False`): a file with none of the action
    embedder keys loads everything else strictly and keeps the embedders' initial values. A file
    with only some of them, or any other mismatch, fails naming the keys."""
    sd = net_state_dict(state_dict, ignore=ignore)
    has_actions = any(matches(k, ACTION_KEYS) for k in sd)
    if has_actions:
        check_state_dict(net, sd)
        net.load_state_dict(sd, strict=True, assign=assign)
        return
    check_state_dict(net, sd, may_miss=lambda key: matches(key, ACTION_KEYS))
    if assign:
        raise ValueError(
            "the checkpoint has no action embedders (action_embedder_B_D.*), so it is a plain "
            "Video2World file; generate from a checkpoint trained with actions."
        )
    net.load_state_dict(sd, strict=False)
    log.warning(
        "the checkpoint has no action embedders (a plain Video2World file): "
        "action_embedder_B_D/_B_3D keep their initial values, as the action recipes start"
    )


def load_action_lora_base(
    net: nn.Module, state_dict: Mapping[str, Tensor], *, ignore: Iterable[str] = ()
) -> None:
    """`load_action_net` for a LoRA-wrapped action net: the base weights go under
    `base_layer`; a plain Video2World base without action embedders leaves them at their
    initial values (they train with the adapters: the family's `lora_trainable`)."""
    sd = net_state_dict(state_dict, ignore=ignore)
    if any(matches(k, ACTION_KEYS) for k in sd):
        dit_lora.load_base_into_lora(net, sd)
        return
    dit_lora.load_base_into_lora(net, sd, may_miss=lambda key: matches(key, ACTION_KEYS))
    log.warning(
        "the LoRA base has no action embedders (a plain Video2World file): "
        "action_embedder_B_D/_B_3D keep their initial values and train with the adapters"
    )
