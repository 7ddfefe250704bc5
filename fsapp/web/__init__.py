"""The managers' web console (seed 004): journal, call pages and recordings in a browser.

``fsapp.web.app.create_app(cfg)`` builds the Flask app over the same config and database as the daemon;
``fsapp web`` serves it with gevent's WSGI server.
This package file stays free of Flask, so the command line loads it only to serve.
"""
