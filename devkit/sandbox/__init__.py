"""The platform sandbox: every platform's verify, refresh and revoke endpoints, with token
states that tests and ops set over HTTP (``devkit.sandbox.app``)."""
