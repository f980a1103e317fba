"""The package's version: its one source (read by the build and by `captum_layerinf`)."""

__version__ = "0.1.0"
