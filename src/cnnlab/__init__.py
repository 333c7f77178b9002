"""cnnlab: classic convolutional networks, faithful to their papers.

>>> import cnnlab
>>> model = cnnlab.create_model("lecture-simple")          # 10 classes, 1x28x28 input
>>> cnnlab.list_models("lecture-*")
['lecture-inception', 'lecture-residual', 'lecture-simple']
"""

from cnnlab.errors import CnnlabError, UsageError
from cnnlab.models import create_model, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = ["CnnlabError", "UsageError", "create_model", "list_models", "model_info", "register_model"]
