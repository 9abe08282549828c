"""``run_offline``: a script's ``DASHSCOPE_*`` environment pointed at a simulator."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._config import BASE_URL_ENVS, ENV_NAMES, simulator_environment
from .server import BailianSimulator

_T = TypeVar("_T")


async def run_offline(main: Callable[[], Awaitable[_T]], **simulator_options: Any) -> _T:
    """Await ``main()`` with the ``DASHSCOPE_*`` environment pointing at a simulator.

    For scripts and examples that read their configuration from the environment: while
    ``main()`` runs, ``DASHSCOPE_API_KEY``, ``DASHSCOPE_BASE_URL`` and
    ``DASHSCOPE_APP_ID`` name a fresh :class:`BailianSimulator` (started with
    ``simulator_options``) and ``DASHSCOPE_HTTP_BASE_URL`` / ``DASHSCOPE_WORKSPACE`` are
    unset; afterwards the environment is restored and the simulator stopped. The
    environment is process-wide, so in tests prefer passing ``sim.api_key`` and
    ``sim.base_url`` to ``Session`` explicitly::

        if os.environ.get("DASHSCOPE_API_KEY"):
            asyncio.run(main())               # your Bailian app
        else:
            asyncio.run(run_offline(main))    # no key: the simulator
    """
    async with BailianSimulator(**simulator_options) as sim:
        saved = {name: os.environ.pop(name, None) for name in ENV_NAMES}
        # Only the first base URL name: the docstring promises the second unset.
        pointed = simulator_environment(sim.base_url, sim.api_key, sim.app_id)
        os.environ.update({n: v for n, v in pointed.items() if n != BASE_URL_ENVS[1]})
        try:
            return await main()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
