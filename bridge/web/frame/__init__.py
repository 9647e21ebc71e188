"""The request frame: what every request passes through and every handler reaches."""
