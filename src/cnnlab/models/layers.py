"""The small layer vocabulary every family shares, and shape helpers for any input size.

* :class:`ConvNormAct` - convolution, optional batch norm, optional activation (the post-activation
  unit of AlexNet, VGG, GoogLeNet, ResNet); :class:`NormActConv` - the pre-activation unit
  (He et al. 2016, DenseNet).
* :class:`ClassifierHead` - global pooling (optional), flatten, dropout, linear.
* :class:`ClassifierModel` - base class: ``forward = forward_head(forward_features(x))``; auxiliary
  outputs only through :meth:`ClassifierModel.forward_aux`.
* :class:`SizedFrom` - what a classifier sized from the input size was built for; the model checks the
  map reaching it before it runs, so another input size is one clear :class:`UsageError`, not torch's
  ``mat1 and mat2 shapes cannot be multiplied`` (or, when the flattened widths happen to agree, a
  silently wrong answer).
* :func:`feature_shape`, :func:`smallest_input_size` - shapes derived on the meta device, so heads
  sized from the input (the lecture nets' ``fc``, VGG's ``fc6``) work for any input size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnlab.errors import InputSizeError, InputTooSmallError, UsageError, unknown_choice

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (``relu``, ``gelu`` ...); ``None`` gives identity."""
    if name is None:
        return nn.Identity()
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise unknown_choice("activation", name, _ACTIVATIONS) from None


def check_choice(kind: str, value: object, choices: Sequence[object]) -> object:
    """``value`` if it is one of ``choices``, else a :class:`UsageError` naming ``kind`` and listing them."""
    if value not in choices:
        raise unknown_choice(kind, str(value), [str(c) for c in choices])
    return value


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; a pair stays a pair."""
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def same_padding(kernel_size: int | Sequence[int], dilation: int = 1) -> tuple[int, int]:
    """Padding that keeps the spatial size at stride 1 for odd kernels: ``(k - 1) // 2`` per side."""
    kh, kw = pair(kernel_size)
    return ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)


class ConvNormAct(nn.Sequential):
    """conv -> [batch norm] -> [activation], named ``conv``, ``bn``, ``act``.

    ``padding=None`` keeps the size at stride 1 (``(k - 1) // 2``); ``bias`` defaults to
    "only without norm", since a bias before batch norm is cancelled by its mean.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        norm: bool = False,
        act: str | None = "relu",
        bias: bool | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        padding = same_padding(kernel_size) if padding is None else padding
        bias = (not norm) if bias is None else bias
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=bias)
        if norm:
            self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps)
        if act is not None:
            self.act = make_activation(act)


class NormActConv(nn.Sequential):
    """batch norm -> activation -> conv: the pre-activation unit (He et al. 2016 Fig. 4e, DenseNet)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        act: str | None = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        padding = same_padding(kernel_size) if padding is None else padding
        self.bn = nn.BatchNorm2d(in_chs)
        self.act = make_activation(act)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=bias)


