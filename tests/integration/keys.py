"""The session's API key as request headers, for the tests' direct HTTP calls.

The `api_key` fixture (conftest) exports the key as EMBER_API_KEY before the
service is deployed; Ember's SDK and CLI read that variable themselves.
"""

import os


def AUTH() -> dict[str, str]:  # noqa: N802 - reads as the constant it stands for
    return {"Authorization": f"Bearer {os.environ['EMBER_API_KEY']}"}
