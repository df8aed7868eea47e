"""The distillation model: a `WorldModel` whose net is the few-step student, with the frozen
teacher and the critic ("fake score") beside it (spec/distillation.md §4; recipe in
framework/diffusion/distill.py, docs/distillation.md).

It follows the model protocol of the trainer unchanged (training_step, trainable_parameters,
parallelize, load_weights, flops_per_sample), so the stock trainer, checkpoints, resume and
sweeps run it. Checkpoints hold `net.*` (the student, in the official layout: any generation
code loads it as a plain model) and `fake_score.*` (the critic, for resume). The teacher comes
from `checkpoint.load_path` at every start, like a LoRA run's base, and is never written.

Generation builds this model with the student on the meta device (inference/loading.py); the
teacher and critic, copies of it, then stay on meta and are dropped when the weights are loaded,
so a student costs the memory of one net.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from framework.config import ConfigError
from framework.diffusion.conditioning import Condition
from framework.models.dit.parallelize import shard
from framework.models.world_model import WorldModel

CRITIC, TEACHER = "fake_score", "teacher"
_CRITIC_MARK = "_worldtune_distill_critic"  # set on the critic's parameters for the optimizer


class DistillWorldModel(WorldModel):
    """`net` is the student. `teacher` / `fake_score`: net config nodes, None = a copy of the
    student's architecture (both NVIDIA recipes use one architecture for all three, spec §0.1).
    The teacher's weights initialise the student and the critic (`load_weights`). The objective
    and sampler say the coordinates: framework/diffusion/distill.py for an EDM-coordinate
    (Predict2) teacher, distill_flow.py for a flow-matching (Predict2.5) one."""

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        objective: Any,
        sampler: Any,
        teacher: nn.Module | None = None,
        fake_score: nn.Module | None = None,
        frozen: Sequence[str] = (),
        **kw: Any,
    ) -> None:
        if kw.get("lora"):
            raise ConfigError("distillation trains the whole student; set model.lora=null.")
        super().__init__(net, tokenizer, objective, sampler, **kw)
        self.teacher = teacher if teacher is not None else copy.deepcopy(net)
        self.teacher.requires_grad_(False).eval()
        self.fake_score = fake_score if fake_score is not None else copy.deepcopy(self.teacher)
        self.fake_score.requires_grad_(True)
        # Modules of the student and the critic that stay as the teacher's (fnmatch patterns of
        # module names): Predict2.5 freezes the text projection `crossattn_proj` in both
        # (upstream `disable_proj_grad`, on by default). Their output is detached, so no gradient
        # reaches their weights (nor anything before them: meant for input projections). Their
        # parameters keep requires_grad, because the trainer writes no frozen parameter into
        # checkpoints (a LoRA base comes from load_path) and a student file must be complete.
        self.frozen = tuple(frozen)
        for part in (self.net, self.fake_score):
            for name, module in part.named_modules():
                if name and any(fnmatch.fnmatchcase(name, pat) for pat in self.frozen):
                    module.register_forward_hook(_detached)

    # ---- training protocol ---------------------------------------------------------------

    def training_step(self, batch: dict, step: int) -> tuple[Tensor, dict[str, float]]:
        """The DMD2 loss of the student or of the critic, by step (objective.is_student_step)."""
        if getattr(self, TEACHER, None) is None:
            raise ValueError("this distillation model was loaded for generation only.")
        x0 = self.latents(batch)
        b, dev = x0.shape[0], x0.device
        padding_mask = batch.get("padding_mask")
        n_cond = batch.get("num_conditional_frames")
        if isinstance(n_cond, Tensor):
            n_cond = int(n_cond.reshape(-1)[0])
        cond = Condition(
            gt=x0,
            num_frames=self.objective.num_conditional_frames(b, x0.shape[2], dev, n_cond),
            text=self.batch_text(batch),
            padding_mask=None if padding_mask is None else padding_mask.to(dev),
            fps=self._fps(batch, b, dev),
        )
        conditions = self.batch_conditions(batch)  # e.g. actions: every net takes them
        student, teacher, critic = (
            functools.partial(net, **conditions) if conditions else net
            for net in (self.net, self.teacher, self.fake_score)
        )
        self.teacher.eval()
        return self.objective.loss(student, teacher, critic, cond, step, self.sampler.sigmas())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student then critic parameters; the critic's are marked so `distill_adamw` gives
        them their own learning rate. Called after parallelize, so FSDP's sharded parameters
        are the ones marked."""
        for p in self.fake_score.parameters():
            setattr(p, _CRITIC_MARK, True)
        return [p for p in self.parameters() if p.requires_grad]

    def parallelize(self, mesh, parallel) -> None:
        """The family's checkpointing/compile/FSDP for each of the three nets (each its own FSDP
        root). DDP is refused: its reducer expects every parameter to get a gradient each step,
        and a distillation step moves either the student or the critic."""
        if parallel.strategy == "ddp":
            raise ConfigError(
                "distillation alternates student and critic steps, which DDP cannot reduce; "
                "set parallel.strategy=fsdp (or none on one process)."
            )
        super().parallelize(mesh, parallel)
        fsdp = parallel.strategy == "fsdp"
        for net in (self.fake_score, self.teacher):
            if self.family.parallelize is None and not hasattr(net, "units"):
                if fsdp:
                    shard(net, mesh)  # as WorldModel.parallelize does for such a net
                continue
            self.family.parallelize_net(
                net,
                mesh,
                activation_checkpointing=parallel.activation_checkpointing,
                compile=parallel.compile,
                fsdp=fsdp,
            )

    def flops_per_sample(self, batch: dict) -> float:
        """Training FLOPs per sample averaged over one student step and its critic steps: the
        family's figure is one forward and backward (3 forwards); a rollout of n steps adds n-1
        forwards (n cycles over 1..K), the DMD step a critic and a teacher forward (two with
        guidance) and the student's backward; a critic step a forward and a backward."""
        fwd = super().flops_per_sample(batch) / 3.0
        k = len(self.sampler.sigmas())
        rollout = (k + 1) / 2.0  # mean forwards of a rollout
        teacher = 2.0 if self.objective.guidance else 1.0
        student_step = rollout + 2.0 + 1.0 + teacher
        critic_step = rollout + 3.0
        freq = max(int(self.objective.student_update_freq), 1)
        return fwd * (student_step + (freq - 1) * critic_step) / freq

    # ---- weights -------------------------------------------------------------------------

    def load_weights(
        self,
        state_dict: Mapping[str, Tensor],
        *,
        ema: bool = False,
        ignore: Sequence[str] = (),
        merge_lora: dict | None = None,
        assign: bool = False,
    ) -> None:
        """A teacher file (a trained model, an official file: `net.*` only) initialises all three
        nets from its net; a distillation checkpoint (`net.*` + `fake_score.*`) gives the student
        and the critic. Built for generation (teacher on meta), only the student is loaded and
        the other two are dropped."""
        heads = {k.partition(".")[0] for k in state_dict}
        own = {CRITIC, TEACHER, f"{CRITIC}_ema", f"{TEACHER}_ema"}
        plain = {k: v for k, v in state_dict.items() if k.partition(".")[0] not in own}
        super().load_weights(plain, ema=ema, ignore=ignore, merge_lora=merge_lora, assign=assign)
        teacher = getattr(self, TEACHER, None)
        if teacher is None or _on_meta(teacher):
            del self.teacher, self.fake_score  # generation: the student alone
            return
        if CRITIC in heads:
            self.fake_score.load_state_dict(_part(state_dict, CRITIC), assign=assign)
            if TEACHER in heads:
                self.teacher.load_state_dict(_part(state_dict, TEACHER), assign=assign)
            return
        try:
            self.teacher.load_state_dict(self.net.state_dict(), strict=True)
            self.fake_score.load_state_dict(self.net.state_dict(), strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"the student is initialised from the teacher's weights, so model.net, "
                f"model.teacher and model.fake_score need one architecture ({err})"
            ) from None