class ClassifierHead(nn.Module):
    """[global average pool] -> flatten -> [dropout] -> linear, returning logits.

    ``pool=False`` flattens the feature map as it is (heads sized from the input, as in the
    lecture nets and VGG's first FC layer).
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0, pool: bool = True):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool else nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits, or with ``pre_logits`` the embedding ``fc`` takes (pooled, flattened, after dropout)."""
        x = self.drop(self.flatten(self.pool(x)))
        return x if pre_logits else self.fc(x)

    def flat_layers(self) -> list[nn.Module] | None:
        """The layers after the flatten of a map as it is (``pool=False``); None when the head pools globally."""
        return None if isinstance(self.pool, nn.AdaptiveAvgPool2d) else [self.drop, self.fc]


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class SizedFrom:
    """What a classifier whose first linear layer is sized from the input was built for.

    ``img_size`` is the input (H, W) the model was built for and ``feature_shape`` the map (C, H, W)
    the classifier's first linear layer flattens at that size. ``window`` is a fixed ``(kernel, stride)``
    pooling between the checked map and that layer (GoogLeNet's auxiliary 5x5/3 average pool, Szegedy
    et al. 2015 Sec. 5), so every map that pools to the same grid is accepted. ``any_size_option``
    names the builder option that frees the input size (``adaptive_pool=True``), shown in the error;
    ``name`` names the network when it was not built by :func:`~cnnlab.models.create_model` (which
    sets ``model_name``).
    """

    img_size: tuple[int, int]
    feature_shape: tuple[int, int, int]
    what: str = "its classifier"
    window: tuple[int, int] = (1, 1)
    any_size_option: str | None = None
    name: str = ""

    def grid(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The (C, H, W) a map of ``shape`` gives the linear layer, through ``window``."""
        k, s = self.window
        c, *hw = shape
        return (c, *((n - k) // s + 1 for n in hw))

    def accepts(self, shape: Sequence[int]) -> bool:
        """Whether a map of ``shape`` (C, H, W) gives the classifier the grid it was sized for."""
        return (
            shape == self.feature_shape if self.window == (1, 1) else self.grid(shape) == self.feature_shape
        )

    def error(self, name: str, got_input: Sequence[int], got_map: Sequence[int]) -> InputSizeError:
        """The one-line error for an input of another size: what was built, what came, and the fix."""
        c, h, w = got_input
        bh, bw = self.img_size
        fix = f"build it with img_size={h if h == w else (h, w)} for this size"
        if self.any_size_option:
            fix += f", or with {self.any_size_option} for any size"
        return InputSizeError(
            f"{name} was built for {c}x{bh}x{bw} input and got {_dims(got_input)}: {self.what} is sized from "
            f"the input (it takes a {_dims(self.feature_shape)} map, got {_dims(self.grid(got_map))}); {fix}"
        )


class ClassifierModel(nn.Module):
    """Base class of every cnnlab network.

    Subclasses define :meth:`forward_features` (image -> feature map) and :meth:`forward_head`
    (feature map -> logits). :meth:`forward` always returns logits, in training and evaluation
    alike; networks with auxiliary classifiers return them from :meth:`forward_aux`.

    A subclass whose head is sized from the input sets :attr:`head_sized_from`; :meth:`forward`
    then checks the feature map's shape (a tuple comparison) before the head runs.

    The fine-tuning API (as timm names it): :meth:`forward_head` with ``pre_logits=True`` gives the
    penultimate embedding, :meth:`get_classifier` / :meth:`reset_classifier` the final layer,
    :attr:`feature_info` the feature maps at each stride, which :class:`FeatureExtractor`
    (``create_model(name, features_only=True)``) returns.
    """

    #: loss weight of each auxiliary output of :meth:`forward_aux`, in order (GoogLeNet: 0.3, 0.3)
    aux_loss_weights: tuple[float, ...] = ()
    #: what the head was sized from (lecture nets, VGG, AlexNet ...); ``None`` for heads that pool globally
    head_sized_from: SizedFrom | None = None
    #: dotted name of the final classifier layer (a Linear; NIN's is a 1x1 convolution)
    classifier_name: str = "head.fc"
    #: the family's initialisation, applied by :meth:`reset_classifier` to a new final layer after
    #: PyTorch's default (``None``: PyTorch's default alone, what families that leave linear layers to it use)
    classifier_init: Callable[[nn.Module], None] | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> final feature map."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Final feature map -> logits; with ``pre_logits`` the embedding the final layer takes.

        The default serves networks whose head is a :class:`ClassifierHead` named ``head``.
        """
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        self.check_sized_input(x, features, self.head_sized_from)
        return self.forward_head(features)

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and the list of auxiliary logits (empty for networks without aux heads)."""
        return self.forward(x), []

    def flat_classifier(self) -> list[nn.Module] | None:
        """The layers that :meth:`forward_head` applies to the flattened feature map, in order, for a head
        that flattens the map as it is (:attr:`head_sized_from`); None for heads that pool first.

        Dense evaluation (:mod:`cnnlab.models.dense`) turns these fully-connected layers into convolutions.
        """
        return None

    def check_sized_input(
        self, x: torch.Tensor, arriving: torch.Tensor, sized_from: SizedFrom | None
    ) -> None:
        """Raise an :class:`~cnnlab.errors.InputSizeError` if ``arriving`` (computed from input ``x``) does not fit a head sized from the input.

        Cheap on the forward path: one shape comparison. The message names the model, the size it was
        built for, the size it got and the fix.
        """
        if sized_from is not None and not sized_from.accepts(arriving.shape[1:]):
            name = getattr(self, "model_name", None) or sized_from.name or type(self).__name__
            raise sized_from.error(name, tuple(x.shape[1:]), tuple(arriving.shape[1:]))

    # ---- the fine-tuning API ---------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (the one whose outputs are the logits)."""
        return self.get_submodule(self.classifier_name)

    def classifier_names(self) -> list[str]:
        """Dotted names of every layer that outputs class scores: the main one, then each auxiliary head's last Linear."""
        names = [self.classifier_name]
        for tap, head in getattr(self, "aux_heads", {}).items():
            linears = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                names.append(f"aux_heads.{tap}.{linears[-1]}")
        return names

    @property
    def num_classes(self) -> int:
        """Number of classes the final layer outputs."""
        layer = self.get_classifier()
        return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer (and each auxiliary head's) by a new one for ``num_classes``.

        The new layer has the old one's kind and input width, sits on its device, and is initialised as the
        family initialises its classifier (:attr:`classifier_init`), or by PyTorch's default where the
        family leaves its linear layers to it. Everything else keeps its weights.
        """
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise UsageError(f"num_classes must be a whole number of at least 1, got {num_classes!r}")
        for name in self.classifier_names():
            old = self.get_submodule(name)
            if isinstance(old, nn.Linear):
                new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            elif isinstance(old, nn.Conv2d):
                new = nn.Conv2d(
                    old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None,
                )  # fmt: skip
            else:
                raise TypeError(f"{name} is a {type(old).__name__}, not a Linear or Conv2d classifier")
            if self.classifier_init is not None:
                self.classifier_init(new)
            self.set_submodule(name, new.to(old.weight.device, old.weight.dtype))

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """``(dotted name, module)`` of the stages :meth:`forward_features` runs, in order: applied one after
        another they compute it. The default serves networks whose features are a ``features`` Sequential."""
        features = getattr(self, "features", None)
        if not isinstance(features, nn.Sequential):
            raise NotImplementedError(f"{type(self).__name__} does not list its feature stages")
        return [(f"features.{name}", module) for name, module in features.named_children()]

    @property
    def feature_info(self) -> list[dict[str, object]]:
        """One entry per stride: the last stage whose output has that reduction, as
        ``{"module": dotted name, "num_chs": channels, "reduction": input size / map size}``.

        Found by running the stages on the meta device (see :func:`stage_reductions`), cached per model.
        """
        cached = self.__dict__.get("_feature_info")
        if cached is None:
            cached = stage_reductions(self)
            self.__dict__["_feature_info"] = cached
        return [dict(entry) for entry in cached]


#: the input growth used to measure a stage's reduction: a multiple of every product of strides 2 and 3
#: up to 64 x 9 x 5, so a map grows by exactly growth / reduction pixels (floor and ceil modes alike)
REDUCTION_PROBE_GROWTH = 2880


def _is_noop(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)


def stage_reductions(model: ClassifierModel) -> list[dict[str, object]]:
    """:attr:`ClassifierModel.feature_info` computed: the stages run on the meta device at two input sizes.

    A stage's reduction is exact: the input grows by :data:`REDUCTION_PROBE_GROWTH` pixels and its map by
    that divided by the product of the strides before it (conv arithmetic is affine in the input size).
    Stages that do nothing (an empty ``final_act``) are skipped.
    """
    stages = model.feature_stages()
    in_chans = first_conv_in_channels(model) or 3
    info = getattr(model, "model_info", None)
    size = pair(getattr(model, "img_size", None) or (info.input_size[1:] if info else 224))

    def shapes(h: int, w: int) -> list[tuple[int, ...]]:
        found: list[tuple[int, ...]] = []

        def run(x: torch.Tensor) -> torch.Tensor:
            for _, stage in stages:
                x = stage(x)
                found.append(tuple(x.shape[1:]))
            return x

        was_training = model.training
        model.eval()  # batch norm in training mode refuses 1x1 maps of one image
        try:
            with torch.device("meta"):
                x = torch.empty(1, in_chans, h, w)
            with ShapeOnlyNorm():
                meta_call(model, run)(x)
        finally:
            model.train(was_training)
        return found

    small = shapes(*size)
    grown = shapes(size[0] + REDUCTION_PROBE_GROWTH, size[1] + REDUCTION_PROBE_GROWTH)
    levels: dict[int, dict[str, object]] = {}
    for (name, module), a, b in zip(stages, small, grown):
        if _is_noop(module) or len(a) != 3 or b[1] == a[1]:
            continue
        reduction = round(REDUCTION_PROBE_GROWTH / (b[1] - a[1]))
        levels[reduction] = {"module": name, "num_chs": int(a[0]), "reduction": reduction}
    return [levels[r] for r in sorted(levels)]


class FeatureExtractor(nn.Module):
    """A network as a backbone: its forward returns the feature map at each stride (a list of tensors).

    ``create_model(name, features_only=True)`` builds one. It runs the network's feature stages only, up
    to the last one asked for; ``out_indices`` picks entries of :attr:`feature_info` (default: all).
    The network stays whole in ``model``, so its state dict (prefixed ``model.``) and its weight files
    keep their names.
    """

    def __init__(self, model: ClassifierModel, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model = model
        every = model.feature_info
        indices = range(len(every)) if out_indices is None else out_indices
        try:
            self.feature_info = [every[i] for i in indices]
        except (IndexError, TypeError):
            raise UsageError(
                f"out_indices must pick from the {len(every)} feature levels (0..{len(every) - 1}), "
                f"got {out_indices!r}"
            ) from None
        self.model_name = getattr(model, "model_name", type(model).__name__)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = {entry["module"] for entry in self.feature_info}
        outs = []
        for name, stage in self.model.feature_stages():
            x = stage(x)
            if name in wanted:
                outs.append(x)
                if len(outs) == len(wanted):
                    break
        return outs


#: the normalisations, by ``func.__name__``: each returns a tensor of its input's shape
NORM_OPS = frozenset({"batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm"})


class ShapeOnlyNorm(TorchFunctionMode):
    """On meta tensors, normalisation only passes the shape through: the one home of this shortcut.

    PyTorch runs meta batch norm through a Python decomposition (about 25 ms a call), which made
    shape probes of deep nets (DenseNet-264) cost seconds; the result's shape is the input's. A mode
    rather than a batch-norm subclass, so modules keep their exact class (thop and ptflops look them
    up by ``type``). ``ops`` are the normalisations skipped; ``verify_batch`` keeps the one size error
    batch norm raises (one value per channel in training), which the skipped call would lose.
    """

    def __init__(self, ops: frozenset[str] = frozenset({"batch_norm"}), verify_batch: bool = True) -> None:
        super().__init__()
        self.ops = ops
        self.verify_batch = verify_batch

    def stand_in(self, func: Callable, args: Sequence, kwargs: dict) -> torch.Tensor | None:
        """``empty_like(input)`` for a normalisation of a meta tensor, else ``None`` (run it for real)."""
        name = getattr(func, "__name__", "").strip("_")
        if name not in self.ops or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
            return None
        x = args[0]
        training = kwargs.get("training", args[5] if len(args) > 5 else False)
        if self.verify_batch and name == "batch_norm" and training and x.numel() // x.shape[1] == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {list(x.shape)}"
            )
        return torch.empty_like(x)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105 - torch protocol
        kwargs = kwargs or {}
        out = self.stand_in(func, args, kwargs)
        return func(*args, **kwargs) if out is None else out


class SkipFillsOnMeta(TorchFunctionMode):
    """Random and constant fills of meta tensors return the tensor at once: it holds no values to fill.

    PyTorch runs them through Python decompositions (about 0.1 ms a call), and a build fills each weight
    twice (the layer's own reset, then the family's initialisation): that was half the time of a meta build
    of resnet1202-cifar. :func:`~cnnlab.models.create_model` builds under this mode on the meta device.
    """

    FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_})

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105 - torch protocol
        if func in self.FILLS and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _meta_output_shape(fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int]) -> torch.Size:
    with torch.device("meta"):
        x = torch.empty(*input_shape)
    with ShapeOnlyNorm():
        return fn(x).shape


class BoundCall(nn.Module):
    """Wrapper whose forward calls ``fn`` (a method of ``inner``), so functional_call can reach it."""

    def __init__(self, inner: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.inner = inner
        # kept out of the module tree: registering ``inner`` twice would alias its parameters
        self._call = None if fn is inner else fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) if self._call is None else self._call(x)


def meta_call(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Wrap ``module`` (or its bound method ``fn``) so it runs on meta tensors without touching its weights."""
    wrapper = BoundCall(module, fn or module)

    def run(x: torch.Tensor) -> torch.Tensor:
        state = {
            f"inner.{k}": torch.empty_like(v, device="meta")
            for k, v in module.state_dict(keep_vars=True).items()
        }
        return torch.func.functional_call(wrapper, state, (x,), strict=False)

    return run


def feature_shape(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    in_chans: int,
    img_size: int | Sequence[int],
    what: str = "this network",
) -> torch.Size:
    """Shape ``(C, H, W)`` that ``module`` produces from one ``in_chans x img_size`` image.

    Runs on the meta device (no arithmetic, no memory). An input too small for the network
    raises a :class:`UsageError` naming the smallest size that works.
    """
    h, w = pair(img_size)
    fn = meta_call(module) if isinstance(module, nn.Module) else module
    try:
        return _meta_output_shape(fn, (2, in_chans, h, w))[
            1:
        ]  # 2 images: batch norm in training mode needs >1
    except (RuntimeError, ValueError) as err:
        too_small = diagnose_too_small(fn, (in_chans, h, w), what)
        if too_small is None:
            raise
        raise too_small from err


def too_small_error(
    input_shape: Sequence[int], what: str, smallest: int, where: str = ""
) -> InputTooSmallError:
    """The one "input too small" error: the input, the network (``where`` it failed), the smallest that works."""
    return InputTooSmallError(tuple(input_shape), what, smallest, where)


def diagnose_too_small(
    fn: nn.Module | Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], what: str
) -> InputTooSmallError | None:
    """:func:`too_small_error` if the smallest input ``fn`` runs on is larger than ``input_shape`` (C, H, W), else ``None``."""
    c, h, w = input_shape
    smallest = smallest_input_size(fn, c)
    return (
        too_small_error(input_shape, what, smallest)
        if smallest is not None and smallest > min(h, w)
        else None
    )


def smallest_input_size(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor], in_chans: int, limit: int = 4096
) -> int | None:
    """Smallest square side ``s`` such that the network runs on ``in_chans x s x s`` (bisection, meta device).

    ``None`` if even ``limit`` fails (the failure is not about size).
    """
    fn = meta_call(module) if isinstance(module, nn.Module) else module

    def works(size: int) -> bool:
        try:
            _meta_output_shape(fn, (2, in_chans, size, size))
            return True
        except (RuntimeError, ValueError):
            return False

    hi = 1
    while not works(hi):  # exponential search from below: most nets fit small inputs, so few probes
        if hi >= limit:
            return None
        hi = min(2 * hi, limit)
    lo = hi // 2  # invariant: lo fails (or is 0), hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


