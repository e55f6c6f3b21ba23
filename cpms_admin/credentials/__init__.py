"""Credentials: PINs, one-time codes, the lockout, and the flows that check, change and
deliver them (to the portal and to agents alike). The pepper that keys their hashes is the
kernel's (`cpms_admin.pepper`): it keys the audit chain too."""
