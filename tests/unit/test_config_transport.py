"""config.py's TLS and OIDC settings: each mistake is refused at start-up with the name
of the variable to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelreg.config import ConfigError, Settings
from tests.pki import Authority


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "registry")
    server = ca.server("server", "localhost")
    other = ca.server("other", "localhost")
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": []}))
    not_pem = directory / "not.pem"
    not_pem.write_text("hello")
    return {
        "ca": str(ca.cert_file),
        "cert": str(server.cert_file),
        "key": str(server.key_file),
        "other_key": str(other.key_file),
        "missing": str(directory / "missing.pem"),
        "not_pem": str(not_pem),
        "jwks": str(jwks),
    }


def _env(files: dict[str, str], **values: str) -> dict[str, str]:
    return {f"MODELREG_{k.upper()}": files.get(v, v) for k, v in values.items()}


TLS_MISTAKES = [
    ({"tls_cert_file": "cert"}, "MODELREG_TLS_CERT_FILE and MODELREG_TLS_KEY_FILE"),
    ({"tls_key_file": "key"}, "MODELREG_TLS_CERT_FILE and MODELREG_TLS_KEY_FILE"),
    ({"tls_client_ca_file": "ca"}, "MODELREG_TLS_CLIENT_CA_FILE needs"),
    ({"tls_cert_file": "missing", "tls_key_file": "key"}, "MODELREG_TLS_CERT_FILE: cannot read"),
    ({"tls_cert_file": "cert", "tls_key_file": "not_pem"}, "MODELREG_TLS_KEY_FILE: .* no PEM"),
    ({"tls_cert_file": "cert", "tls_key_file": "other_key"}, "MODELREG_TLS_KEY_FILE is not"),
    (
        {"tls_cert_file": "cert", "tls_key_file": "key", "tls_client_ca_file": "missing"},
        "MODELREG_TLS_CLIENT_CA_FILE: cannot read",
    ),
    ({"tls_cert_file": "key", "tls_key_file": "key"}, "MODELREG_TLS_CERT_FILE holds no"),
]


@pytest.mark.parametrize(("given", "named"), TLS_MISTAKES)
def test_a_tls_mistake_names_its_variable(
    files: dict[str, str], given: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(_env(files, **given))


def test_a_good_tls_setting_is_accepted(files: dict[str, str]) -> None:
    env = _env(files, tls_cert_file="cert", tls_key_file="key", tls_client_ca_file="ca")
    settings = Settings.from_env(env)
    assert settings.tls_client_ca_file == files["ca"]


GOOD_OIDC = {
    "oidc_issuer": "https://idp.example.test",
    "oidc_audience": "modelreg",
    "oidc_jwks_url": "https://idp.example.test/keys",
}

OIDC_MISTAKES = [
    ({"oidc_audience": "modelreg"}, "MODELREG_OIDC_AUDIENCE is set but MODELREG_OIDC_ISSUER"),
    ({"oidc_jwks_file": "jwks"}, "MODELREG_OIDC_JWKS_FILE is set but MODELREG_OIDC_ISSUER"),
    ({**GOOD_OIDC, "oidc_audience": ""}, "MODELREG_OIDC_AUDIENCE must be set"),
    ({**GOOD_OIDC, "oidc_jwks_url": ""}, "exactly one of MODELREG_OIDC_JWKS_URL"),
    ({**GOOD_OIDC, "oidc_jwks_file": "jwks"}, "exactly one of MODELREG_OIDC_JWKS_URL"),
    ({**GOOD_OIDC, "oidc_jwks_url": "http://idp.example.test/k"}, "MODELREG_OIDC_JWKS_URL must"),
    ({**GOOD_OIDC, "oidc_jwks_url": "ftp://idp/keys"}, "MODELREG_OIDC_JWKS_URL must"),
    (
        {**GOOD_OIDC, "oidc_jwks_url": "", "oidc_jwks_file": "missing"},
        "MODELREG_OIDC_JWKS_FILE: cannot read",
    ),
    ({**GOOD_OIDC, "oidc_leeway_seconds": "600"}, "MODELREG_OIDC_LEEWAY_SECONDS"),
    ({**GOOD_OIDC, "oidc_principal_prefix": "my idp:"}, "MODELREG_OIDC_PRINCIPAL_PREFIX"),
    ({**GOOD_OIDC, "oidc_jwks_min_refresh_seconds": "-1"}, "MIN_REFRESH_SECONDS must be"),
    (
        {**GOOD_OIDC, "oidc_jwks_refresh_seconds": "5"},
        "MODELREG_OIDC_JWKS_REFRESH_SECONDS must be at least",
    ),
    ({**GOOD_OIDC, "oidc_jwks_ca_file": "not_pem"}, "MODELREG_OIDC_JWKS_CA_FILE: .* no PEM"),
]


@pytest.mark.parametrize(("given", "named"), OIDC_MISTAKES)
def test_an_oidc_mistake_names_its_variable(
    files: dict[str, str], given: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(_env(files, **given))


@pytest.mark.parametrize(
    "jwks",
    [
        {"oidc_jwks_url": "https://idp.example.test/keys"},
        {"oidc_jwks_url": "http://127.0.0.1:8080/jwks"},  # plain HTTP on loopback only
        {"oidc_jwks_url": "", "oidc_jwks_file": "jwks"},
    ],
)
def test_a_good_oidc_setting_is_accepted(files: dict[str, str], jwks: dict[str, str]) -> None:
    settings = Settings.from_env(_env(files, **(GOOD_OIDC | jwks)))
    assert settings.oidc_issuer == "https://idp.example.test"
    assert settings.oidc_principal_prefix == "oidc:"


def test_the_key_file_must_be_a_file_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODELREG_TLS_CERT_FILE: cannot read"):
        Settings.from_env(
            {"MODELREG_TLS_CERT_FILE": str(tmp_path), "MODELREG_TLS_KEY_FILE": str(tmp_path)}
        )