def check_input_size(model: nn.Module, input_shape: Sequence[int]) -> torch.Size:
    """Output shape of ``model`` on ``input_shape`` (``C, H, W`` or ``N, C, H, W``), or a clear :class:`UsageError`.

    The message names the smallest input that works, or, for heads sized from the input, the
    size the model was built for (:meth:`ClassifierModel.check_sized_input`'s own error).
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (2, *shape)
    if len(shape) != 4:
        raise UsageError(f"input shape must be CxHxW, got {'x'.join(map(str, input_shape))}")
    try:
        out = _meta_output_shape(meta_call(model), shape)
        return torch.Size((1, *out[1:])) if len(input_shape) == 3 else out
    except UsageError:
        raise  # the model's own check: it already names the size it was built for and the fix
    except (RuntimeError, ValueError) as err:
        name = getattr(model, "model_name", type(model).__name__)
        c, h, w = shape[1:]
        expected_c = first_conv_in_channels(model)
        if expected_c is not None and expected_c != c:
            raise UsageError(f"{name} takes {expected_c}-channel input, got {c} channels") from err
        features = getattr(model, "forward_features", None)
        too_small = diagnose_too_small(meta_call(model, features) if features else model, (c, h, w), name)
        if too_small is not None:
            raise too_small from err
        raise UsageError(f"{name} cannot run on input {c}x{h}x{w}: {str(err).splitlines()[0]}") from err


def first_conv_in_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution of ``model`` (the channels it takes), ``None`` without one."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------------
# Plain conv stack + FC stack (AlexNet-era families): a layer table as data, built into `features` + `classifier`
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaxPool:
    """A max-pooling row: window and stride (AlexNet's overlapping pool is ``MaxPool(3, 2)``)."""

    kernel: int
    stride: int


@dataclass(frozen=True)
class ConvLayer:
    """One convolution row of a paper's layer table, followed by its ReLU, optional LRN and pooling.

    ``groups=2`` expresses AlexNet's two GPU towers; ``pool=None`` means no pooling after this layer.
    """

    out_chs: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: bool = False
    pool: MaxPool | None = None


def local_response_norm() -> nn.LocalResponseNorm:
    """AlexNet's LRN (Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75).

    The paper divides by ``(k + alpha * sum a^2) ** beta``; torch divides by
    ``(k + alpha / n * sum a^2) ** beta``, so torch's alpha is the paper's times n.
    """
    size = 5
    return nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)


