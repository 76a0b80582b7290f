"""What ``leanrank serve CONFIG.yaml`` does: validate the config and the HMAC secret up front (a
clear one-line error, exit 2), then run uvicorn; models load and warm in the background, so
``/healthz`` answers at once and ``/readyz`` turns 200 when they are ready.

>>> serve_command("recipes/serve-demo.yaml", port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path


def serve_command(config_path: str | Path, host: str | None = None, port: int | None = None,
                  log: Callable[[str], None] = print) -> None:
    """Load the config, check the secret, then serve until interrupted."""
    from leanrank.serve.config import load_config
    from leanrank.serve.privacy import hasher_from_env

    config = load_config(config_path)
    if host is not None or port is not None:
        server = replace(config.server, host=host or config.server.host,
                         port=config.server.port if port is None else port)
        config = replace(config, server=server)
    hasher = hasher_from_env(config.privacy)   # fails here, before anything starts, without a secret
    config.bandit_config()                     # bandit options checked before anything starts
    if config.server.torch_threads:
        import torch

        torch.set_num_threads(config.server.torch_threads)
    import uvicorn

    from leanrank.serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config, hasher=hasher)
    log(f"leanrank serve on http://{config.server.host}:{config.server.port} "
        f"(variants: {', '.join(config.variants)}; /readyz turns 200 once models are warm)")
    uvicorn.run(app, host=config.server.host, port=config.server.port, log_level="info", access_log=False)
