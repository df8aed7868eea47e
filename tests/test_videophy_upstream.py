"""The VideoCon-Physics port against upstream's own code, where a VideoPhy checkout is at hand.

Set VIDEOPHY_UPSTREAM to a checkout of github.com/Hritikbansal/videophy (checked at 01d366c9):
its `videocon/training/pipeline_video/` files are imported as they are, with stand-ins only for
what they import but this project does not install (decord, flash-attn, icecream, h5py, the
training `utils`) or what transformers 5.x dropped (`find_pruneable_heads_and_indices`, unused at
inference). The LLaMA inside upstream's model is then the installed transformers' as in ours.
No upstream code is part of this repository; without the variable the tests skip.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.evaluation import videophy as V
from tests.test_videophy import ABSTRACTOR, VISION, folder, judge  # noqa: F401  (fixtures)

ROOT = os.environ.get("VIDEOPHY_UPSTREAM")
pytestmark = pytest.mark.skipif(
    not ROOT, reason="set VIDEOPHY_UPSTREAM to a videophy checkout to compare with upstream"
)
FRAMES: dict[str, np.ndarray] = {}  # what the stand-in decord decodes, by path


class FakeVideoReader:
    """decord.VideoReader over in-memory uint8 [T, 224, 224, 3] frames (already decord's size:
    its FFmpeg resize is not part of this check)."""

    def __init__(self, path, height=None, width=None):
        self.frames = FRAMES[path]
        assert self.frames.shape[1:3] == (height, width)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return types.SimpleNamespace(asnumpy=lambda: self.frames[i])


@pytest.fixture(scope="module")
def upstream():
    pipeline = Path(ROOT) / "videocon/training/pipeline_video"
    import transformers.pytorch_utils as pu

    if not hasattr(pu, "find_pruneable_heads_and_indices"):
        pu.find_pruneable_heads_and_indices = None  # pruning only; never called here
    stubs = {"decord": {"VideoReader": FakeVideoReader}, "icecream": {"ic": print},
             "h5py": {}, "pandas": {}, "utils": {"get_args": lambda: None}}  # fmt: skip
    saved = {name: sys.modules.get(name) for name in [*stubs, "mplug_owl_video"]}
    for name, attrs in stubs.items():
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
        stub.__dict__.update(attrs)
        sys.modules[name] = stub
    package = types.ModuleType("mplug_owl_video")  # without its __init__ (a lazy module)
    package.__path__ = [str(pipeline / "mplug_owl_video")]
    sys.modules["mplug_owl_video"] = package
    sys.path.insert(0, str(pipeline / "data_utils"))
    try:
        modeling = importlib.import_module("mplug_owl_video.modeling_mplug_owl")
        _restore_mixin(modeling.MplugOwlPreTrainedModel)
        yield types.SimpleNamespace(
            config=importlib.import_module("mplug_owl_video.configuration_mplug_owl"),
            model=modeling,
            processing=importlib.import_module("mplug_owl_video.processing_mplug_owl"),
            dataset=importlib.import_module("xgpt3_dataset"),
            get_entail=_function(pipeline / "entailment_inference.py", "get_entail"),
            constants=_constants(Path(ROOT) / "utils/constants.py"),
        )
    finally:
        sys.path.remove(str(pipeline / "data_utils"))
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _restore_mixin(cls: type) -> None:
    """transformers 4.28.1's ModuleUtilsMixin methods the abstractor calls (gone in 5.x):
    the mask (1 - mask) * dtype.min broadcast to [B, 1, 1, S], and no head mask."""

    def invert_attention_mask(self, mask):
        ext = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
        ext = ext.to(dtype=self.dtype)
        return (1.0 - ext) * torch.finfo(self.dtype).min

    if not hasattr(cls, "invert_attention_mask"):
        cls.invert_attention_mask = invert_attention_mask
    if not hasattr(cls, "get_head_mask"):
        cls.get_head_mask = lambda self, head_mask, n: [None] * n


def _function(path: Path, name: str):
    """One function of a script that parses arguments at import (entailment_inference.py)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {"torch": torch, "softmax": torch.nn.Softmax(dim=2)}
    exec(compile(ast.Module([node], []), str(path), "exec"), scope)
    return scope[name]