def conv_stack(
    layers: Sequence[ConvLayer], in_chans: int, lrn_after_pool: bool = False, ceil_mode: bool = False
) -> nn.Sequential:
    """Build ``features`` from table rows, naming modules ``conv1, relu1, norm1, pool1, conv2 ...``.

    AlexNet normalises then pools (Sec. 3.5); ZFNet pools then normalises (Zeiler & Fergus Fig. 3):
    ``lrn_after_pool`` picks the latter. ``ceil_mode`` rounds pooled sizes up, as Caffe and
    MatConvNet do (the convention behind the published map sizes of ZFNet, CNN-F/M/S and NIN).
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    chs = in_chans
    for i, row in enumerate(layers, start=1):
        if row.groups > 1 and (chs % row.groups or row.out_chs % row.groups):
            raise UsageError(
                f"conv{i} cannot be split into {row.groups} towers: {chs} -> {row.out_chs} channels "
                f"must both be divisible by {row.groups}"
            )
        modules[f"conv{i}"] = nn.Conv2d(
            chs, row.out_chs, row.kernel, row.stride, row.padding, groups=row.groups
        )
        modules[f"relu{i}"] = nn.ReLU(inplace=True)
        norm = {f"norm{i}": local_response_norm()} if row.lrn else {}
        pool = {}
        if row.pool is not None:
            pool[f"pool{i}"] = nn.MaxPool2d(row.pool.kernel, row.pool.stride, ceil_mode=ceil_mode)
        modules.update({**pool, **norm} if lrn_after_pool else {**norm, **pool})
        chs = row.out_chs
    return nn.Sequential(modules)


def fc_stack(
    in_features: int, hidden: Sequence[int], num_classes: int, drop_rate: float, first: int
) -> nn.Sequential:
    """The FC classifier ``fc{first}, relu, drop, ..., fc{last}``: dropout after each hidden ReLU.

    Dropout sits on the outputs of the hidden FC layers, as in AlexNet Sec. 4.2 ("dropout in the first
    two fully-connected layers") and VGG Sec. 3.1 ("dropout ... for the first two FC layers").
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, out in enumerate(hidden, start=first):
        modules[f"fc{i}"] = nn.Linear(width, out)
        modules[f"relu{i}"] = nn.ReLU(inplace=True)
        modules[f"drop{i}"] = nn.Dropout(drop_rate)
        width = out
    modules[f"fc{first + len(hidden)}"] = nn.Linear(width, num_classes)
    return nn.Sequential(modules)


class PlainConvNet(ClassifierModel):
    """``features`` (convolutions) -> [adaptive pool] -> flatten -> ``classifier`` (FC stack).

    The first FC layer's width is derived from the feature map at ``img_size`` (``feature_shape``),
    so any input above the minimum works once the model is built for it; ``adaptive_pool=True``
    pools every input to that map size instead (torchvision's layout), so one model runs on any size.
    FC layers are numbered after the convolutions (conv1-5 -> fc6-8, OverFeat-accurate's conv1-6 ->
    fc7-9), as the papers name them, or from ``first_fc`` (VGG's released models: always fc6-8).
    """

    def __init__(
        self,
        features: nn.Sequential,
        hidden: Sequence[int],
        num_classes: int,
        in_chans: int,
        img_size: int | tuple[int, int],
        drop_rate: float,
        adaptive_pool: bool,
        name: str,
        first_fc: int | None = None,
    ) -> None:
        super().__init__()
        self.img_size = pair(img_size)
        self.features = features
        # evaluation mode: batch norm in training mode refuses a 1x1 map of one image (ValueError),
        # which would hide the "smallest input" message of an img_size that is too small
        features.eval()
        try:
            c, h, w = feature_shape(features, in_chans, self.img_size, what=name)
        finally:
            features.train()
        self.avgpool = nn.AdaptiveAvgPool2d((h, w)) if adaptive_pool else nn.Identity()
        if not adaptive_pool:  # fc{first} flattens the map as it is: refuse other sizes before it runs
            self.head_sized_from = SizedFrom(
                self.img_size,
                (c, h, w),
                "its first FC layer",
                any_size_option="adaptive_pool=True",
                name=name,
            )
        num_convs = sum(isinstance(m, nn.Conv2d) for m in features.modules())
        first_fc = num_convs + 1 if first_fc is None else first_fc
        self.classifier = fc_stack(c * h * w, hidden, num_classes, drop_rate, first=first_fc)
        self.classifier_name = f"classifier.fc{first_fc + len(hidden)}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits; with ``pre_logits`` the last hidden FC layer's output after its ReLU and dropout
        (fc7 of AlexNet and VGG, the "fc7 features" of transfer learning)."""
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def flat_classifier(self) -> list[nn.Module] | None:
        """The FC stack, unless ``adaptive_pool`` pools the map before it."""
        return None if isinstance(self.avgpool, nn.AdaptiveAvgPool2d) else list(self.classifier)


def init_he(model: nn.Module) -> None:
    """Every conv and linear weight ~ He et al. 2015 normal (section 2.2: std sqrt(2 / fan_in)), biases 0.

    Batch-norm layers are left as they are. Training's ``weight_init="he"`` (a recipe's named deviation
    where a paper's own initialisation does not start learning in a short run, e.g. AlexNet's).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def init_glorot(model: nn.Module) -> None:
    """Every conv and linear weight ~ Glorot & Bengio 2010 uniform (their eq. 16, "normalized initialization":
    +-sqrt(6 / (fan_in + fan_out))), biases 0.

    Batch-norm layers are left as they are. Training's ``weight_init="glorot"``: the initialisation
    Simonyan & Zisserman 2015 (section 3.1) found trains VGG without pre-training.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def init_gaussian(model: nn.Module, std: float = 0.01, bias_one: Collection[str] = ()) -> None:
    """Weights of every conv and linear layer ~ N(0, std), biases 0, or 1 for modules named in ``bias_one``.

    Batch-norm layers start at scale 1, shift 0. The initialisation AlexNet, ZFNet, OverFeat and VGG
    describe; CNN-F/M/S, whose paper states none, reuse it.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.constant_(module.bias, 1.0 if name.rsplit(".", 1)[-1] in bias_one else 0.0)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------------
