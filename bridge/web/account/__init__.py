"""Sign-in and a person's own settings, digest links included."""
