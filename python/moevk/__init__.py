"""moevk: Mixture-of-Experts layers on any Vulkan device, from Python.

    import moevk, numpy as np
    layer = moevk.Layer.from_pretrained("Mixtral-8x7B-v0.1", layer=0, quantize="q4_k")
    y = layer(np.random.randn(16, layer.hidden).astype(np.float32))
    print(layer.stats, layer.stage_times)

Errors raise subclasses of moevk.Error (one per moevk_status, .status the
code) carrying the library's message; moevk.CheckpointError for a
checkpoint that cannot be read as a MoE layer."""

from ._moevk import (
    BusyError,
    CheckpointError,
    DeviceLostError,
    Error,
    InternalError,
    InvalidArgumentError,
    LimitExceededError,
    NoDeviceError,
    NoVulkanError,
    OutOfDeviceMemoryError,
    OutOfHostMemoryError,
    TimeoutError,
    UnsupportedError,
    VulkanError,
)
from ._api import Context, Device, Layer, Memory, RoutingStats, backends, devices

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "CheckpointError",
    "Context",
    "Device",
    "DeviceLostError",
    "Error",
    "InternalError",
    "InvalidArgumentError",
    "Layer",
    "LimitExceededError",
    "Memory",
    "NoDeviceError",
    "NoVulkanError",
    "OutOfDeviceMemoryError",
    "OutOfHostMemoryError",
    "RoutingStats",
    "TimeoutError",
    "UnsupportedError",
    "VulkanError",
    "backends",
    "devices",
]
