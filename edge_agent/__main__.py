"""``python -m edge_agent`` runs the agent's command line."""

import sys

from edge_agent.cli import main

sys.exit(main())
