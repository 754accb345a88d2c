"""Alerts: health checks every minute and after each run (monitor.py), the alert state
machine and deliveries (manager.py, store.py), and the channels: one message shape and sending
discipline (base.py), three ways out (email.py, slack.py, webhook.py; channels.py builds the one
a config names).
"""
