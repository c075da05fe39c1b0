"""Tunebench's Textual workbench: reads the engine, never the other way round."""
