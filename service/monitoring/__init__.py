"""What the service writes to InfluxDB for monitoring, and the Grafana dashboards that read it.

`names` holds every measurement, tag and field name; the writers and `dashboards` both use it, so a
renamed field cannot leave a dashboard querying a name nobody writes.
"""
