"""The dataset registry and where datasets are looked for on disk.

Each dataset of the MNIST family is four IDX files under fixed names. A file is trusted by the SHA-256
of its *decompressed* content (``raw_sha256``), because re-packagers such as Debian re-gzip the files:
their .gz bytes differ from the official ones while the IDX content is identical. The official .gz
SHA-256 (``gz_sha256``) is kept as well, to check a fresh download before it is decompressed.

Lookup: an explicit ``data_dir`` is the only place searched; else ``$CNNLAB_DATA``, if set, is the only
place searched; else the user cache (``$XDG_CACHE_HOME/cnnlab``, default ``~/.cache/cnnlab``), then system
locations such as ``/usr/share/datasets`` (where Debian's ``dataset-fashion-mnist`` package installs), first
hit wins. An explicit place that does not hold the dataset is an error naming what is missing there, never a
silent fallback to data elsewhere. In each place the files are looked for in ``<place>/<name>/``; an explicit
``data_dir`` may also hold them directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.errors import DataError, UsageError, unknown_choice

# Places shipped by operating-system packages; $CNNLAB_SYSTEM_DATA_DIRS (colon-separated, may be empty)
# replaces them, e.g. to test the behaviour of a machine without them.
SYSTEM_DATA_DIRS: tuple[str, ...] = ("/usr/share/datasets", "/usr/local/share/datasets")
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
# What loading an image folder does with an image it cannot decode (cnnlab.data.imagefolder).
BAD_IMAGE_POLICIES = ("error", "skip")


def check_bad_images(policy: str) -> None:
    """UsageError unless ``policy`` is one of :data:`BAD_IMAGE_POLICIES`."""
    if policy not in BAD_IMAGE_POLICIES:
        raise unknown_choice("--bad-images value", str(policy), BAD_IMAGE_POLICIES)


@dataclass(frozen=True)
class DataFile:
    """One IDX file of a dataset: its name (without .gz) and the checksums that identify it.

    ``raw_sha256``: SHA-256 of the decompressed IDX bytes (None where it could not be established).
    ``gz_sha256`` / ``gz_md5``: of the official .gz as distributed by the publisher's mirrors.
    ``raw_size``: length of the decompressed IDX bytes, where known; decompression stops past it.
    """

    name: str
    raw_sha256: str | None = None
    gz_sha256: str | None = None
    gz_md5: str | None = None
    raw_size: int | None = None

    @property
    def gz_name(self) -> str:
        """The file name as distributed (gzip-compressed)."""
        return self.name + ".gz"


@dataclass(frozen=True)
class Archive:
    """A dataset distributed as one archive (CIFAR): its file name, checksums, exact size, and the folder
    its files unpack into (``DataFile.name`` of each file starts with it)."""

    name: str
    sha256: str | None
    md5: str | None
    size: int
    folder: str


# How a dataset's files are laid out and read: the MNIST family's four IDX files, or CIFAR's binary
# record files (cnnlab.data.cifar).
FORMATS = ("idx", "cifar")


@dataclass(frozen=True)
class DatasetInfo:
    """Everything known about one dataset without reading it."""

    name: str
    title: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    train_size: int
    test_size: int
    files: dict[str, DataFile]
    mirrors: tuple[str, ...] = ()
    homepage: str = ""
    license: str = ""
    paper: str = ""
    debian_package: str | None = None
    stats_source: str = ""
    in_chans: int = 1
    description: str = field(default="", compare=False)
    format: str = "idx"
    archive: Archive | None = None
    coarse_classes: tuple[str, ...] = ()  # CIFAR-100's 20 superclasses (the labels used are the fine ones)

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are 0 .. num_classes - 1)."""
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as a model sees it."""
        return (self.in_chans, *self.image_size)

    def install_hint(self) -> str:
        """How to get this dataset, for error messages."""
        hint = f"run `cnnlab data fetch {self.name}`"
        if self.debian_package:
            hint += f", or on Debian `apt-get install {self.debian_package}`"
        if self.format == "cifar" and self.archive is not None:
            return hint + (
                f", or pass --data-dir / set CNNLAB_DATA to a directory holding {self.archive.folder}/ "
                f"(unpacked from {self.archive.name})"
            )
        return hint + ", or pass --data-dir / set CNNLAB_DATA to a directory holding the four IDX files"


def _mnist_files(raw: tuple, gz: tuple, md5: tuple) -> dict[str, DataFile]:
    """The four standard files (same names across the family) with their checksums, in ROLES order."""
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    # 60k/10k images of 28x28 uint8 (16-byte header) and as many labels (8-byte header), for all three.
    sizes = (16 + 60_000 * 28 * 28, 8 + 60_000, 16 + 10_000 * 28 * 28, 8 + 10_000)
    return {
        role: DataFile(n, r, g, m, size) for role, n, r, g, m, size in zip(ROLES, names, raw, gz, md5, sizes)
    }


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, *, replace: bool = False) -> DatasetInfo:
    """Add ``info`` to the registry (tests may register synthetic datasets); returns it."""
    if info.name in DATASETS and not replace:
        raise UsageError(f"dataset {info.name!r} is already registered (pass replace=True to override)")
    if info.format not in FORMATS:
        raise UsageError(
            f"dataset {info.name!r}: unknown format {info.format!r} (one of {', '.join(FORMATS)})"
        )
    if info.format == "idx" and set(info.files) != set(ROLES):
        raise UsageError(f"dataset {info.name!r} must name exactly the files {', '.join(ROLES)}")
    if len(info.mean) != info.in_chans or len(info.std) != info.in_chans:
        raise UsageError(f"dataset {info.name!r}: mean and std need one value per channel ({info.in_chans})")
    DATASETS[info.name] = info
    return info


# MNIST (LeCun, Cortes, Burges). gz SHA-256: the files served by the mirrors below (identical on all);
# raw SHA-256: the decompressed files, as recorded by several independent projects (not measured here:
# this machine has no copy). mean/std over the 60k training pixels, the values the PyTorch examples use.
register_dataset(
    DatasetInfo(
        name="mnist",
        title="MNIST handwritten digits",
        classes=tuple("0123456789"),
        mean=(0.1307,),
        std=(0.3081,),
        image_size=(28, 28),
        train_size=60_000,
        test_size=10_000,
        files=_mnist_files(
            raw=(
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            gz=(
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
            md5=(
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0",
        paper="LeCun et al. 1998, Gradient-based learning applied to document recognition",
        stats_source="commonly used values (PyTorch MNIST example); not re-measured here",
    )
)

# Fashion-MNIST (Xiao, Rasul, Vollgraf 2017). raw SHA-256 measured here on Debian's files; official
# .gz SHA-256 and MD5 as published with the dataset (README, "Get the data"); mean/std measured here
# over the 60k training pixels (0.28604, 0.35302).
register_dataset(
    DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando article images)",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mean=(0.2860,),
        std=(0.3530,),
        image_size=(28, 28),
        train_size=60_000,
        test_size=10_000,
        files=_mnist_files(
            raw=(
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            gz=(
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
            md5=(
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT",
        paper="Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747",
        debian_package="dataset-fashion-mnist",
        stats_source="measured by cnnlab on the 60k training images (0.28604, 0.35302)",
    )
)

# Kuzushiji-MNIST (Clanuwat et al. 2018): ten hiragana, romanised. Only the official .gz hashes could be
# established (raw SHA-256 unknown), so an uncompressed KMNIST file is validated structurally only.
register_dataset(
    DatasetInfo(
        name="kmnist",
        title="Kuzushiji-MNIST (cursive Japanese hiragana)",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mean=(0.1918,),
        std=(0.3483,),
        image_size=(28, 28),
        train_size=60_000,
        test_size=10_000,
        files=_mnist_files(
            raw=(None, None, None, None),
            gz=(
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            ),
            md5=(
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
        ),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        homepage="https://github.com/rois-codh/kmnist",
        license="CC BY-SA 4.0",
        paper="Clanuwat et al. 2018, Deep Learning for Classical Japanese Literature, arXiv:1812.01718",
        stats_source="commonly used values; not re-measured here",
    )
)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100's fine labels in label order (alphabetical, as in the archive's fine_label_names.txt), and
# its 20 coarse superclasses (coarse_label_names.txt).
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
    can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
    dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
    lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
    pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
    seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
    tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
    worm""".split()
)
CIFAR100_COARSE_CLASSES = tuple(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
    household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes
    large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals
    trees vehicles_1 vehicles_2""".split()
)
CIFAR_RECORD_PIXELS = 3 * 32 * 32  # a record: label byte(s), then the red, green and blue 32x32 planes

# CIFAR (Krizhevsky 2009), the binary version. Archive SHA-256: as recorded by several independent
# projects' download code (Go, Julia and Haskell dataset loaders agree), not measured here (no network);
# MD5: as published on the CIFAR page. Per-file SHA-256 of the unpacked .bin files: as recorded by one
# project (torch.rb's dataset code), not measured here; a file unpacked by `cnnlab data fetch` from the
# verified archive is also accepted by the digest recorded at unpacking (cnnlab.data.cifar). mean/std per
# channel over the 50k training images: the values commonly published (e.g. in the CIFAR ResNet
# reproductions), not re-measured here.
# What CIFAR-10 and CIFAR-100 share: publisher, shape, split sizes, format.
_CIFAR_COMMON: dict = dict(
    image_size=(32, 32),
    train_size=50_000,
    test_size=10_000,
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="no licence stated; cite the tech report",
    paper="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
    stats_source="commonly published values over the 50k training images; not re-measured here",
    in_chans=3,
    format="cifar",
)
register_dataset(
    DatasetInfo(
        name="cifar10",
        title="CIFAR-10 (32x32 colour images, 10 classes)",
        classes=CIFAR10_CLASSES,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        files={
            **{
                f"train_{i}": DataFile(
                    f"cifar-10-batches-bin/data_batch_{i}.bin", sha, raw_size=10_000 * 3073
                )
                for i, sha in enumerate(
                    (
                        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
                        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
                        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
                        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
                        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
                    ),
                    start=1,
                )
            },
            "test": DataFile(
                "cifar-10-batches-bin/test_batch.bin",
                "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
                raw_size=10_000 * 3073,
            ),
        },
        **_CIFAR_COMMON,
        archive=Archive(
            "cifar-10-binary.tar.gz",
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            "c32a1d4ab5d03f1284b67883e8d87530",
            170_052_171,
            "cifar-10-batches-bin",
        ),
    )
)
register_dataset(
    DatasetInfo(
        name="cifar100",
        title="CIFAR-100 (32x32 colour images, 100 classes in 20 superclasses)",
        classes=CIFAR100_CLASSES,
        coarse_classes=CIFAR100_COARSE_CLASSES,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        files={
            "train": DataFile(
                "cifar-100-binary/train.bin",
                "f31298fc616915fa142368359df1c4ca2ae984d6915ca468b998a5ec6aeebf29",
                raw_size=50_000 * 3074,
            ),
            "test": DataFile(
                "cifar-100-binary/test.bin",
                "d8b1e6b7b3bee4020055f0699b111f60b1af1e262aeb93a0b659061746f8224a",
                raw_size=10_000 * 3074,
            ),
        },
        **_CIFAR_COMMON,
        archive=Archive(
            "cifar-100-binary.tar.gz",
            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            "03b5dce01913d631647c71ecec9e9cb8",
            168_513_733,
            "cifar-100-binary",
        ),
    )
)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; UsageError with close matches if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_choice("dataset", name, DATASETS) from None


#: the keys of a checkpoint header that say how the run prepared its images (:func:`run_dataset_info`)
PREPARATION_KEYS = ("mean", "std", "image_size", "image_chans")


def preparation_header(info: DatasetInfo) -> dict[str, object]:
    """What a run's checkpoints record of how its images were prepared: an image folder's mean, std and
    size are measured from the folder, so nothing but the run can say them later."""
    return {"mean": list(info.mean), "std": list(info.std), "image_size": list(info.image_size),
            "image_chans": info.in_chans}  # fmt: skip


def run_dataset_info(data: str, header: dict) -> DatasetInfo:
    """How the run whose checkpoint ``header`` this is prepared its images from ``data``: what the header
    records (:func:`preparation_header`), else the registry's entry for ``data``."""
    if all(key in header for key in PREPARATION_KEYS):
        return DatasetInfo(
            name=data, title=data, classes=tuple(str(c) for c in header.get("classes") or ()),
            mean=tuple(map(float, header["mean"])), std=tuple(map(float, header["std"])),
            image_size=tuple(int(v) for v in header["image_size"]), train_size=0, test_size=0, files={},
            in_chans=int(header["image_chans"]), stats_source="recorded in the run's checkpoint",
        )  # fmt: skip
    if data in DATASETS:
        return DATASETS[data]
    raise DataError(
        f"the run's checkpoint does not record how it prepared its images from {data} (an image-folder run "
        "of an older cnnlab); train it again to predict, export or show it, or evaluate it with its folder"
    )


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cnnlab``, or ``~/.cache/cnnlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnlab"


def default_fetch_dir() -> Path:
    """Where ``cnnlab data fetch`` puts data without --data-dir: ``$CNNLAB_DATA`` or the user cache."""
    return Path(os.environ["CNNLAB_DATA"]) if os.environ.get("CNNLAB_DATA") else user_cache_dir()


def system_data_dirs() -> tuple[str, ...]:
    """System locations searched last: ``$CNNLAB_SYSTEM_DATA_DIRS`` if set, else :data:`SYSTEM_DATA_DIRS`."""
    override = os.environ.get("CNNLAB_SYSTEM_DATA_DIRS")
    if override is not None:
        return tuple(d for d in override.split(os.pathsep) if d)
    return SYSTEM_DATA_DIRS


def search_roots(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each labelled by where it came from: an explicit ``data_dir`` alone,
    else ``$CNNLAB_DATA`` alone, else the user cache and the system locations."""
    if data_dir is not None:
        return [("--data-dir", Path(data_dir))]
    if os.environ.get("CNNLAB_DATA"):
        return [("$CNNLAB_DATA", Path(os.environ["CNNLAB_DATA"]))]
    return [("user cache", user_cache_dir())] + [("system", Path(d)) for d in system_data_dirs()]


def explicit_root(data_dir: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The one place the user named (``data_dir``, else ``$CNNLAB_DATA``), labelled; None if neither."""
    roots = search_roots(data_dir)
    return roots[0] if roots[0][0] in ("--data-dir", "$CNNLAB_DATA") else None


def check_explicit_root(data_dir: str | os.PathLike | None = None, hint: str = "") -> None:
    """UsageError (a command to change) if the place the user named does not exist or is a file rather
    than a folder; ``hint`` (how to get the data) ends the message for a folder that does not exist."""
    named = explicit_root(data_dir)
    if named is None:
        return
    label, root = named
    what = f"data directory {root}" if label == "--data-dir" else f"$CNNLAB_DATA ({root})"
    if root.is_file():
        raise UsageError(
            f"{what} is a file, not a folder; name the folder that holds the dataset (e.g. {root.parent})"
        )
    if not root.is_dir():
        raise UsageError(
            f"{what} does not exist; name the folder that holds the dataset"
            + (f", or {hint}" if hint else "")
        )


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> Iterator[tuple[str, Path]]:
    """Directories that may hold ``name``'s files, in lookup order (an explicit data_dir also as is)."""
    for label, root in search_roots(data_dir):
        yield label, root / name
        if label == "--data-dir":
            yield label, root


def find_file(directory: Path, file: DataFile) -> Path | None:
    """The file in ``directory``, uncompressed preferred (faster to read), else the .gz; None if absent."""
    for candidate in (directory / file.name, directory / file.gz_name):
        if candidate.is_file():
            return candidate
    return None


def dataset_files(directory: Path, info: DatasetInfo) -> dict[str, Path] | None:
    """Role -> path when ``directory`` holds all the files of ``info``, else None."""
    found = {role: find_file(directory, f) for role, f in info.files.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def missing_files(directory: Path, info: DatasetInfo) -> str:
    """What ``directory`` lacks of ``info``'s files, in words, e.g. for an error message."""
    if not directory.is_dir():
        return f"there is no folder {directory}"
    gz = "[.gz]" if info.format == "idx" else ""
    absent = [f"{f.name}{gz}" for f in info.files.values() if find_file(directory, f) is None]
    return f"{directory} lacks {', '.join(absent)}" if absent else f"{directory} holds all its files"


def locate_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The first directory in lookup order holding all four files of ``name``; DataError saying how to get it.

    A place the user named (``data_dir`` or ``$CNNLAB_DATA``) is the only one searched: if the dataset is not
    there, the error says what is missing there rather than falling back to a copy elsewhere.
    """
    info = dataset_info(name)
    check_explicit_root(data_dir, info.install_hint())
    searched = []
    for _, directory in candidate_dirs(name, data_dir):
        if dataset_files(directory, info) is not None:
            return directory
        searched.append(directory)
    named = explicit_root(data_dir)
    if named is not None:
        label, root = named
        where = f"--data-dir {root}" if label == "--data-dir" else f"$CNNLAB_DATA={root}"
        lacks = "; ".join(missing_files(d, info) for d in searched)
        raise DataError(f"dataset {name!r} not found in {where} ({lacks}); {info.install_hint()}")
    raise DataError(
        f"dataset {name!r} not found (searched {', '.join(map(str, searched))}); {info.install_hint()}"
    )
