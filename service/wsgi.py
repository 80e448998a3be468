"""The WSGI entry point for gunicorn: `gunicorn -c python:service.gunicorn_conf service.wsgi:app`.

Each worker imports this after the fork (the config does not preload), so each builds its own
database engine and OSCP gateway. Settings come from GRIDCAP_* and GRIDCAP_CONFIG as for `gridcap serve`.
"""

from service.app import create_app
from service.settings import load_settings

app = create_app(load_settings())
