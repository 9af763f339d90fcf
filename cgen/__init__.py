"""cgen: tensor programs and ONNX models to fast, portable C."""
from . import te
from .build import build, Module
from .schedule import Schedule, ScheduleError
from .lower.lower import lower

__version__ = "0.1.0"
__all__ = ["te", "build", "Module", "Schedule", "ScheduleError", "lower"]
