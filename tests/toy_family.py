"""A second model family defined entirely in tests/: the proof that a family joins by added files.

`ToyNet` is a small conv net (not a DiT), `ToyEDMObjective` an EDM-style objective whose learned
`logvar` head is trainable state outside the net, `ToyEulerSampler` a first-order sampler. The
family object registers on import; `toy_family_job` is an experiment on a GR1-layout folder. The
test (tests/test_toy_family.py) trains, checkpoints, resumes, evaluates and generates with it
through the stock trainer, hooks and command lines, with `--module tests.toy_family`.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from experiments import blocks
from framework.config import L, experiment
from framework.data.dataset import VideoDataset
from framework.diffusion.conditioning import Condition, drop_text
from framework.models.family import ModelFamily, register_family

TEXT_DIM = 1024  # the small T5 that data_prep.synthetic writes has the official width


class ToyNet(nn.Module):
    """x [B,C,T,H,W] (+ condition mask channel) -> x-shaped output, with the noise level and the
    mean text embedding added as per-channel biases."""

    def __init__(self, channels: int, hidden: int = 32, text_dim: int = TEXT_DIM) -> None:
        super().__init__()
        self.inp = nn.Conv3d(channels + 1, hidden, 3, padding=1)
        self.mid = nn.Conv3d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv3d(hidden, channels, 3, padding=1)
        self.noise = nn.Linear(1, hidden)
        self.text = nn.Linear(text_dim, hidden)

    def forward(self, x: Tensor, c_noise: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        bias = (self.noise(c_noise.view(-1, 1)) + self.text(text.mean(1)))[..., None, None, None]
        h = torch.nn.functional.silu(self.inp(torch.cat([x, mask], 1)) + bias)
        return self.out(torch.nn.functional.silu(self.mid(h)) + h)


def flops_per_sample(net: ToyNet, t: int, h: int, w: int, text_len: int) -> float:
    convs = (net.inp, net.mid, net.out)
    macs = sum(c.weight.numel() for c in convs) * t * h * w
    return 3.0 * 2.0 * macs  # forward + backward ~ 3x forward


TOY = register_family(
    ModelFamily(
        name="toy_edm",
        net_classes=(ToyNet,),
        flops_per_sample=flops_per_sample,
        objective=lambda: L("tests.toy_family.ToyEDMObjective").full(),
        sampler=lambda: L("tests.toy_family.ToyEulerSampler").full(),
    )
)


class ToyEDMObjective:
    """EDM preconditioning (sigma_data 0.5), ln sigma ~ N(p_mean, p_std), the first latent frame
    given, and the uncertainty-weighted loss exp(-u) * edm + u, u = logvar(c_noise) learned."""

    def __init__(
        self, sigma_data: float = 0.5, p_mean: float = -0.5, p_std: float = 1.0, text_dropout=0.0
    ) -> None:
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.text_dropout = text_dropout
        self.logvar = nn.Sequential(nn.Linear(1, 8), nn.SiLU(), nn.Linear(8, 1))

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"logvar": self.logvar}

    def _scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def x0(self, net: ToyNet, x_sigma: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        b = x_sigma.shape[0]
        c_skip, c_out, c_in, c_noise = (s.view(b, 1, 1, 1, 1) for s in self._scalings(sigma))
        mask = cond.mask
        x_in = mask * cond.gt * c_in + (1 - mask) * x_sigma * c_in
        out = net(x_in, c_noise.view(b), cond.text, mask)
        return mask * cond.gt + (1 - mask) * (c_skip * x_sigma + c_out * out)

    def loss(
        self, net: ToyNet, x0: Tensor, cond: Condition, num_conditional_frames=None, generator=None
    ) -> tuple[Tensor, dict[str, float]]:
        b = x0.shape[0]
        sigma = (torch.randn(b, 1, device=x0.device) * self.p_std + self.p_mean).exp()
        n = torch.ones(b, dtype=torch.long, device=x0.device)
        cond = Condition(x0, n, drop_text(cond.text, self.text_dropout), cond.padding_mask)
        x_sigma = x0 + sigma.view(b, 1, 1, 1, 1) * torch.randn_like(x0)
        pred = self.x0(net, x_sigma, sigma, cond)
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        edm = (weight.view(b, 1, 1, 1, 1) * (pred - x0) ** 2).mean(dim=(1, 2, 3, 4))
        u = self.logvar(self._scalings(sigma)[3]).view(b)
        loss = (edm * torch.exp(-u) + u).mean()
        return loss, {"edm_loss": float(edm.mean().detach()), "logvar": float(u.mean().detach())}


class ToyEulerSampler:
    """First-order Euler on the EDM ODE over Karras sigmas, from seeded numpy noise."""

    def __init__(self, num_steps: int = 8, sigma_max: float = 20.0, sigma_min: float = 0.01):
        self.num_steps, self.sigma_max, self.sigma_min = num_steps, sigma_max, sigma_min

    def __call__(self, x0_fn, shape, seed: int = 0, *, num_steps=None, device="cpu") -> Tensor:
        n = num_steps or self.num_steps
        ramp = [i / max(n - 1, 1) for i in range(n)]
        hi, lo = self.sigma_max ** (1 / 7), self.sigma_min ** (1 / 7)
        sigmas = [(hi + r * (lo - hi)) ** 7 for r in ramp] + [0.0]
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(tuple(shape), generator=g) * sigmas[0]).to(device)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x0 = x0_fn(x, s)
            x = x0 + (x - x0) * (s_next / s) if s_next > 0 else x0
        return x


@experiment
def toy_family_job():
    """The toy family on a GR1-layout folder (TOY_DATA), pixel tokenizer, stock hooks."""
    net = L(ToyNet)(channels=12, hidden=32)
    tokenizer = L("framework.models.tokenizers.PixelTokenizer")(spatial=2)
    data_dir = os.environ.get("TOY_DATA", "datasets/toy")
    model = blocks.world_model(
        net, tokenizer, "toy_edm", 3, text_encoder=f"{data_dir}/text_encoder"
    )
    model.max_text_tokens, model.fps = 16, 8.0
    dataset = L("framework.data.dataset.VideoDataset")(
        dataset_dir=data_dir, num_frames=3, video_size=[16, 16]
    )
    data = blocks.loader(dataset, batch_size=2, num_workers=0)
    cfg = blocks.base(model, data, project="worldtune_tests", group="toy_family")
    cfg.optim.lr, cfg.optim.eps = 3e-3, 1e-8
    cfg.sched = blocks.lambda_linear(warm_up=1, cycle=100, f_start=1.0, f_max=1.0, f_min=1.0)
    cfg.train.update(max_steps=6, precision="fp32", ema={"enabled": True, "rate": 0.1})
    cfg.parallel.strategy = "none"
    cfg.checkpoint.save_iter = 3
    cfg.logging.every = 1
    cfg.hooks.eval = L("framework.hooks.evaluation.EvalHook")(num_items=1, num_steps=2, guidance=0)
    cfg.hooks.sample = L("framework.hooks.samples.SampleVideos")(every=3, num_items=1, num_steps=2)
    cfg.hooks.sample.guidance = 0.0
    return cfg


# ---- the toy family with its own text encoder and an action input ----------------------------
# A text encoder that is not T5 and a per-frame action input, both added here without an edit to
# framework/: the encoder is a config node, the dataset yields captions and `actions`, the
# family declares the input, and its net takes it as a keyword argument.


class ToyTextEncoder:
    """Deterministic byte-level features (no weights): byte b at position j gives
    sin(0.1 * (b + 1) * (k + 1) + j) in channel k; zeros past the prompt."""

    def __init__(self, dim: int = 16, max_length: int = 16) -> None:
        self.dim, self.max_length = dim, max_length

    def encode(self, prompts) -> tuple[Tensor, Tensor]:
        out = torch.zeros(len(prompts), self.max_length, self.dim)
        lengths = torch.zeros(len(prompts), dtype=torch.long)
        k = torch.arange(self.dim, dtype=torch.float32)
        for i, prompt in enumerate(prompts):
            data = list(prompt.encode())[: self.max_length]
            for j, b in enumerate(data):
                out[i, j] = torch.sin(0.1 * (b + 1) * (k + 1) + j)
            lengths[i] = len(data)
        return out, lengths


def clip_motion(video: Tensor) -> Tensor:
    """Actions of a uint8 clip [3,T,H,W]: the mean colour change of each frame transition,
    float32 [T-1, 3] (what a robot's action would move, read back from the pixels)."""
    v = video.float() / 255.0
    return ((v[:, 1:] - v[:, :-1]).mean(dim=(2, 3)) * 10.0).T.contiguous()


class ToyActionDataset(VideoDataset):
    """The GR1-layout clips with captions only (no T5 pickles: the model encodes them) and
    per-transition `actions` [T-1, 3]; held-out items carry theirs in `conditions`."""

    action_dim = 3

    def _load(self, index: int) -> dict:
        sample = super()._load(index)
        sample["actions"] = clip_motion(sample["video"])
        return sample

    def heldout_items(self, num_items: int, num_frames: int):
        # The actions span the whole clip the model generates, however few frames are given.
        items = super().heldout_items(num_items, max(num_frames, self.num_frames))
        for item in items:
            item.conditions = {"actions": clip_motion(item.video[0, :, : self.num_frames])[None]}
            item.video = item.video[:, :, :num_frames]
        return items


class ToyActionNet(ToyNet):
    """ToyNet plus an action embedding added to frame t >= 1 from the action of transition t-1."""

    def __init__(self, channels: int, hidden: int = 32, text_dim: int = 16, action_dim: int = 3):
        super().__init__(channels, hidden, text_dim)
        self.action = nn.Linear(action_dim, hidden)

    def forward(self, x: Tensor, c_noise: Tensor, text: Tensor, mask: Tensor, actions: Tensor):
        b, _, t = x.shape[:3]
        per_frame = torch.zeros(b, t, self.action.out_features, device=x.device, dtype=x.dtype)
        per_frame[:, 1:] = self.action(actions[:, : t - 1].to(x.dtype))
        bias = (self.noise(c_noise.view(-1, 1)) + self.text(text.mean(1)))[..., None, None, None]
        bias = bias + per_frame.permute(0, 2, 1)[..., None, None]
        h = torch.nn.functional.silu(self.inp(torch.cat([x, mask], 1)) + bias)
        return self.out(torch.nn.functional.silu(self.mid(h)) + h)


# A subclass of ToyNet: family_of must pick this family (nearest in the MRO), not toy_edm's.
TOY_ACTION = register_family(
    ModelFamily(
        name="toy_action",
        net_classes=(ToyActionNet,),
        flops_per_sample=flops_per_sample,
        objective=lambda: L("tests.toy_family.ToyEDMObjective").full(),
        sampler=lambda: L("tests.toy_family.ToyEulerSampler").full(),
        conditions=("actions",),
    )
)


@experiment
def toy_action_job():
    """The toy family with the byte-level text encoder (captions encoded online) and actions."""
    cfg = toy_family_job()
    cfg.job.group = "toy_action"
    cfg.model.net = L(ToyActionNet)(channels=12, hidden=32, text_dim=16, action_dim=3)
    cfg.model.text_encoder = L(ToyTextEncoder)(dim=16, max_length=16)
    cfg.data.dataset = L(ToyActionDataset)(
        dataset_dir=cfg.data.dataset.dataset_dir,
        num_frames=3,
        video_size=[16, 16],
        text_embeddings=False,
    )
    return cfg
