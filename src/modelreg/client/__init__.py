"""Python SDK for the registry: `Client` (blocking) and `AsyncClient` (asyncio).

    with Client("127.0.0.1:50051") as registry:
        version = registry.create_version("search/ranker", ready=True, metrics={"auc": 0.91})
        registry.set_alias("search/ranker", "production", version.number)
        registry.resolve("search/ranker@production")
        pushed = registry.push("search/ranker", "out/model/")   # upload, finalize
        registry.push("search/ranker", "out/model/", if_changed=True)  # no new version
        registry.pull("search/ranker@production", "/srv/models/ranker")
        with registry.live(references=["search/ranker@production"]) as live:
            live.resolve("search/ranker@production")          # from memory, kept current

Models and versions may be named short (`ns/model`, `model` in namespace
`default`, `ns/model:7`) or by resource name. Every unary method is defined once,
as a pure function that builds a `Call` (calls.py, versions.py, artifacts.py);
each client turns those into its methods, so the two cannot drift. `push` and
`pull` are written once, on asyncio (push.py, pull.py); `Client` runs them in a
private event loop.

Read-your-writes: each client remembers the highest revision a reply carried
(`client.revision`) and sends it as `min_revision` on every lookup, so it reads its
own writes on any server process or replica; `read_your_writes=False` turns that off.

Failures raise one error tree, with the status details the server attached (see
errors.py for the tree); local problems with files raise OSError.
"""

from modelreg.client.aio import AsyncClient
from modelreg.client.artifacts import Progress
from modelreg.client.blocking import Client
from modelreg.client.errors import (
    DETAILS_HEADER,
    AbortedError,
    AlreadyExistsError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    RegistryError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
    error_from_status,
    make_error,
)
from modelreg.client.live import BlockingLiveCache, LiveCache, NotFollowedError
from modelreg.client.names import alias_name, model_key, model_name, namespace_name, version_name
from modelreg.client.push import Pushed
from modelreg.client.settings import ACTOR_HEADER
from modelreg.client.tls import Tls, TlsSettingError

__all__ = [
    "ACTOR_HEADER",
    "DETAILS_HEADER",
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "BlockingLiveCache",
    "Client",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "LiveCache",
    "NotFollowedError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Progress",
    "Pushed",
    "RegistryError",
    "ResourceExhaustedError",
    "Tls",
    "TlsSettingError",
    "UnauthenticatedError",
    "UnavailableError",
    "alias_name",
    "error_from_rpc",
    "error_from_status",
    "make_error",
    "model_key",
    "model_name",
    "namespace_name",
    "version_name",
]
