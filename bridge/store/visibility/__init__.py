"""Who may see what, asked of the store: the access rule, owners and the audit log."""
