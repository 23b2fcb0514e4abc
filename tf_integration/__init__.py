"""cupyrt's TensorFlow side: segmenter, op converters, engine nodes, TF-TRT's converter API.

    from tf_integration import TrtGraphConverter, import_graph_def
"""
from .converter import GraphConverter, TrtGraphConverter  # noqa: F401
from .engine_node import EngineFallbackWarning, import_graph_def, wrap_frozen_graph  # noqa: F401
from .export import export_engines  # noqa: F401
from .graph_utils import freeze_keras_model  # noqa: F401
from .registry import converter, supported_ops, supported_ops_markdown  # noqa: F401
