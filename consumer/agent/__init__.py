"""Per-node agents that forward what only the node can see (``vmevents agent <vendor>``)."""
