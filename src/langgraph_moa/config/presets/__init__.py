"""Presets shipped as data: one YAML file per preset."""
