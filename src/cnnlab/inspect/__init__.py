"""Seeing inside runs and networks: the HTML report, filters, feature maps, Grad-CAM, TensorBoard logs.

* :func:`write_report` - one self-contained HTML page for one or several runs (``cnnlab report``).
* :mod:`cnnlab.inspect.views` - filters, activations and Grad-CAM as numpy arrays, and their pictures.
* :func:`show_filters`, :func:`show_activations`, :func:`show_cam` - the same as PNG files (``cnnlab show``).
* :mod:`cnnlab.inspect.images` - one image file as a run's model input (the one home of that conversion).
* :mod:`cnnlab.inspect.tensorboard` - event files beside ``metrics.csv`` (``cnnlab train --tensorboard``).
"""

from cnnlab.inspect.images import image_to_tensor, load_image, read_image
from cnnlab.inspect.report import write_report
from cnnlab.inspect.show import show_activations, show_cam, show_filters
from cnnlab.inspect.views import ClassActivation, activations, filters, grad_cam

__all__ = [
    "ClassActivation",
    "activations",
    "filters",
    "grad_cam",
    "image_to_tensor",
    "load_image",
    "read_image",
    "show_activations",
    "show_cam",
    "show_filters",
    "write_report",
]
