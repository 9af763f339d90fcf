"""Bare-metal Cortex-M images under QEMU system emulation, with semihosting for I/O.

The image (a harness linked with newlib's rdimon, see cgen/codegen/cortex_m.py) runs on
a board QEMU models; semihosting gives it the host's files (QEMU's working directory),
stdout, argv and its exit status.  The runner is a targets/process.py Runner with QEMU's
command line: a crash, a fault loop or a timeout comes back as an error value.
targets/runner.py's table gives it to targets whose runner is "qemu-system-arm".

Parameter files are not named on the command line: newlib's rdimon start-up fetches it
into a 256-byte buffer and gives main argc 0 beyond that, which a few dozen parameters
overflow.  The harness opens `arg0.bin`, `arg1.bin`, ... itself (`arg_file`), in the
directory the runner stages them in, and argv carries only `--time REPEAT NUMBER`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .process import Runner, arg_file

__all__ = ["Board", "SemihostRunner", "QEMU_SYSTEM_ARM", "board_for", "arg_file",
           "LINK_FLAGS", "CMDLINE_MAX"]

# newlib (libgloss/arm crt0) reads the semihosting command line into 256 bytes, NUL
# included; a longer one leaves argc at 0 (measured: 254 characters pass, 255 do not)
CMDLINE_MAX = 254
# link against newlib's semihosting ("remote debug monitor") system calls
LINK_FLAGS = ("--specs=rdimon.specs",)


@dataclass(frozen=True)
class Board:
    """A board QEMU models: its -M name and memory, as (origin, bytes); link_flags beyond
    LINK_FLAGS (the image's own heap, see cgen/codegen/cortex_m.py)."""
    machine: str
    rom: tuple
    ram: tuple
    link_flags: tuple = ()


# Arm's MPS2 FPGA image AN386 (a Cortex-M4 with FPU): code at 0, 4 MiB SRAM at 0x20000000.
MPS2_AN386 = Board("mps2-an386", (0x00000000, 4 << 20), (0x20000000, 4 << 20))

# Arm's MPS3 FPGA image AN547 (Corstone-300: a Cortex-M55 with MVE).  QEMU loads an
# image only into the 512 KiB ITCM at 0 (the secure core's reset vector table is read at
# its alias 0x10000000) and the 512 KiB DTCM at 0x20000000: its SRAMs, QSPI and DDR sit
# behind memory protection controllers, where -kernel writes nothing.  Code and
# constants go to the ITCM but its top 64 KiB, where semihosting's HEAPINFO (QEMU's
# largest RAM bank, the ITCM) puts newlib's stack; data and the heap to the DTCM, the
# heap by the image's own _sbrk, since newlib's is bounded by that same ITCM.
MPS3_AN547 = Board("mps3-an547", (0x00000000, 448 << 10), (0x20000000, 512 << 10),
                   ("-Wl,--wrap=_sbrk",))

# The board an image for each bare-metal architecture runs on.
BOARDS = {"armv7e-m": MPS2_AN386, "armv8m": MPS3_AN547}


# Cores with a board of their own among those of their architecture (by -mcpu=); AN500's
# memory map is AN386's.
MPS2_AN500 = Board("mps2-an500", MPS2_AN386.rom, MPS2_AN386.ram)
CPU_BOARDS = {"cortex-m7": MPS2_AN500}


def board_for(target) -> Board:
    cpu = next((f[len("-mcpu="):] for f in target.cflags if f.startswith("-mcpu=")), "")
    if cpu in CPU_BOARDS:
        return CPU_BOARDS[cpu]
    try:
        return BOARDS[target.arch]
    except KeyError:
        raise ValueError(f"no board to run bare-metal {target.arch} images of target "
                         f"{target.name}; known: {', '.join(BOARDS)}") from None


@dataclass(frozen=True)
class SemihostRunner(Runner):
    """Runs an image with `qemu-system-arm -M BOARD -kernel IMAGE` and semihosting on."""
    board: Board = MPS2_AN386

    def for_target(self, target) -> "SemihostRunner":
        return replace(self, board=board_for(target))

    def command(self, exe, paths, repeat: int, number: int) -> list:
        argv = ["prog"] + (["--time", str(int(repeat)), str(int(number))] if repeat else [])
        if len(" ".join(argv)) > CMDLINE_MAX:
            raise ValueError(f"semihosting command line over {CMDLINE_MAX} characters: {argv}")
        return [*self.prefix, "-M", self.board.machine, "-nographic", "-monitor", "none",
                "-semihosting-config",
                "enable=on,target=native," + ",".join(f"arg={a}" for a in argv),
                "-kernel", str(exe)]


QEMU_SYSTEM_ARM = SemihostRunner("qemu-system-arm", ("qemu-system-arm",), "qemu-system-arm",
                                 emulated=True)
