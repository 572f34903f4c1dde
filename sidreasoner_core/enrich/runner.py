"""Drive jobs to completion: offline (in-process rules) or through the async teacher client."""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from tqdm.auto import tqdm

from .cache import ResponseCache
from .client import TeacherClient, Usage
from .config import EnrichConfig
from .jobs import Job, offline_answer

log = logging.getLogger(__name__)


def run_offline(jobs: Sequence[Job], config: EnrichConfig) -> None:
    for job in tqdm(jobs, desc="enrich (offline)", unit="rec", mininterval=2, disable=None):
        while job.next_call() is not None:
            job.accept(offline_answer(job, config))


async def _run_async(jobs: Sequence[Job], client: TeacherClient, concurrency: int) -> None:
    todo = iter(jobs)  # shared by the workers; safe: one event loop thread
    bar = tqdm(total=len(jobs), desc="enrich (teacher)", unit="rec", mininterval=2, disable=None)

    async def worker() -> None:
        for job in todo:
            while (messages := job.next_call()) is not None:
                answer = await client.complete(messages)
                job.accept(answer.content, answer.error)
            bar.update()

    try:
        # Workers (not one task per record) keep memory flat for large catalogues; each worker
        # carries one record through its calls, so at most `concurrency` requests are in flight.
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        bar.close()
        await client.close()


def run_teacher(jobs: Sequence[Job], config: EnrichConfig, cache: ResponseCache, usage: Usage) -> None:
    async def main() -> None:
        client = TeacherClient(config, cache, usage)
        await _run_async(jobs, client, config.concurrency)

    asyncio.run(main())
