"""Tunebench engine: headless fine-tuning runs driven by a config, streamed as events."""

__version__ = "0.1.0"
