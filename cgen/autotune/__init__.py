"""Automatic optimisation: config spaces, features, cost models, search, the
tuning loop, measurement and logs (see cgen.autotune.tuner for the loop)."""
from ..ops.space import ConfigSpace, Config, Knob, split_choices, divisors
from .log import Record, LogWriter, read_log, best_records, canonical, apply_best
from .record import ErrorKind, MeasureError, MeasureInput, MeasureResult
from .task import Task, WorkloadError, make_task, parse_workload
from .measure import Measurer, measure_config
from .tuner import Tuner, TuneResult
