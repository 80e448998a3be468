"""Open Smart Charging Protocol transports. v1 is OSCP 1.0 (SOAP and a JSON variant)."""
