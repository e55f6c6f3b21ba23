"""E-mail: French messages built from templates (`compose`), how they leave (`transport`),
and `mail send`, which delivers the campaign e-mails queued by `code campaign` (`queue`).

The CLI loads neither smtplib nor Jinja2 until a message is actually sent.
"""
