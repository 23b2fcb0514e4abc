"""One exception hierarchy for the whole project.

Every error names what was found, what was expected and, where there is a
closed set, the valid choices (see STYLE.md, convention 6).
"""


class CupyrtError(Exception):
    """Base class of every error cupyrt raises on purpose."""


class NetworkDefinitionError(CupyrtError, ValueError):
    """A layer was added or configured with an argument it cannot take."""

    def __init__(self, layer, argument, given, expected):
        self.layer, self.argument, self.given, self.expected = layer, argument, given, expected
        super().__init__(f"{layer}: argument '{argument}' is {given}; expected {expected}")


class BuildError(CupyrtError, RuntimeError):
    """The builder could not turn a network into an engine."""


class PlanFormatError(CupyrtError, ValueError):
    """A serialized plan is truncated, corrupted or of another version."""


class ExecutionError(CupyrtError, ValueError):
    """An execution context was given inputs it cannot run."""


class PluginError(CupyrtError, ValueError):
    """A plugin is unknown, registered twice, or misbehaves."""


class CalibrationError(CupyrtError, ValueError):
    """Calibration data or a calibration cache cannot be used."""

