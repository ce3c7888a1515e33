"""Schemathesis hooks for the API fuzz run (Scripts/api-fuzz.sh)."""
import schemathesis


@schemathesis.check
def no_server_error_but_unsupported(ctx, response, case):
    """Any 5xx fails, except the deliberate 500 of an endpoint this VMM does not support yet
    (the server runs over a permissive fake control, so no state makes an action fail)."""
    if response.status_code >= 500 and "is not supported by this VMM yet" not in response.text:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
