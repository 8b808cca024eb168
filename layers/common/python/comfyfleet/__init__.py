"""comfyfleet: run ComfyUI workflows for many API users on a fleet of GPU machines."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("comfyfleet")
except _metadata.PackageNotFoundError:  # running from a Lambda layer, not an installed dist
    __version__ = "0.1.0"
