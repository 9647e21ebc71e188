"""The web server: health checks and metrics now, the viewer later."""
