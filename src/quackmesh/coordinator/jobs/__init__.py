"""Jobs: validated submission with escrow, reading, cancelling, settling."""
