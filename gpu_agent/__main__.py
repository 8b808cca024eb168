"""``python -m gpu_agent``: run the agent beside ComfyUI."""

import sys

from gpu_agent.main import main

sys.exit(main(sys.argv[1:]))
