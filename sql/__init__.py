"""The migrations, installed as the package ``service.migrations`` (see setup.py)."""