# Inception machinery (GoogLeNet, BN-Inception, Inception-v3/v4): filter concatenation, named stages
# --------------------------------------------------------------------------------------------------


class ConcatBranches(nn.ModuleDict):
    """Parallel branches applied to the same input, outputs concatenated on channels ("filter concatenation")."""

    def __init__(self, branches: dict[str, nn.Module], out_chs: int) -> None:
        super().__init__(branches)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.values()], dim=1)


# ImageNet's per-channel mean and std, the normalisation torchvision's weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RenormalizeInput(nn.Module):
    """Turn an input normalised with ImageNet's mean/std into one normalised with mean 0.5, std 0.5.

    torchvision's ``transform_input`` (GoogLeNet, Inception-v3): its published weights of these two
    networks were ported from TensorFlow, whose inputs lie in [-1, 1]; the flag lets them take the
    same ImageNet-normalised input as every other torchvision model. No parameters.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        # x_tf = (x * std + mean - 0.5) / 0.5: one scale and one shift per channel, kept as Python
        # floats (no buffer: nothing in the state dict, and the meta-device shape probes need none)
        self.scale = tuple(s / 0.5 for s in std)
        self.shift = tuple((m - 0.5) / 0.5 for m in mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = [x[:, c : c + 1] * a + b for c, (a, b) in enumerate(zip(self.scale, self.shift))]
        return torch.cat(channels, dim=1)


def check_transform_input(transform_input: bool, in_chans: int) -> None:
    """``transform_input=True`` renormalises ImageNet's three channels: refuse other channel counts."""
    if transform_input and in_chans != len(IMAGENET_MEAN):
        raise UsageError(
            f"transform_input=True renormalises ImageNet's 3 input channels; this model has in_chans={in_chans} "
            "(drop transform_input or use in_chans=3)"
        )


