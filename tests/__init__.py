"""fsapp's test suite; what several test files share is in ``tests.helpers``."""
