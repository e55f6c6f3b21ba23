"""Credentials: PINs, one-time codes, the pepper that keys them, the lockout, and the flows
that check, change and deliver them (to the portal and to agents alike)."""
