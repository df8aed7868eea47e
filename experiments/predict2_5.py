"""Cosmos-Predict2.5 Video2World post-training: the current upstream GR00T GR1 recipe, its LoRA
variant, and a tiny CPU member of the family.

Upstream names its 2.5 GR00T experiment exactly as Predict2's
(`predict2_video2world_training_2b_groot_gr1_480`); that bare name stays Predict2's
(`groot_gr1_480`, experiments/groot.py), and the 2.5 recipe answers to `predict2_5_groot_gr1_480`
and to upstream's own "2p5" spelling `predict2p5_video2world_training_2b_groot_gr1_480`.

Weights: `hf download nvidia/Cosmos-Predict2.5-2B --local-dir
checkpoints/nvidia/Cosmos-Predict2.5-2B`.
Values are upstream's (docs/upstream/cosmos_predict2_5.md §5, §6).

Text: the released nets take Reason1 features [512, 100352] (§2). As upstream trains, the GR00T
recipes encode every batch's captions online with the Reason1 text encoder
(framework/models/text/reason1.py; `hf download nvidia/Cosmos-Reason1-7B --local-dir
checkpoints/nvidia/Cosmos-Reason1-7B`), so the GR1 folder needs videos and metas only. The tiny
member uses the synthetic set's T5-style embeddings through a projection sized for them.
"""

from __future__ import annotations

from omegaconf import DictConfig

from experiments import blocks
from experiments.tiny import tiny_gr1
from framework.config import L, experiment

HUB = "nvidia/Cosmos-Predict2.5-2B"
# The pre-trained 2B file: the GR00T recipe's init (§1.6, §5.2).
PRETRAINED_2B = "base/pre-trained/d20b7120-df3e-4911-919d-db6e08bad31c_ema_bf16.pt"
NET = "framework.models.cosmos2_5.net.Predict25DiT"
REASON1_CHANNELS = 100352  # 28 Reason1-7B layers x 3584 (§2)


def predict2_5_checkpoint(file: str = PRETRAINED_2B) -> str:
    """Where `hf download nvidia/Cosmos-Predict2.5-2B` puts a file."""
    return f"{blocks.CHECKPOINTS}/{HUB}/{file}"


def predict2_5_net(size: str = "2B", **overrides) -> DictConfig:
    from framework.models.cosmos2_5.net import net_config

    return L(NET)(**{**net_config(size), **overrides})


def predict2_5_model(net: DictConfig, tokenizer: DictConfig, state_t: int = 24, **kw) -> DictConfig:
    """Predict2.5 Video2World: flow matching and UniPC (§3, §4) around the net."""
    import framework.models.cosmos2_5  # noqa: F401  (registers the family)

    return blocks.world_model(net, tokenizer, "cosmos2_5", state_t, **kw)


@experiment(
    aliases=["predict2p5_video2world_training_2b_groot_gr1_480"], job_name="2b_groot_gr1_480"
)
def predict2_5_groot_gr1_480():
    """Predict2.5 2B fine-tune on GR1 (the bare upstream name is Predict2's groot_gr1_480).

    Upstream's 2.5 GR00T recipe; `predict2_video2world_training_2b_groot_gr1_480` without the
    "p5" runs the Predict2 recipe, as it did before Predict2.5 existed here."""
    vae = L("framework.models.tokenizers.WanVAETokenizer")(
        path=predict2_5_checkpoint("tokenizer.pth")
    )
    model = predict2_5_model(predict2_5_net("2B"), vae, state_t=24)
    model.text_encoder = L("framework.models.text.reason1.Reason1TextEncoder")(
        path_or_hub_id=f"{blocks.CHECKPOINTS}/nvidia/Cosmos-Reason1-7B", max_length=512
    )
    # An empty caption or prompt is Reason1's embedding of "", as upstream: it encodes every
    # caption online, "" included, in training and generation alike; only caption dropout
    # gives zeros (docs/training.md, "Empty captions").
    model.empty_prompt = "encode"
    gr1 = blocks.gr1_dataset(num_frames=93, video_size=(432, 768), text_embeddings=False)
    data = blocks.loader(gr1, num_workers=4)
    cfg = blocks.base(model, data, "cosmos_predict_v2p5", "video2world")
    cfg.optim = blocks.optim(lr=2**-14.5, weight_decay=0.001, betas=(0.9, 0.999))
    # Peak never reached in 1000 steps (f_max 0.5 at step 1000): upstream's values (§8 item 6).
    cfg.sched = blocks.lambda_linear(warm_up=1000, cycle=100_000, f_max=0.5, f_min=0.2)
    cfg.train.max_steps = 1000
    cfg.train.grad_clip = 0.1
    cfg.train.ema.enabled = True  # power EMA rate 0.1, fp32 (§5.2)
    cfg.logging.every = 100
    cfg.parallel.shard_size = 8
    cfg.parallel.activation_checkpointing = "selective"  # upstream: SAC keeping attention
    cfg.parallel.compile = True
    cfg.checkpoint.save_iter = 200
    cfg.checkpoint.format = "dcp"
    cfg.checkpoint.load_path = predict2_5_checkpoint()
    return cfg


@experiment(job_name="2b_groot_gr1_480_precomputed")
def predict2_5_groot_gr1_480_precomputed():
    """Predict2.5 2B on GR1 from Reason1 features on disk (python -m data_prep.text_embed).

    Each caption's [512, 100352] features are read from reason1/<stem>.pickle (98 MiB each)
    instead of running Reason1-7B in every step; docs/data.md says when that pays off. The
    encoder stays configured for prompts (sample videos, generation), built only if used."""
    cfg = predict2_5_groot_gr1_480()
    cfg.data.dataset.text_embeddings = True
    cfg.data.dataset.embedding_dir = "reason1"
    cfg.data.dataset.text_dim = REASON1_CHANNELS
    return cfg


@experiment(job_name="2b_groot_gr1_480_lora")
def predict2_5_groot_gr1_480_lora():
    """Predict2.5 2B LoRA (rank 32, alpha 32, upstream's targets) on GR1."""
    cfg = predict2_5_groot_gr1_480()
    cfg.model.lora = {"rank": 32, "alpha": 32, "targets": None}  # the family's targets (§6)
    # Upstream's 2.5 LoRA recipe: uniform over 0/1/2 given frames, 2000 warm-up steps (§6).
    cfg.model.objective.conditional_frames_probs = [0.333, 0.333, 0.334]
    cfg.sched.warm_up_steps = [2000]
    return cfg


@experiment
def tiny_predict2_5_gr1():
    """CPU: tiny Predict2.5 DiT (flow matching, UniPC) on the synthetic GR1-layout clips."""
    cfg = tiny_gr1()
    old = cfg.model.net
    width, depth = old.model_channels, old.num_blocks
    net = predict2_5_net(
        model_channels=width,
        num_blocks=depth,
        num_heads=old.num_heads,
        in_channels=old.in_channels,
        out_channels=old.out_channels,
        crossattn_emb_channels=width,
        crossattn_proj_in_channels=1024,  # the synthetic set's T5-style embeddings
    )
    model = predict2_5_model(net, cfg.model.tokenizer, state_t=cfg.model.state_t)
    for key in ("text_encoder", "max_text_tokens", "fps"):
        model[key] = cfg.model[key]
    # As tiny_gr1: generation conditions on one frame and runs without guidance, so train on
    # exactly one given frame and keep every caption.
    model.objective.conditional_frames_probs = [0.0, 1.0]
    model.objective.text_dropout = 0.0
    cfg.model = model
    return cfg
