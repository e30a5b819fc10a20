"""Provider nodes: registration, write-behind liveness, offline detection."""
