"""Rentals: nodes reserved for one client at their hourly price, escrowed up front and
paid to the providers per settle period (a minute by default) of online time."""
