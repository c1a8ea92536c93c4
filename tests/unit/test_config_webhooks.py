"""config.py's webhook settings: a delivery's timeout may take at most half the lease it
is sent under, so a slow renew on a loaded machine still leaves it inside the lease."""

from __future__ import annotations

import pytest

from modelreg.config import ConfigError, Settings


@pytest.mark.parametrize(
    ("timeout", "lease", "accepted"),
    [
        ("10", "30", True),
        ("15", "30", True),  # exactly half
        ("15.5", "30", False),
        ("29", "30", False),  # below the lease, but no margin
        ("30", "30", False),
        ("1", "4", True),
    ],
)
def test_the_webhook_timeout_is_at_most_half_the_lease(
    timeout: str, lease: str, accepted: bool
) -> None:
    environ = {
        "MODELREG_WEBHOOKS_TIMEOUT_SECONDS": timeout,
        "MODELREG_WEBHOOKS_LEASE_SECONDS": lease,
    }
    if accepted:
        settings = Settings.from_env(environ)
        assert settings.webhooks_timeout_seconds == float(timeout)
    else:
        with pytest.raises(ConfigError, match="MODELREG_WEBHOOKS_TIMEOUT_SECONDS"):
            Settings.from_env(environ)
