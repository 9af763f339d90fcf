"""Where code runs: target descriptions, the toolchain driver and runners."""
from .target import Target, resolve, TARGET_NAMES
from .toolchain import CompileError, ToolchainMissing, compile_c
