"""Periodic work (APScheduler): thin tasks that call use cases. Never started by create_app()."""
