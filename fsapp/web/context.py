"""What a request of the console reaches: the store and the config the app was made with, its language."""

from __future__ import annotations

from flask import current_app, session

from fsapp.config import Config
from fsapp.store import Store


def current_store() -> Store:
    return current_app.config["FSAPP_STORE"]


def current_config() -> Config:
    return current_app.config["FSAPP_CONFIG"]


def language() -> str:
    """The page's language: the one switched to in this session, else ``[web] language``."""
    return session.get("lang") or current_config().web.language