def _detached(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    return output.detach()


def _part(state_dict: Mapping[str, Tensor], head: str) -> dict[str, Tensor]:
    prefix = f"{head}."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def distill_adamw(
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float = 0.01,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    critic_lr_scale: float = 0.2,
    fused: bool | None = None,
    master_weights: bool = False,
) -> torch.optim.Optimizer:
    """AdamW for a distillation run: the student at `lr`, the critic at `lr * critic_lr_scale`
    (Predict2.5: 1e-6 and 2e-7, spec §3.2), each split into decayed matrices and undecayed 1-D
    tensors as `framework.trainer.optim.adamw` does. Parameters without a gradient in a step (the
    net that did not train in it) are left alone by AdamW, moments and weight decay included."""
    if master_weights:
        raise ConfigError(
            "optim.master_weights is not supported for distillation; set it to false."
        )
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; check its requires_grad flags.")
    groups = []
    for critic in (False, True):
        mine = [p for p in params if getattr(p, _CRITIC_MARK, False) == critic]
        rate = lr * (critic_lr_scale if critic else 1.0)
        for group, wd in (([p for p in mine if p.ndim >= 2], weight_decay),
                          ([p for p in mine if p.ndim < 2], 0.0)):  # fmt: skip
            if group:
                groups.append({"params": group, "weight_decay": wd, "lr": rate})
    if fused is None:
        fused = all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(
        groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused, foreach=None if fused else True
    )
