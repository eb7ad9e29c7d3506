"""A check the publisher asked for: it saw the platform refuse the account's token.

The report alone proves little (a platform's 401 may be about one post, or a bug of the
publisher's), so it never flips `is_active`: it queues this job, which runs a one-account
sweep (trigger `report`), and the check decides by the same rules as every sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from service.core.repository import sweeps
from worker.runtime import runtime
from worker.sweep import run_sweep

log = logging.getLogger("octopost.reported")


async def check_reported_account(ctx: dict[str, Any], account_id: str) -> dict[str, int]:
    """arq job: sweep the one account now (it is claimed even if not due)."""
    rt = runtime(ctx)
    sweep_id = await sweeps.create_sweep(rt.pool, "report", None, account_id)
    log.info("reported account check account_id=%s sweep_id=%s", account_id, sweep_id)
    return await run_sweep(ctx, sweep_id)
