"""Operators as te computes (TOPI-style); schedules are applied by the caller."""
# (modules are named so that none shadows a function exported here: softmax_template, not softmax)
from .nn import (matmul, qgemm_int8, conv2d_nchw, depthwise_conv2d_nchw, max_pool2d, avg_pool2d,
                 softmax, broadcast_binary, broadcast_shape)

__all__ = ["matmul", "qgemm_int8", "conv2d_nchw", "depthwise_conv2d_nchw", "max_pool2d",
           "avg_pool2d", "softmax", "broadcast_binary", "broadcast_shape"]
