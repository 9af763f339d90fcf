"""Schedules: primitive records and the TVM-style builder over them."""
from .schedule import Schedule, Stage, ScheduleError
from .records import records_from_json, records_to_json
