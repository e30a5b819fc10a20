"""Network figures for the dashboard: live counters, health, wallet history, earnings."""
