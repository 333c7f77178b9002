"""Names of the training augmentations and the test-time views, torch-free (the CLI lists them in --help
without importing torch). The code is in :mod:`cnnlab.data.augment` and :mod:`cnnlab.train.tta`."""

from __future__ import annotations

#: training augmentation pipeline -> the paper it follows (cnnlab.data.augment)
AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation (or the custom --crop-padding/--flip)",
    "flip": "Chatfield et al. 2014 Sec. 3.2: random horizontal flip",
    "crops": "Chatfield et al. 2014 Sec. 3.2: corner and centre crops, flipped at random",
    "cifar": "He et al. 2016 Sec. 4.2: pad 4, random crop, flip",
    "alexnet": "Krizhevsky et al. 2012 Sec. 4.1: random crop, flip, PCA colour noise",
    "vgg": "Simonyan & Zisserman 2015 Sec. 3.1: scale jittering S in [Smin, Smax], crop, flip",
    "inception": "Szegedy et al. 2015 Sec. 6: random-resized crop (area 8-100%, aspect 3/4-4/3), flip",
}

#: test-time evaluation -> its views (cnnlab.train.tta)
TTA_MODES: dict[str, str] = {
    "center": "the centre crop of the input size (what training validates on)",
    "flip": "the centre crop and its mirror image, softmax averaged",
    "flip-shift": "the centre crop, its copies moved one pixel down-right and up-left (edge pixels repeated), "
    "and the three's mirror images, softmax averaged (airbench's translations, Jordan 2024)",
    "5crop": "four corner crops and the centre crop, softmax averaged (Chatfield et al. 2014)",
    "10crop": "the five crops and their mirror images, softmax averaged (Krizhevsky et al. 2012 Sec. 4.1)",
    "multiscale": "centre crop and its mirror image at each --scales shorter side, softmax averaged",
    "dense": "fully-connected layers as convolutions over the whole image and its mirror image, class "
    "scores averaged spatially, at each --scales shorter side (Simonyan & Zisserman 2015 Sec. 3.2)",
}


def views_said(mode: str | None) -> str:
    """`` on MODE views`` for a figure measured under test-time views other than the centre crop, else
    nothing: appended to an accuracy so that it is not mistaken for the centre crop's."""
    return "" if mode in (None, "center") else f" on {mode} views"
