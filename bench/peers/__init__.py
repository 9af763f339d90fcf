"""Peers of the ARM bench that need more than a download: XNNPACK's micro-kernels driven in
the bare-metal AArch64 harness (xnnpack_run), and the Cortex-M bound rows (mclass)."""
