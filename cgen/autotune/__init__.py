"""Automatic optimisation: config spaces, measurement, logs (tuner to come)."""
from .space import ConfigSpace, Config, Knob, split_choices, divisors
from .log import Record, LogWriter, read_log, best_records, canonical
