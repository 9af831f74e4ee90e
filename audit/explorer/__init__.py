"""The web explorer: plain server-rendered pages over the audit index (no account, no JavaScript needed)."""
