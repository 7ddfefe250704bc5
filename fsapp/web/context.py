"""What a request of the console reaches: the store and the config the app was made with."""

from __future__ import annotations

from flask import current_app

from fsapp.config import Config
from fsapp.store import Store


def current_store() -> Store:
    return current_app.config["FSAPP_STORE"]


def current_config() -> Config:
    return current_app.config["FSAPP_CONFIG"]
