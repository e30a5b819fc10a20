"""Layer 4: the provider node agent and its sandbox runner."""
