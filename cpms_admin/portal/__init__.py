"""The member portal's flows (login, request a code, set a PIN, accept the Terms), their
rate limits and the French text the member reads."""