class InceptionNet(ClassifierModel):
    """Named stages run in order, a global-average-pool head, and auxiliary heads tapping named stages.

    Stages are direct attributes (``model.inception3a``), so analysis tools find each table row by
    name. ``aux_heads`` maps a stage name to the head applied to that stage's output.
    """

    def __init__(
        self, stages: Iterable[tuple[str, nn.Module]], num_features: int, num_classes: int, drop_rate: float
    ) -> None:
        super().__init__()
        names = []
        for name, stage in stages:
            self.add_module(name, stage)
            names.append(name)
        self.stage_names = tuple(names)
        self.num_features = num_features
        self.head = ClassifierHead(num_features, num_classes, drop_rate)
        self.aux_heads = nn.ModuleDict()

    def run_stages(
        self, x: torch.Tensor, taps: Sequence[str] = (), until: str | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the stages in order (up to and including ``until``); return the last output and the tapped ones."""
        tapped = {}
        for name in self.stage_names:
            x = self._modules[name](x)
            if name in taps:
                tapped[name] = x
            if name == until:
                break
        return x, tapped

    def stage_shape(
        self,
        stage: str,
        in_chans: int,
        img_size: int | Sequence[int],
        then: Callable[[torch.Tensor], torch.Tensor] | None = None,
        what: str = "this network",
    ) -> torch.Size:
        """Shape ``(C, H, W)`` of ``stage``'s output (passed through ``then``) for one image, on the meta device.

        An input too small raises a :class:`~cnnlab.errors.UsageError` naming the smallest size that works.
        """

        def run(x: torch.Tensor) -> torch.Tensor:
            y = self.run_stages(x, until=stage)[0]
            return then(y) if then is not None else y

        # evaluation mode: batch norm in training mode refuses a 1x1 map of one image (a ValueError)
        was_training = self.training
        self.eval()
        try:
            return feature_shape(meta_call(self, run), in_chans, img_size, what=what)
        finally:
            self.train(was_training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_stages(x)[0]

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """The named stages, in order."""
        return [(name, self._modules[name]) for name in self.stage_names]

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and one set of logits per auxiliary head, whatever the training mode."""
        features, tapped = self.run_stages(x, taps=tuple(self.aux_heads))
        for (
            name,
            head,
        ) in self.aux_heads.items():  # heads sized from the input (GoogLeNet's) refuse other sizes
            self.check_sized_input(x, tapped[name], getattr(head, "sized_from", None))
        return self.forward_head(features), [head(tapped[name]) for name, head in self.aux_heads.items()]


# (out_chs, kernel[, stride[, padding]]); padding None keeps the size ("SAME"), 0 is "VALID"
ConvRow = tuple


def bn_conv(
    in_chs: int, out_chs: int, kernel: int | Sequence[int], stride: int = 1, padding=None
) -> ConvNormAct:
    """conv (no bias) -> BN (eps 0.001, the TF reference) -> ReLU."""
    return ConvNormAct(in_chs, out_chs, kernel, stride, padding, norm=True, bn_eps=1e-3)


def conv_chain(in_chs: int, *rows: ConvRow) -> nn.Sequential:
    """Consecutive :func:`bn_conv` units, each row ``(out_chs, kernel[, stride[, padding]])``."""
    layers = []
    for row in rows:
        layers.append(bn_conv(in_chs, *row))
        in_chs = row[0]
    return nn.Sequential(*layers)


def avg_pool_proj(in_chs: int, out_chs: int, count_include_pad: bool = False) -> nn.Sequential:
    """3x3/1 average pool ("SAME") -> 1x1 projection.

    The border windows average only the pixels inside the map, as TensorFlow's "SAME" pooling of the
    reference; ``count_include_pad=True`` divides by 9 everywhere, as torchvision's Inception-v3 does.
    """
    return nn.Sequential(
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=count_include_pad),
        bn_conv(in_chs, out_chs, 1),
    )


