"""TensorRT's ILogger on top of Python's logging."""
import enum
import logging


class Logger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    _LEVELS = {Severity.INTERNAL_ERROR: logging.CRITICAL, Severity.ERROR: logging.ERROR,
               Severity.WARNING: logging.WARNING, Severity.INFO: logging.INFO,
               Severity.VERBOSE: logging.DEBUG}

    def __init__(self, min_severity=Severity.WARNING):
        self.min_severity = Logger.Severity(min_severity)
        self._log = logging.getLogger("cupyrt")

    def log(self, severity, msg):
        """Called for every message the engine emits; override to redirect."""
        if severity <= self.min_severity:
            self._log.log(self._LEVELS[Logger.Severity(severity)], msg)

    def python_level(self):
        return self._LEVELS[self.min_severity]
