"""sample-app: quotes prices with discount and tax; the project the reference pipeline ships."""

try:
    from sample_app._version import __version__
except ImportError:  # a source checkout: the build writes _version.py into the wheel
    __version__ = "0.0.0.dev0"

__all__ = ["__version__"]
