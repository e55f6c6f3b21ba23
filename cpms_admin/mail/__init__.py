"""E-mail delivery: French messages built from templates (compose) and how they leave (transport).

Kept apart from the rules so services can be tested with a fake transport, and so the CLI
loads neither smtplib nor Jinja2 until a message is actually sent.
"""
