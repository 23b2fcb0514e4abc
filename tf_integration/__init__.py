"""cupyrt's TensorFlow side: segmenter, op converters, engine nodes, TF-TRT's converter API.

    from tf_integration import TrtGraphConverter, import_graph_def
    from tf_integration import TrtGraphConverterV2, load_saved_model     # TF2 SavedModels

Importing the package registers the function that runs engine nodes inside
saved models (saved_model_runtime.py), so ``tf.saved_model.load`` works too.
Modules of the package import a name from the module that defines it, never
from this facade (tests/test_import_graph.py checks it).
"""
from .graph_converter import GraphConverter, TrtGraphConverter  # noqa: F401
from .engine_node import EngineFallbackWarning, import_graph_def, wrap_frozen_graph  # noqa: F401
from .export import export_engines  # noqa: F401
from .graph_utils import freeze_keras_model  # noqa: F401
from .registry import converter, supported_ops, supported_ops_markdown  # noqa: F401
from .saved_model import TrtGraphConverterV2  # noqa: F401
from .saved_model_runtime import load_saved_model  # noqa: F401
