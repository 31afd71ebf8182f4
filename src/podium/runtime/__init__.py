"""Run the Restate engine and service deployments locally, with no Docker.

- :class:`Engine` / :class:`EngineConfig`: a restate-server child process, tuned for a small machine.
- :func:`register_deployment`: tell the engine where a deployment lives (admin API).
- :class:`DeploymentProcess`: a deployment in a process of its own, served by granian (default, one or
  more workers) or hypercorn; :func:`serve_forever`, :class:`ThreadedServer`: serve an ASGI app with
  hypercorn in this process (the test harness does, for in-process deployments).
"""

from podium.runtime._engine import (
    ENGINE_BINARY_ENV,
    Engine,
    EngineConfig,
    EngineError,
    find_engine_binary,
    register_deployment,
)
from podium.runtime._keys import (
    REQUEST_IDENTITY_FILE,
    RETIRED_DIR,
    TOKEN_ISSUER_FILE,
    KeyFileError,
    KeyPair,
    key_id,
    keys_dir,
    load_public_keys,
    restate_public_key,
)
from podium.runtime._process import ChildProcess, wait_until
from podium.runtime._serve import (
    DeploymentProcess,
    ThreadedServer,
    free_port,
    hypercorn_config,
    load_app,
    serve,
    serve_forever,
)

__all__ = [
    "ENGINE_BINARY_ENV",
    "REQUEST_IDENTITY_FILE",
    "RETIRED_DIR",
    "TOKEN_ISSUER_FILE",
    "ChildProcess",
    "DeploymentProcess",
    "Engine",
    "EngineConfig",
    "EngineError",
    "KeyFileError",
    "KeyPair",
    "ThreadedServer",
    "find_engine_binary",
    "free_port",
    "hypercorn_config",
    "key_id",
    "keys_dir",
    "load_app",
    "load_public_keys",
    "register_deployment",
    "restate_public_key",
    "serve",
    "serve_forever",
    "wait_until",
]
