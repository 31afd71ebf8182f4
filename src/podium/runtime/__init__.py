"""Run the Restate engine and service deployments locally, with no Docker.

- :class:`Engine` / :class:`EngineConfig`: a restate-server child process, tuned for a small machine.
- :func:`register_deployment`: tell the engine where a deployment lives (admin API).
- :class:`DeploymentProcess`: a deployment in a process of its own, served by granian (default, one or
  more workers) or hypercorn; :func:`serve_forever`, :class:`ThreadedServer`: serve an ASGI app with
  hypercorn in this process (the test harness does, for in-process deployments).
- :class:`Supervisor`: keeps :class:`Unit` s up (:class:`EngineUnit`, :class:`DeploymentUnit`,
  :class:`ProcessUnit`) with a :class:`RestartPolicy`, and writes the stack's state for
  :func:`read_stack` (``podium up``, ``podium status``).
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
from podium.runtime._process import ChildProcess, child_pids, wait_until
from podium.runtime._serve import (
    DeploymentProcess,
    ThreadedServer,
    free_port,
    hypercorn_config,
    load_app,
    serve,
    serve_forever,
)
from podium.runtime._supervisor import (
    DeploymentUnit,
    EngineUnit,
    ExitRecord,
    ProcessUnit,
    RestartPolicy,
    StackState,
    StartError,
    Supervisor,
    Unit,
    UnitState,
    UnitStatus,
    check_health,
    describe_exit,
    read_stack,
    stack_file,
)

__all__ = [
    "ENGINE_BINARY_ENV",
    "REQUEST_IDENTITY_FILE",
    "RETIRED_DIR",
    "TOKEN_ISSUER_FILE",
    "ChildProcess",
    "DeploymentProcess",
    "DeploymentUnit",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineUnit",
    "ExitRecord",
    "KeyFileError",
    "KeyPair",
    "ProcessUnit",
    "RestartPolicy",
    "StackState",
    "StartError",
    "Supervisor",
    "ThreadedServer",
    "Unit",
    "UnitState",
    "UnitStatus",
    "check_health",
    "child_pids",
    "describe_exit",
    "find_engine_binary",
    "free_port",
    "hypercorn_config",
    "key_id",
    "keys_dir",
    "load_app",
    "load_public_keys",
    "read_stack",
    "register_deployment",
    "restate_public_key",
    "serve",
    "serve_forever",
    "stack_file",
    "wait_until",
]