def _constants(path: Path) -> dict:
    scope: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), scope)
    return scope


def test_prompt_is_upstreams(upstream):
    assert V.PROMPT_PHYSICS == upstream.constants["PROMPT_PHYSICS"]


def test_model_logits_equal_upstreams(upstream, judge):  # noqa: F811
    # float32 on both sides (from_config would build the LLaMA in the config's bf16)
    text = {k: v for k, v in judge.model.config.text.to_dict().items() if "dtype" not in k}
    cfg = upstream.config.MplugOwlConfig(
        vision_config=VISION, visual_abstractor_config=ABSTRACTOR, text_config=text
    )
    theirs = upstream.model.MplugOwlForConditionalGeneration(cfg).eval()
    theirs.load_state_dict(judge.model.state_dict(), strict=True)  # upstream's keys, strictly
    g = torch.Generator().manual_seed(3)
    px = torch.randn(1, 3, 32, 224, 224, generator=g)
    ids = torch.tensor([judge.ids + [0] * 8])  # padded as upstream's dataset pads
    with torch.no_grad():
        want = theirs(
            pixel_values=None, video_pixel_values=px, input_ids=ids, num_images=torch.tensor([0]),
            num_videos=torch.tensor([1]), labels=None,
        )["logits"]  # fmt: skip
        got = judge.model(px, ids)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (got - want).abs().max()
    # the score: upstream's get_entail on its logits vs ours, yes/no ids of the tokenizer
    tok = types.SimpleNamespace(
        encode=lambda s, add_special_tokens=False: [{"Yes": judge.yes, "No": judge.no}[s]],
        pad_token_id=0,
    )
    theirs_score = float(upstream.get_entail(want.float(), ids, tok)[0])
    ours = V.entailment(got[0, V.answer_index(ids[0].tolist(), 0)], judge.yes, judge.no)
    assert ours == pytest.approx(theirs_score, abs=1e-5)


def test_frames_equal_upstreams_processor(upstream):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    rng = np.random.default_rng(0)
    for n in (20, 93):
        frames = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
        FRAMES[f"clip{n}.mp4"] = frames
        pre = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size=224)
        # upstream's __init__ body without ProcessorMixin's (5.x's checks its attributes)
        proc = object.__new__(upstream.processing.MplugOwlProcessor)
        proc.image_processor, proc.tokenizer, proc.tokens_to_generate = pre, None, 0
        want = proc(videos=[f"clip{n}.mp4"], num_frames=32, return_tensors="pt")
        assert torch.allclose(V.pixels(frames), want.float(), atol=1e-6)


def test_token_ids_equal_upstreams_dataset(upstream, judge):  # noqa: F811
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(judge.folder / "tokenizer.model"))

    class Tok:  # transformers 4.28.1's slow LlamaTokenizer: sentencepiece on each chunk
        bos_token_id, eos_token_id, pad_token_id = sp.bos_id(), sp.eos_id(), 0

        def __call__(self, text, add_special_tokens=False):
            assert not add_special_tokens
            return {"input_ids": sp.encode(text)}

    tok = Tok()
    ds = types.SimpleNamespace(
        tokenizer=tok, media_tokens={"<image>": -1, "<|video|>": -2},
        media_lengths={"<image>": 65, "<|video|>": 65},
    )  # fmt: skip
    out = upstream.dataset.MultiModalDataset._extract_text_token_from_conversation(
        ds, V.PROMPT_PHYSICS, 256, 0
    )
    ids = out["input_ids"].tolist()
    n = len(judge.ids)
    assert ids[:n] == judge.ids and set(ids[n:]) == {0} and len(ids) == 257
    assert V.answer_index(ids, 0) == n - 1
