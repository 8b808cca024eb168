"""The whole system on one machine (``comfyfleet dev``); needs the ``dev`` extra (moto)."""
