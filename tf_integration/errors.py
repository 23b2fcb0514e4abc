"""Errors of the TensorFlow side, in the project's one hierarchy (engine.errors)."""
try:  # engine never imports TensorFlow; we import engine, never the reverse
    from engine.errors import CupyrtError
except ImportError:  # pragma: no cover - engine not importable in this checkout yet
    class CupyrtError(Exception):
        """Base class of every error cupyrt raises on purpose."""


class TFIntegrationError(CupyrtError):
    """Base of the errors raised by tf_integration."""


class GraphError(TFIntegrationError, ValueError):
    """A GraphDef is malformed for conversion (duplicate names, dangling inputs, cycles)."""


class RegistryError(TFIntegrationError, ValueError):
    """A converter was registered twice or looked up for an op without one."""


class ConversionError(TFIntegrationError, ValueError):
    """A TensorFlow node could not be expressed as engine layers.

    ``node`` names the TF node when the failure is that node's (the converter
    then leaves just that node to TensorFlow and segments again).
    """

    def __init__(self, message, node=None):
        super().__init__(message)
        self.node = node


class ConverterArgumentError(TFIntegrationError, ValueError):
    """TrtGraphConverter was given an argument it cannot take."""

    def __init__(self, argument, given, expected):
        self.argument, self.given, self.expected = argument, given, expected
        super().__init__(f"TrtGraphConverter: argument '{argument}' is {given!r}; "
                         f"expected {expected}")


class EngineNodeError(TFIntegrationError, RuntimeError):
    """An engine node could not run (and no fallback could either)."""
