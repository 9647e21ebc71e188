"""Work the daemon does on a schedule, and (later) the mail it sends."""
