"""What the bridge keeps about its own work: quarantine, collisions, rule hits, IMAP."""
