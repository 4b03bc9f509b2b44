"""Trainer callbacks: exponential moving average of the trained weights, a monitor, and the
preflight report of the first step on the longest batch."""

from forge_advisor.train.callbacks.ema import EMACallback
from forge_advisor.train.callbacks.monitor import MonitorCallback, TrainingDiverged
from forge_advisor.train.callbacks.preflight import PreflightCallback

__all__ = ["EMACallback", "MonitorCallback", "PreflightCallback", "TrainingDiverged"]