def max_pool_3x3_s2() -> nn.MaxPool2d:
    """The valid 3x3/2 max pool of every grid reduction (35 -> 17 -> 8)."""
    return nn.MaxPool2d(3, stride=2)


def split_1x3_3x1(in_chs: int, out_chs: int) -> ConcatBranches:
    """Figure 7's expanded filter bank: 1x3 and 3x1 side by side on the same input, concatenated."""
    return ConcatBranches(
        {"1x3": conv_chain(in_chs, (out_chs, (1, 3))), "3x1": conv_chain(in_chs, (out_chs, (3, 1)))},
        2 * out_chs,
    )


@dataclass(frozen=True)
class Convs:
    """A branch of consecutive :func:`bn_conv` rows, optionally ending in Figure 7's 1x3 | 3x1 split of ``split`` each."""

    rows: tuple[ConvRow, ...]
    split: int | None = None

    def out_chs(self, in_chs: int) -> int:
        """The branch's output channels."""
        return 2 * self.split if self.split else self.rows[-1][0]

    def build(self, in_chs: int) -> nn.Module:
        """The branch for ``in_chs`` input channels."""
        chain = conv_chain(in_chs, *self.rows)
        return nn.Sequential(chain, split_1x3_3x1(self.rows[-1][0], self.split)) if self.split else chain


