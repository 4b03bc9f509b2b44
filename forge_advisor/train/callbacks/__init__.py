"""Trainer callbacks: exponential moving average of the trained weights, and a monitor."""

from forge_advisor.train.callbacks.ema import EMACallback
from forge_advisor.train.callbacks.monitor import MonitorCallback, TrainingDiverged

__all__ = ["EMACallback", "MonitorCallback", "TrainingDiverged"]
