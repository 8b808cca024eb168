"""The agent that runs beside ComfyUI on every GPU instance (see docs/architecture.md)."""