def convs(*rows: ConvRow, split: int | None = None) -> Convs:
    """A :class:`Convs` branch from its rows ``(out_chs, kernel[, stride[, padding]])``."""
    return Convs(tuple(rows), split)


@dataclass(frozen=True)
class AvgPoolProj:
    """The pooling branch of Inception-v3/v4 modules: 3x3/1 average pool -> 1x1 projection to ``width``."""

    width: int
    count_include_pad: bool = False  # True: torchvision's Inception-v3 (see avg_pool_proj)

    def out_chs(self, in_chs: int) -> int:
        """The projection's width."""
        return self.width

    def build(self, in_chs: int) -> nn.Module:
        """The branch for ``in_chs`` input channels."""
        return avg_pool_proj(in_chs, self.width, self.count_include_pad)


@dataclass(frozen=True)
class MaxPoolPass:
    """The pooling branch of a grid reduction: valid 3x3/2 max pool, the input's channels pass through."""

    def out_chs(self, in_chs: int) -> int:
        """As many channels as come in."""
        return in_chs

    def build(self, in_chs: int) -> nn.Module:
        """The 3x3/2 max pool."""
        return max_pool_3x3_s2()


Branch = Convs | AvgPoolProj | MaxPoolPass


class BranchRecord:
    """Base of an Inception module written as a record of its paper's branch widths.

    A subclass (a frozen dataclass of widths) says what its branches are in :meth:`branches`, in
    concatenation order; the module's width and the module itself follow from that one place.
    """

    def branches(self) -> dict[str, Branch]:
        """Branch name -> branch, in concatenation order."""
        raise NotImplementedError

    def out_chs(self, in_chs: int) -> int:
        """Channels after concatenation for ``in_chs`` input channels."""
        return sum(branch.out_chs(in_chs) for branch in self.branches().values())

    def ordered_branches(self, pool_last: bool = False) -> dict[str, Branch]:
        """:meth:`branches` in concatenation order; ``pool_last`` moves the pooling branch to the end.

        The papers' figures draw the pooling branch first (Inception-v4 Figures 4-8); the released
        TF-slim models, and timm after them, concatenate it last. Same weights, other channel order.
        """
        branches = self.branches()
        if not pool_last:
            return branches
        pools = {n: b for n, b in branches.items() if isinstance(b, AvgPoolProj | MaxPoolPass)}
        return {**{n: b for n, b in branches.items() if n not in pools}, **pools}

    def build(self, in_chs: int, pool_last: bool = False) -> ConcatBranches:
        """The module for ``in_chs`` input channels (``pool_last``: see :meth:`ordered_branches`)."""
        built = {name: branch.build(in_chs) for name, branch in self.ordered_branches(pool_last).items()}
        return ConcatBranches(built, self.out_chs(in_chs))


def build_stem(in_chans: int, rows: Sequence[tuple[str, ConvRow | str]]) -> tuple[list, int]:
    """Named stem stages from ``(name, row)``: a row ``(out_chs, kernel, stride, padding)`` or ``"pool"`` (3x3/2)."""
    stages, in_chs = [], in_chans
    for name, row in rows:
        if row == "pool":
            stages.append((name, max_pool_3x3_s2()))
        else:
            stages.append((name, bn_conv(in_chs, *row)))
            in_chs = row[0]
    return stages, in_chs


def paper_layers(model: nn.Module, include_aux: bool = False) -> list[tuple[str, nn.Module]]:
    """The conv and fc layers in order, as the papers count them ("conv1 ... fc8": layer N is the N-th of
    this list; Yosinski et al. 2014 freeze and transfer by this count). Auxiliary heads (GoogLeNet's
    ``aux*``) are left out unless ``include_aux``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
        and (include_aux or not any(part.startswith("aux") for part in name.split(".")))
    ]
