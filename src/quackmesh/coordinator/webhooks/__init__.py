"""Webhooks: a client's URLs that receive its events, HMAC-signed, retried with backoff.

``service`` holds the rules (registration, URL checks, deliveries), ``fanout`` turns the
event log into delivery rows, ``dispatcher`` sends them from the app's event loop and
``transport`` guards the connections; the signature scheme is :mod:`quackmesh.core.webhooks`.
"""
