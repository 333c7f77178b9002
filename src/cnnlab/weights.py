"""Weight files in and out: the one place that reads a weight file into a model.

* :func:`read_weight_file` - tensors (and the JSON header, if any) of a ``.safetensors`` file, or of a
  ``.pth``/``.pt``/``.bin`` file read with ``torch.load(weights_only=True)``: nothing is ever unpickled
  beyond tensors and plain containers, so a pickle that carries code is refused, not run.
* :func:`load_weights` - a file into a built model, through the key map of its ``source``; every name and
  shape is checked (never matched by position), and a classifier with another class count is dropped and
  re-initialised only when the caller asks for ``num_classes``.
* :func:`load_model` - a self-describing file (an exported model file, a run directory, a checkpoint or a
  training weights file) -> the model, built and loaded, with its :class:`ModelCard` as ``model.model_card``.
* :func:`save_model_file` - the self-describing safetensors file ``cnnlab export --format safetensors`` writes.

Key maps of other libraries plug in with :func:`register_source`: a source is a function
``(file tensors, model) -> tensors under the model's names`` (or ``(tensors, notes)``); ``"cnnlab"`` is
the identity, ``"torchvision"`` and ``"timm"`` are :mod:`cnnlab.references`' maps (registered when
:func:`load_weights` first runs: that module imports this one).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CheckpointError, UsageError, unknown_choice

#: the format tag of a self-describing model file (and of its ONNX twin's metadata)
MODEL_FORMAT = "cnnlab-model"
MODEL_FORMAT_VERSION = 1
#: suffixes read with torch.load(weights_only=True)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
#: a torch file's dict may wrap the state dict under one of these keys (training scripts' checkpoints)
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")

# a key map returns the file's tensors under the model's names, or (those tensors, notes for the user)
KeyMap = Callable[
    [dict[str, torch.Tensor], nn.Module],
    "dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], list[str]]",
]


def identity_key_map(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """cnnlab's own files: names are already the model's."""
    return dict(tensors)


#: source name -> key map; :func:`register_source` adds one (torchvision, timm ...)
SOURCES: dict[str, KeyMap] = {"cnnlab": identity_key_map}


def register_source(name: str, key_map: KeyMap) -> None:
    """Make ``load_weights(..., source=name)`` read files through ``key_map``.

    ``key_map(tensors, model)`` returns the file's tensors under the model's state-dict names (it may
    raise a :class:`~cnnlab.errors.UsageError` for a model it has no map for); :func:`load_weights`
    then checks every name and shape as for cnnlab's own files.
    """
    if name in SOURCES:
        raise ValueError(f"weight source {name!r} is already registered")
    SOURCES[name] = key_map


def list_sources() -> list[str]:
    """The weight sources :func:`load_weights` accepts (besides ``SOURCE:NAME``, one reference model)."""
    from cnnlab.references import register_reference_sources

    register_reference_sources()
    return sorted(SOURCES)


def parse_weights_from(spec: str) -> tuple[str, str | None]:
    """``--weights-from``: ``"cnnlab"``, ``"torchvision"``, ``"timm"`` -> ``(source, None)``;
    ``"torchvision:googlenet"`` -> ``("torchvision", "googlenet")``, one reference model
    (:func:`cnnlab.from_reference`). Anything else is a :class:`UsageError` with close names."""
    from cnnlab.references import parse_reference, register_reference_sources

    register_reference_sources()
    if ":" in spec:
        return parse_reference(spec)
    if spec not in SOURCES:
        raise unknown_choice("weight source", spec, [*SOURCES, "SOURCE:NAME"])
    return spec, None


def source_key_map(source: str) -> KeyMap:
    """The key map of ``source`` (a registered source, or ``SOURCE:NAME``: that reference's map)."""
    name = parse_weights_from(source)[1]
    if name is not None:
        from cnnlab.references import reference_key_map

        return reference_key_map(source.partition(":")[0], name)
    return SOURCES[source]


class ClassCountMismatch(UsageError):
    """A weight file's classifier has another class count than the model's (``file_classes``, ``model_classes``)."""

    def __init__(self, message: str, file_classes: int, model_classes: int) -> None:
        super().__init__(message)
        self.file_classes, self.model_classes = file_classes, model_classes


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: the file, its header, and what it says to the user."""

    path: Path
    source: str
    loaded: int
    dropped: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    header: dict[str, Any] = field(default_factory=dict, repr=False)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) if t.dim() else "scalar"


def _unpickling_refusal(path: Path, err: Exception) -> CheckpointError:
    """torch's weights-only refusal, as one line: which global the pickle wanted, and the fix."""
    text = str(err)
    found = re.search(r"GLOBAL [\w.]+", text)
    what = f" ({found.group(0)})" if found else ""
    return CheckpointError(
        f"{path} is refused: it is a pickle that would run code or build objects other than tensors{what}; "
        "nothing was unpickled. Use a file of tensors only (a state dict saved with torch.save, or safetensors)"
    )


def _tensor_dict(path: Path, loaded: Any) -> dict[str, torch.Tensor]:
    """The state dict in a torch file: the dict itself, or the one under a wrapper key."""

    def tensors_only(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and bool(value)
            and all(isinstance(v, torch.Tensor) for v in value.values())
        )

    if tensors_only(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        for key in WRAPPER_KEYS:
            if tensors_only(loaded.get(key)):
                return dict(loaded[key])
    kind = type(loaded).__name__
    raise CheckpointError(
        f"{path} holds no state dict (a {kind}{' with keys ' + ', '.join(map(str, list(loaded)[:5])) if isinstance(loaded, dict) else ''}); "
        f"expected a dict of tensors, or one under {', '.join(WRAPPER_KEYS)}"
    )


def resolve_weight_file(path: str | Path) -> tuple[Path, str | None]:
    """The weights file ``path`` names, and the SHA-256 it must have (None: nothing to check it against).

    ``path`` is a weight file, or a run directory (its selected checkpoint) or checkpoint manifest, whose
    manifest records the SHA-256 of its weights; a run's weights file has its manifest beside it.
    """
    path = Path(path)
    if path.is_dir() or (path.suffix in (".json", ".safetensors") and path.is_file()):
        # a run's weights file named directly is checked against the manifest beside it, as a run is
        from cnnlab.train.evaluation import resolve_weights

        return resolve_weights(path)
    if not path.is_file():
        raise UsageError(f"no weight file, run directory or checkpoint at {path}")
    return path, None


def weight_file_sha256(path: str | Path) -> tuple[Path, str]:
    """The weights file ``path`` names (see :func:`resolve_weight_file`) and its SHA-256 (recorded by runs
    that start from it)."""
    from cnnlab.fileio import sha256_file

    file, expected = resolve_weight_file(path)
    return file, expected or sha256_file(file)


def read_weight_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON header (``{}`` for torch files and headerless safetensors) of a weight file, or of
    a run directory's selected checkpoint or a checkpoint manifest's weights (checked against its SHA-256).

    A missing path is a :class:`UsageError`; a truncated or damaged file, or a pickle carrying code,
    a :class:`CheckpointError` saying so.
    """
    from cnnlab.train.checkpoint import load_weights as read_safetensors

    path, expected_sha256 = resolve_weight_file(path)
    if expected_sha256 is not None:
        return read_safetensors(path, expected_sha256)
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path)
        except CheckpointError as err:
            raise CheckpointError(
                f"weight file {path} is truncated or damaged ({str(err).split(': ', 1)[-1]}); fetch or export it again"
            ) from None
    if path.suffix not in TORCH_SUFFIXES:
        raise UsageError(
            f"{path}: unknown weight file type {path.suffix or '(no suffix)'!r}; use .safetensors or "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    check_torch_file_start(path)
    try:
        with warnings.catch_warnings():
            # a raw pickle (not torch's zip format) of another protocol: torch warns at length that it may not
            # read it; the file is read or refused in one line below either way
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise _unpickling_refusal(path, err) from None
        raise CheckpointError(
            f"weight file {path} is truncated or damaged ({_first_line(err)}); fetch or save it again"
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure to read these bytes means a damaged file, said in one line
        raise CheckpointError(
            f"weight file {path} is truncated or damaged ({_first_line(err)}); fetch or save it again"
        ) from None
    return _tensor_dict(path, loaded), {}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


#: how every file torch.save writes starts: a zip archive (torch >= 1.6), or a pickle stream (older files)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def check_torch_file_start(path: Path) -> None:
    """A :class:`CheckpointError` naming what ``path`` is when its first bytes are not those of a file
    torch.save wrote (a web page or a Git LFS pointer saved in place of the weights, say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        raise CheckpointError(f"weight file {path} cannot be read ({err.strerror or err})") from None
    if head.startswith(TORCH_FILE_STARTS):
        return
    if not head:
        what = "it is empty"
    elif head.startswith(b"version https://git-lfs"):
        what = "it is a Git LFS pointer, not the weights (git lfs pull fetches them)"
    elif head.lstrip().startswith(b"<"):
        what = "it is an HTML or XML page (a download that saved an error page?)"
    elif head.lstrip().startswith((b"{", b"[")):
        what = "it is JSON text"
    else:
        what = f"it starts with {head[:8]!r}"
    raise CheckpointError(f"{path} is not a PyTorch weight file: {what}; download or save the weights again")


def _classifier_keys(model: nn.Module) -> set[str]:
    names = model.classifier_names() if hasattr(model, "classifier_names") else []
    return {f"{name}.{p}" for name in names for p in ("weight", "bias")}


def load_weights(
    model: nn.Module,
    path: str | Path,
    source: str = "cnnlab",
    num_classes: int | None = None,
) -> LoadReport:
    """Load the weight file at ``path`` into ``model`` (in place) through ``source``'s key map.

    ``source``: ``"cnnlab"`` (the default: cnnlab's own names), ``"torchvision"`` or ``"timm"`` (the key
    map of the reference whose cnnlab model and options ``model`` is built with), ``"SOURCE:NAME"`` (that
    reference's), or a source added with :func:`register_source`. ``path`` may also be a run directory or
    a checkpoint manifest (its weights, checked against the manifest's SHA-256).

    Every tensor of the model must be in the file under its name with its shape, and the file may hold
    nothing else; the first mismatch is a :class:`UsageError` naming the key and both shapes. A
    classifier with another class count is refused with the fix named, unless ``num_classes`` is given:
    then the model's classifier is set to ``num_classes`` (:meth:`reset_classifier`), the file's is
    dropped and the report says so. A model built with ``features_only=True`` loads its network's file.
    """
    key_map = source_key_map(source)
    target_model = getattr(model, "model", model) if not hasattr(model, "get_classifier") else model
    name = getattr(target_model, "model_name", type(target_model).__name__)
    tensors, header = read_weight_file(path)
    mapped = key_map(tensors, target_model)
    messages: list[str] = []
    if isinstance(mapped, tuple):  # a key map may say what it left out (auxiliary heads)
        mapped, notes = mapped
        messages.extend(notes)
    if num_classes is not None and getattr(target_model, "num_classes", num_classes) != num_classes:
        target_model.reset_classifier(num_classes)
    expected = target_model.state_dict()
    classifier = _classifier_keys(target_model)
    dropped: list[str] = []
    for key, want in expected.items():
        got = mapped.get(key)
        if got is None:
            if key.endswith("num_batches_tracked"):
                continue  # a counter that changes no output; older files lack it
            extra = sorted(set(mapped) - set(expected))
            hint = f" (the file has {extra[0]!r}, which the model does not)" if extra else ""
            raise UsageError(
                f"{path} does not fit {name}: it has no {key!r} ({_shape(want)}){hint}; "
                "is it a file of another model or another source (--weights-from)?"
            )
        if got.shape == want.shape:
            continue
        if key in classifier and got.dim() == want.dim() and got.shape[1:] == want.shape[1:]:
            if num_classes is None:
                raise ClassCountMismatch(
                    f"{path} has a {got.shape[0]}-class classifier ({key}), {name} has {want.shape[0]} classes: "
                    f"build the model with num_classes={got.shape[0]} to use it, or ask for num_classes="
                    f"{want.shape[0]} (--num-classes {want.shape[0]}) to drop it and start a new classifier",
                    int(got.shape[0]),
                    int(want.shape[0]),
                )
            dropped.append(key)
            continue
        first_conv = next((k for k, v in expected.items() if v.dim() == 4), None)
        channels_only = (
            got.dim() == want.dim() == 4 and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]
        )
        hint = (  # the one mismatch your own data commonly makes: grey images against a colour model, or back
            f": the file's model takes {got.shape[1]}-channel images; build it with in_chans={got.shape[1]} "
            f"(--in-chans {got.shape[1]})"
            if key == first_conv and channels_only
            else ""
        )
        raise UsageError(
            f"{path} does not fit {name}: {key} is {_shape(got)} in the file and {_shape(want)} in the model{hint}"
        )
    unexpected = [k for k in mapped if k not in expected]
    if unexpected:
        raise UsageError(
            f"{path} does not fit {name}: it has {unexpected[0]!r} ({_shape(mapped[unexpected[0]])}), which the "
            f"model does not{f' ({len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}"
        )
    if dropped:
        layers = sorted({k.rsplit(".", 1)[0] for k in dropped})
        messages.append(
            f"dropped the file's classifier {', '.join(layers)} ({mapped[dropped[0]].shape[0]} classes): "
            f"newly initialised for {num_classes} classes"
        )
    keep = {k: v for k, v in mapped.items() if k not in dropped}
    target_model.load_state_dict(keep, strict=False)
    return LoadReport(Path(path), source, len(keep), tuple(dropped), tuple(messages), header)


def build_with_weights(
    name: str,
    weights: str | Path,
    source: str = "cnnlab",
    num_classes: int | None = None,
    **options: Any,
) -> tuple[nn.Module, LoadReport]:
    """Registry model ``name`` built with ``options`` and the weight file ``weights`` loaded through
    ``source``'s key map (:func:`load_weights`), for a file that does not say which model it is.

    ``source`` ``SOURCE:NAME`` also builds the model with the options that compute that reference's
    function (those given win). ``num_classes`` defaults to the file's classifier's count; another count
    drops the file's classifier (the report says so).
    """
    from cnnlab.models import create_model, model_info

    model_info(name)  # an unknown name: close matches
    if ":" in source:
        from cnnlab.references import reference_model_options

        parse_weights_from(source)
        options = reference_model_options(source, name, options)
    if num_classes is None:
        num_classes = file_num_classes(name, weights, source, **options)
    model = create_model(name, num_classes=num_classes, **options)
    report = load_weights(model, weights, source, num_classes=num_classes)
    return model, report


def file_num_classes(name: str, weights: str | Path, source: str = "cnnlab", **options: Any) -> int | None:
    """The class count of the classifier in the weight file ``weights`` for model ``name`` (None: it has none)."""
    from cnnlab.models import create_model

    with torch.device("meta"):  # names and shapes only: nothing to initialise
        probe = create_model(name, **options)
    mapped = source_key_map(source)(read_weight_file(weights)[0], probe)
    mapped = mapped[0] if isinstance(mapped, tuple) else mapped
    weight = mapped.get(f"{getattr(probe, 'classifier_name', 'head.fc')}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None


# --------------------------------------------------------------------------------------------------
# Self-describing model files
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelCard:
    """What a model file says about its model and its input: enough to rebuild it and to prepare images.

    ``input_size`` is what the model takes (C, H, W). The test-time pipeline of the run it came from:
    decode to ``image_chans`` channels at ``image_size`` (H, W), zero-pad to ``pad_to``, repeat grey to
    ``in_chans`` channels, normalise with ``mean``/``std`` per image channel (see
    :class:`~cnnlab.data.BatchLoader`). ``config`` is the training recipe, where there was one.
    """

    model: str
    model_options: dict[str, Any]
    num_classes: int
    input_size: tuple[int, int, int]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    image_chans: int
    pad_to: int | None = None
    data: str | None = None
    config: dict[str, Any] | None = None
    cnnlab_version: str = ""
    format: str = MODEL_FORMAT
    format_version: int = MODEL_FORMAT_VERSION

    @property
    def in_chans(self) -> int:
        """Channels the model takes."""
        return self.input_size[0]

    def header(self) -> dict[str, Any]:
        """The JSON header of a model file; it also carries the training-header keys ``cnnlab evaluate`` reads."""
        values = dataclasses.asdict(self)
        values["input_shape"] = list(self.input_size)  # the training header's name for it
        return values

    @classmethod
    def from_header(cls, header: dict[str, Any], where: str | Path) -> ModelCard:
        """The card of a model file's header, or a :class:`CheckpointError` saying what is wrong."""
        if header.get("format") != MODEL_FORMAT:
            raise UsageError(f"{where} is not a cnnlab model file (no {MODEL_FORMAT!r} header)")
        if header.get("format_version") != MODEL_FORMAT_VERSION:
            raise CheckpointError(
                f"{where} is a cnnlab model file of format version {header.get('format_version')!r}; "
                f"this cnnlab reads version {MODEL_FORMAT_VERSION}: upgrade cnnlab"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            values = {k: v for k, v in header.items() if k in names}
            card = cls(**values)
            card.input_size = tuple(int(v) for v in card.input_size)
            card.image_size = tuple(int(v) for v in card.image_size)
            card.mean, card.std = tuple(map(float, card.mean)), tuple(map(float, card.std))
            if (
                len(card.input_size) != 3
                or len(card.image_size) != 2
                or len(card.classes) != card.num_classes
            ):
                raise ValueError("input_size, image_size or classes do not fit")
            # what the header says about preparing images must describe images this model can take: a
            # mean of the wrong length or a zero std would change every prediction without a word
            channels = card.input_size[0]
            if min(card.input_size) < 1 or min(card.image_size) < 1:
                raise ValueError(
                    f"sizes must be positive: input_size {card.input_size}, image_size {card.image_size}"
                )
            for name, values in (("mean", card.mean), ("std", card.std)):
                if len(values) not in (1, channels):
                    raise ValueError(f"{name} has {len(values)} values for {channels}-channel images")
            if min(card.std) <= 0:
                raise ValueError(f"std must be positive, got {card.std}")
            if isinstance(card.config, dict) and card.config.get("model", card.model) != card.model:
                raise ValueError(f"it names model {card.model!r} and its recipe {card.config['model']!r}")
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where} has a damaged model header: {err}") from None
        return card


def card_for_model(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> ModelCard:
    """A card for a model that no training run describes: numbered classes, no normalisation (mean 0,
    std 1), images decoded at the model's input size with its channels."""
    from cnnlab import __version__
    from cnnlab.models.layers import first_conv_in_channels, pair

    info = getattr(model, "model_info", None)
    c, h, w = input_size or (
        first_conv_in_channels(model) or 3,
        *pair(getattr(model, "img_size", None) or (info.input_size[1:] if info else 224)),
    )
    if hasattr(model, "get_classifier"):
        num_classes = model.num_classes
    else:
        num_classes = info.num_classes if info else 0
    return ModelCard(
        model=getattr(model, "model_name", type(model).__name__),
        model_options=dict(getattr(model, "model_options", {})),
        num_classes=num_classes,
        input_size=(c, h, w),
        classes=[str(i) for i in range(num_classes)],
        mean=(0.0,),
        std=(1.0,),
        image_size=(h, w),
        image_chans=c,
        cnnlab_version=__version__,
    )


def card_dataset_info(data: str) -> Any:
    """The :class:`cnnlab.data.DatasetInfo` of registry dataset ``data``, which gives a bare weight file's
    card its classes, statistics and image size; an image folder is refused (its statistics would need
    decoding it: the run trained on it measured them)."""
    from cnnlab.data import dataset_info
    from cnnlab.data.imagefolder import is_folder_spec

    if is_folder_spec(data):
        raise UsageError(
            f"--data {data} is an image folder; with --weights, --data names a registry dataset. For a "
            "folder, predict with the run trained on it (or its exported model file), or give "
            "--class-names FILE, --mean and --std (cnnlab data stats FOLDER prints them)"
        )
    return dataset_info(data)


def card_for_weights(
    model: nn.Module,
    source: str = "cnnlab",
    *,
    data: str | None = None,
    classes: tuple[int, ...] = (),
    pad_to: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    class_names: list[str] | None = None,
    file_card: ModelCard | None = None,
) -> ModelCard:
    """What a bare weight file does not say, for ``predict``: how to prepare its images, what its classes are.

    Starting from :func:`card_for_model` (numbered classes, mean 0 and std 1, images at the model's input
    size), or from what ``file_card`` says where the file is a cnnlab model file (its classes, mean/std,
    image size and padding), in order: a reference's weights (``source`` torchvision, timm or ``SOURCE:NAME``) take the
    normalisation they were trained with (ImageNet's mean/std; 0.5/0.5 for timm's Inception-v4 and
    Inception-ResNet-v2); ``data`` (a registry dataset) gives its class names, mean/std, channels and image
    size, ``classes`` picks and orders those classes (as ``--classes`` trained on them); ``pad_to``,
    ``mean``, ``std`` and ``class_names`` (one per class) are taken as given.
    """
    card = card_for_model(model)
    if file_card is not None and file_card.num_classes == card.num_classes:  # a model file as --weights
        for key in ("classes", "mean", "std", "image_size", "image_chans", "pad_to", "data"):
            setattr(card, key, getattr(file_card, key))
    origin, name = parse_weights_from(source)
    from cnnlab.references import list_references, reference, reference_of_model

    if name is not None or origin in {s for s, _ in list_references()}:
        ref = reference(origin, name) if name is not None else reference_of_model(origin, model)
        card.mean, card.std = ref.mean, ref.std
    if data is not None:
        info = card_dataset_info(data)
        names = list(info.classes)
        for index in classes:
            if index >= len(names):
                raise UsageError(f"{data} has {len(names)} classes; there is no class {index}")
        card.classes = [names[i] for i in classes] if classes else names
        card.mean, card.std = tuple(info.mean), tuple(info.std)
        card.image_size, card.image_chans, card.data = tuple(info.image_size), info.in_chans, data
    elif classes:
        raise UsageError("--classes picks class names of a dataset; give --data too (or --class-names)")
    if pad_to is not None:
        card.pad_to = pad_to
    if mean is not None:
        card.mean = tuple(mean)
    if std is not None:
        card.std = tuple(std)
    if class_names is not None:
        card.classes = list(class_names)
    if len(card.classes) != card.num_classes:
        raise UsageError(
            f"{card.model} has {card.num_classes} classes, and {len(card.classes)} class names were given"
            + (f" ({data}{' --classes' if classes else ''})" if data else "")
            + f": name the {card.num_classes} classes it was trained on, in their order"
        )
    if len(card.mean) != len(card.std) or len(card.mean) not in (1, card.image_chans):
        raise UsageError(
            f"mean and std need one value per image channel ({card.image_chans}), got {len(card.mean)} and "
            f"{len(card.std)}"
        )
    return card


def card_from_training_header(header: dict[str, Any], where: str | Path) -> ModelCard:
    """The card of a run's weights file (its header names the recipe and the dataset)."""
    from cnnlab import __version__
    from cnnlab.data.catalog import run_dataset_info
    from cnnlab.train.evaluation import check_training_header

    cfg = check_training_header(Path(where), header)
    info = run_dataset_info(cfg.data, header)
    return ModelCard(
        model=cfg.model,
        model_options=dict(cfg.model_options),
        num_classes=header["num_classes"],
        input_size=tuple(header["input_shape"]),
        classes=[str(c) for c in header.get("classes") or info.classes],
        mean=tuple(info.mean),
        std=tuple(info.std),
        image_size=tuple(info.image_size),
        image_chans=info.in_chans,
        pad_to=cfg.pad_to,
        data=cfg.data,
        config=cfg.to_dict(),
        cnnlab_version=__version__,
    )


def build_from_card(card: ModelCard, where: str | Path = "the model file") -> nn.Module:
    """The registry model a card describes (its classes, channels, options and, where the head is sized
    from it, its input size), with fresh weights; ``where`` names the file the card came from."""
    from cnnlab.models.registry import require_registered
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.engine import build_model_for_data

    if card.config is not None:
        cfg = TrainConfig.from_dict(card.config)
    else:
        cfg = TrainConfig(model=card.model, model_options=dict(card.model_options))
    require_registered(cfg.model, where)
    return build_model_for_data(cfg, card.num_classes, card.input_size)


def read_model_file(
    path: str | Path, which: str | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard, Path]:
    """Tensors, card and weights path of a self-describing file: an exported model file, a run directory,
    a checkpoint manifest or a run's weights file (``which``: ``best``/``last`` of a run directory)."""
    from cnnlab.train.checkpoint import load_weights as read_safetensors
    from cnnlab.train.evaluation import manifest_beside, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        raise UsageError(f"no run directory or model file at {path}")
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        check_torch_file_start(path)  # a web page saved as .pth says so, and is no usage question
        raise UsageError(
            f"{path} is a bare state dict: it does not say which model it is. Name the model with the file, "
            "MODEL --weights FILE (load_weights in Python); cnnlab export MODEL --weights FILE --format "
            "safetensors writes a model file that says it"
        )
    if path.is_dir() or path.suffix == ".json" or (path.is_file() and manifest_beside(path) is not None):
        choice = resolve_checkpoint(path, which)
        weights = choice.weights
        tensors, header = read_safetensors(weights, choice.sha256)
    else:
        weights = path
        tensors, header = read_weight_file(path)
    if header.get("format") == MODEL_FORMAT:
        return tensors, ModelCard.from_header(header, weights), weights
    if "config" in header:
        return tensors, card_from_training_header(header, weights), weights
    raise UsageError(
        f"{weights} does not say which model it is (no cnnlab header); build the model and use load_weights"
    )


def load_model(path: str | Path, which: str | None = None) -> nn.Module:
    """The model saved at ``path`` (an exported model file, a run directory, a checkpoint manifest or a
    run's weights file), built, loaded and in evaluation mode; its card is ``model.model_card``."""
    tensors, card, weights = read_model_file(path, which)
    model = build_from_card(card, weights)
    expected = model.state_dict()
    for key, want in expected.items():
        got = tensors.get(key)
        if got is None or got.shape != want.shape:
            shown = "missing" if got is None else _shape(got)
            raise CheckpointError(
                f"{weights} does not fit the {card.model} it describes: {key} is {shown} in the file and "
                f"{_shape(want)} in the model"
            )
    model.load_state_dict(tensors, strict=True)
    model.model_card = card
    return model.eval()


def save_model_file(model: nn.Module, card: ModelCard, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``model``'s weights with ``card`` as the header: the self-describing file :func:`load_model`,
    :func:`load_weights` and ``cnnlab predict``/``evaluate`` read. An existing file needs ``overwrite``."""
    from cnnlab.train.checkpoint import save_weights
    from cnnlab.train.rundir import output_storage_errors

    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.suffix != ".safetensors":
        raise UsageError(f"a model file is named *.safetensors, got {out.name}")
    with output_storage_errors("the model file", "--out"):
        save_weights(out, model, card.header())
    return out
